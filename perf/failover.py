#!/usr/bin/env python3
"""How long an MQTT client waits to resume its persistent session on another
node after its node is killed (kill -9): the time from the kill to the
CONNACK (session present) on the survivor, when the client reconnects at
once. Two Fennec nodes on one nats-server -js, all on loopback; Python's
standard library only (raw MQTT 3.1.1 packets).

    python3 perf/failover.py --fennec target/release/fennec [--rounds 5]
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=20.0):
    until = time.monotonic() + limit
    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def mqtt_str(b):
    return len(b).to_bytes(2, "big") + b


def packet(first, body):
    n, length = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([first]) + length + body


def read_packet(s):
    head = s.recv(1)
    if not head:
        raise EOFError
    mult, n = 1, 0
    while True:
        b = s.recv(1)[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return head[0], body


def connect(port, client, timeout):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    # MQTT 3.1.1, persistent session (clean session 0), keep-alive 0.
    s.sendall(packet(0x10, mqtt_str(b"MQTT") + bytes([4, 0, 0, 0]) + mqtt_str(client.encode())))
    first, body = read_packet(s)
    assert first == 0x20, f"CONNACK expected, got {first:#x}"
    return s, body[0] & 1 == 1, body[1]


def start_node(fennec, name, nats_url, mqtt, data):
    args = [fennec, "--cores", "1", "--no-pin", "--listen", "127.0.0.1:0", "--mqtt", f"127.0.0.1:{mqtt}",
            "--data", data, "--durability", "none", "--cluster", nats_url, "--node-name", name]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(mqtt)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fennec", default="target/release/fennec")
    ap.add_argument("--nats", default=shutil.which("nats-server") or "/usr/sbin/nats-server")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fennec-failover-")
    nats_port = free_port()
    nats = subprocess.Popen([a.nats, "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", f"{work}/nats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(nats_port)
    url = f"nats://127.0.0.1:{nats_port}"
    a_port, c_port = free_port(), free_port()
    node_a = start_node(a.fennec, "a", url, a_port, f"{work}/a")
    waits = []
    try:
        for r in range(a.rounds):
            node_c = start_node(a.fennec, "c", url, c_port, f"{work}/c{r}")
            # Past the start (heartbeats heard both ways, probes allowed).
            time.sleep(7)
            client = f"failover-{r}"
            s, _, code = connect(c_port, client, 5)
            assert code == 0
            s.sendall(packet(0x82, b"\x00\x01" + mqtt_str(b"fo/t") + b"\x01"))
            assert read_packet(s)[0] == 0x90
            time.sleep(0.5)
            node_c.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            node_c.wait()
            s.close()
            back, present, code = connect(a_port, client, 30)
            waited = time.monotonic() - killed
            back.close()
            assert code == 0 and present, f"round {r}: code {code}, session present {present}"
            waits.append(waited)
            print(f"round {r + 1}: CONNACK (session present) {waited:.2f} s after the kill", flush=True)
    finally:
        node_a.send_signal(signal.SIGKILL)
        nats.terminate()
        nats.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"median {statistics.median(waits):.2f} s, min {min(waits):.2f} s, max {max(waits):.2f} s")


if __name__ == "__main__":
    os.environ.setdefault("RUST_LOG", "warn")
    main()
