//! End-to-end runs of the fennec-load binary against a tiny in-process MQTT
//! broker (thread per connection, exact-match topics, QoS 0/1, v3.1.1 and
//! v5), so the MQTT client paths are exercised without a real broker.

#[path = "../src/mqtt.rs"]
#[allow(dead_code)]
mod mqtt;
#[path = "../src/ws.rs"]
#[allow(dead_code)]
mod ws;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

struct Sub {
    out: Arc<Mutex<TcpStream>>,
    filter: String,
    qos: u8,
    v: mqtt::Version,
    pkid: Arc<AtomicU16>,
}

#[derive(Default)]
struct Broker {
    subs: Mutex<Vec<Sub>>,
    /// MQTT 5 Receive Maximum to announce in CONNACK (0: none).
    receive_max: u16,
    connections: AtomicUsize,
    pings: AtomicUsize,
}

fn start(receive_max: u16) -> (u16, Arc<Broker>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let b = Arc::new(Broker { receive_max, ..Broker::default() });
    let b2 = b.clone();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let b = b2.clone();
            b.connections.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve(s, &b));
        }
    });
    (port, b)
}

fn serve(mut s: TcpStream, b: &Broker) {
    s.set_nodelay(true).ok();
    let out = Arc::new(Mutex::new(s.try_clone().unwrap()));
    let pkid = Arc::new(AtomicU16::new(0));
    let mut v = mqtt::Version::V311;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        let mut reply = Vec::new();
        while let Some(p) = mqtt::parse_packet(&buf[pos..]).unwrap() {
            let body = &buf[pos + p.start..pos + p.end];
            match p.kind {
                mqtt::CONNECT => {
                    v = if body[6] == 5 { mqtt::Version::V5 } else { mqtt::Version::V311 };
                    match (v, b.receive_max) {
                        (mqtt::Version::V5, 0) => reply.extend_from_slice(&[0x20, 3, 0, 0, 0]),
                        (mqtt::Version::V5, rm) => {
                            reply.extend_from_slice(&[0x20, 6, 0, 0, 3, 0x21]);
                            reply.extend_from_slice(&rm.to_be_bytes());
                        }
                        _ => reply.extend_from_slice(&[0x20, 2, 0, 0]),
                    }
                }
                mqtt::SUBSCRIBE => {
                    let mut i = 2;
                    if v == mqtt::Version::V5 {
                        i += 1 + body[2] as usize;
                    }
                    let tl = u16::from_be_bytes([body[i], body[i + 1]]) as usize;
                    let filter = String::from_utf8(body[i + 2..i + 2 + tl].to_vec()).unwrap();
                    let qos = body[i + 2 + tl] & 3;
                    b.subs.lock().unwrap().push(Sub { out: out.clone(), filter, qos, v, pkid: pkid.clone() });
                    reply.extend_from_slice(&[0x90, if v == mqtt::Version::V5 { 4 } else { 3 }, body[0], body[1]]);
                    if v == mqtt::Version::V5 {
                        reply.push(0);
                    }
                    reply.push(qos);
                }
                mqtt::PUBLISH => {
                    let m = mqtt::publish_parse(v, p.flags, body).unwrap();
                    let topic = &body[m.topic.0..m.topic.1];
                    let payload = &body[m.payload.0..m.payload.1];
                    for sub in b.subs.lock().unwrap().iter().filter(|x| x.filter.as_bytes() == topic) {
                        let q = sub.qos.min(m.qos);
                        let id = if q > 0 { sub.pkid.fetch_add(1, Ordering::SeqCst).wrapping_add(1).max(1) } else { 0 };
                        let mut pkt = Vec::new();
                        mqtt::publish(&mut pkt, sub.v, topic, q, id, payload);
                        let _ = sub.out.lock().unwrap().write_all(&pkt);
                    }
                    if m.qos == 1 {
                        mqtt::puback(&mut reply, m.pkid);
                    }
                }
                mqtt::PUBACK => {}
                mqtt::PINGREQ => {
                    b.pings.fetch_add(1, Ordering::SeqCst);
                    reply.extend_from_slice(&[mqtt::PINGRESP << 4, 0]);
                }
                mqtt::DISCONNECT => return,
                k => panic!("fake broker: unexpected packet type {k}"),
            }
            pos += p.end;
        }
        buf.drain(..pos);
        if !reply.is_empty() && out.lock().unwrap().write_all(&reply).is_err() {
            break;
        }
    }
}

/// Runs fennec-load with `args`, returns the JSON result line.
fn load(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fennec-load"))
        .args(["--duration", "1", "--warmup", "0.2", "--drain", "2"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fennec-load {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().last().unwrap();
    serde_json::from_str(line).unwrap()
}

fn check_no_loss(r: &serde_json::Value) {
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["lost"].as_i64(), Some(0), "{r}");
    assert_eq!(r["delivered"], r["expected"], "{r}");
    assert_eq!(r["bad_payload"].as_u64(), Some(0), "{r}");
    assert_eq!(r["problems"].as_u64(), Some(0), "{r}");
}

#[test]
fn qos0_and_qos1_both_versions() {
    let (port, _b) = start(0);
    let url = format!("mqtt://127.0.0.1:{port}");
    for v in ["4", "5"] {
        for q in ["0", "1"] {
            let r = load(&[
                "--protocol",
                "mqtt",
                "--url",
                &url,
                "--qos",
                q,
                "--mqtt-version",
                v,
                "--publishers",
                "2",
                "--subscribers",
                "3",
                "--topics",
                "2",
                "--window",
                "50",
            ]);
            check_no_loss(&r);
            assert_eq!(r["protocol"], "mqtt");
            assert_eq!(r["window_mode"], if q == "0" { "seq" } else { "puback" });
            assert_eq!(r["expected"].as_u64().unwrap(), r["sent"].as_u64().unwrap() * 3);
        }
    }
}

#[test]
fn fixed_rate_and_json_array_payload() {
    let (port, _b) = start(0);
    let url = format!("mqtt://127.0.0.1:{port}");
    let r = load(&["--protocol", "mqtt", "--url", &url, "--rate", "2000", "--payload", "json-array", "--size", "40"]);
    check_no_loss(&r);
    assert_eq!(r["window_mode"], "rate");
    assert_eq!(r["payload"], "json-array");
    let sent = r["sent"].as_u64().unwrap();
    assert!((2000..=2800).contains(&sent), "{r}");
}

#[test]
fn receive_maximum_caps_the_qos1_window_and_keepalive_pings() {
    let (port, b) = start(10);
    let url = format!("mqtt://127.0.0.1:{port}");
    let r = load(&[
        "--protocol",
        "mqtt",
        "--url",
        &url,
        "--qos",
        "1",
        "--mqtt-version",
        "5",
        "--window",
        "64",
        "--keepalive",
        "1",
    ]);
    check_no_loss(&r);
    assert_eq!(r["mqtt_receive_max"].as_u64(), Some(10));
    assert!(r["pings"].as_u64().unwrap() >= 2, "{r}");
    assert!(b.pings.load(Ordering::SeqCst) >= 2);
}

#[test]
fn idle_connections() {
    let (port, b) = start(0);
    let url = format!("mqtt://127.0.0.1:{port}");
    let pid = std::process::id().to_string();
    let r = load(&["--protocol", "mqtt", "--url", &url, "--idle", "20", "--hold", "1", "--router-pid", &pid]);
    assert_eq!(r["mode"], "idle");
    assert_eq!(r["opened"].as_u64(), Some(20));
    assert_eq!(r["closed_by_router"].as_u64(), Some(0));
    assert!(r["bytes_per_session"].is_number());
    assert_eq!(b.connections.load(Ordering::SeqCst), 20);
}

#[test]
fn refused_connection_exit_code() {
    // Nothing listens there: exit code 2.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let out = Command::new(env!("CARGO_BIN_EXE_fennec-load"))
        .args(["--protocol", "mqtt", "--url", &format!("mqtt://127.0.0.1:{port}"), "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
