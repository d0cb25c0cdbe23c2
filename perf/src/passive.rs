//! Passive sessions, driven with blocking sockets outside the event loops:
//!
//! * stalled subscribers (`--stalled N`): subscribe to every benchmark topic,
//!   then never read their socket again (a slow consumer);
//! * idle sessions (`--idle N --hold S`): HELLO -> WELCOME (MQTT: CONNECT
//!   -> CONNACK), then silence.
//!
//! Also reads a router's memory from `/proc/PID/status` (`--router-pid`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::codec::{Ser, V};
use crate::mqtt::{self, MqttUrl};
use crate::ws::{self, WsUrl};

/// Receive buffer requested for a stalled subscriber's socket, so that the
/// kernel absorbs little and the router's own outbound queue fills up.
const STALLED_RCVBUF: libc::c_int = 4096;
/// Bound on the bytes a stalled subscriber drains at the end of the run.
const DRAIN_LIMIT: usize = 256 * 1024 * 1024;

/// A blocking WAMP session that keeps its socket and any unread bytes.
pub struct Session {
    stream: TcpStream,
    buf: Vec<u8>,
    next_req: u64,
}

fn hello(realm: &str) -> V<'_> {
    V::Arr(vec![
        V::U(1),
        V::s(realm),
        V::Map(vec![
            (V::s("roles"), V::Map(vec![(V::s("subscriber"), V::Map(vec![])), (V::s("publisher"), V::Map(vec![]))])),
            (V::s("agent"), V::s("fennec-load")),
        ]),
    ])
}

impl Session {
    /// WebSocket upgrade, HELLO, wait for WELCOME.
    pub fn open(url: &WsUrl, ser: Ser, realm: &str) -> Result<Session, String> {
        let (stream, rest) = ws::connect(url, ser.subprotocol())?;
        let mut s = Session { stream, buf: rest, next_req: 0 };
        s.send(ser, &hello(realm))?;
        let code = s.recv_code(ser)?;
        match code {
            2 => Ok(s),
            3 => Err("router ABORTed the session".into()),
            c => Err(format!("expected WELCOME, got message type {c}")),
        }
    }

    fn send(&mut self, ser: Ser, v: &V<'_>) -> Result<(), String> {
        let mut payload = Vec::with_capacity(256);
        ser.encode(v, &mut payload);
        let op = if ser == Ser::Json { ws::OP_TEXT } else { ws::OP_BIN };
        let mut frame = Vec::with_capacity(payload.len() + 14);
        ws::write_frame(&mut frame, op, &payload, [0x5a, 0x17, 0xc3, 0x08]);
        self.stream.write_all(&frame).map_err(|e| format!("write: {e}"))
    }

    /// Reads until one complete WAMP message has arrived and returns its
    /// message type. Control frames are skipped (pings are not answered:
    /// these sessions only live for a bounded time).
    fn recv_code(&mut self, ser: Ser) -> Result<u64, String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(f) = ws::parse_frame(&mut self.buf)? {
                let end = f.end;
                let r = if f.opcode == ws::OP_TEXT || f.opcode == ws::OP_BIN {
                    if !f.fin {
                        return Err("fragmented message during setup".into());
                    }
                    let v = ser.decode(&self.buf[f.start..f.end])?;
                    let code = v.as_arr().and_then(|a| a.first()).and_then(|c| c.as_u64());
                    Some(code.ok_or("message is not a WAMP array")?)
                } else if f.opcode == ws::OP_CLOSE {
                    return Err("router closed the WebSocket during setup".into());
                } else {
                    None
                };
                self.buf.drain(..end);
                if let Some(c) = r {
                    return Ok(c);
                }
                continue;
            }
            let n = self.stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("router closed the connection during setup".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Subscribes to `topics` and waits for every SUBSCRIBED.
    pub fn subscribe(&mut self, ser: Ser, topics: &[String]) -> Result<(), String> {
        for t in topics {
            self.next_req += 1;
            let m = V::Arr(vec![V::U(32), V::U(self.next_req), V::Map(vec![]), V::s(t)]);
            self.send(ser, &m)?;
        }
        for _ in topics {
            match self.recv_code(ser)? {
                33 => {}
                8 => return Err("SUBSCRIBE refused (ERROR)".into()),
                c => return Err(format!("expected SUBSCRIBED, got message type {c}")),
            }
        }
        Ok(())
    }

    /// Shrinks the socket's receive buffer (best effort).
    pub fn shrink_rcvbuf(&self) {
        use std::os::fd::AsRawFd;
        let v: libc::c_int = STALLED_RCVBUF;
        // SAFETY: setsockopt reads sizeof(c_int) bytes from &v, a valid c_int.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// At the end of a run: reads what the router left in the socket
    /// (bounded: until EOF, `quiet` without data, 3 s or 256 MiB) and tells
    /// whether the router had ended the session: a WebSocket Close frame
    /// among the unread frames, or the connection closed/reset. A stalled
    /// subscriber's socket may still be filling (`quiet` 300 ms); an idle
    /// session's has all it will get (`Duration::ZERO`: up to the first
    /// empty read, so ten thousand of them are checked in moments, not
    /// in 300 ms each).
    pub fn drain_and_check_closed(&mut self, quiet: Duration) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let mut closed = false;
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last_data = Instant::now();
        while total < DRAIN_LIMIT && Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    total += n;
                    last_data = Instant::now();
                    self.buf.extend_from_slice(&chunk[..n]);
                    // Parse complete frames, look for a Close frame.
                    let mut pos = 0;
                    while let Ok(Some(f)) = ws::parse_frame(&mut self.buf[pos..]) {
                        if f.opcode == ws::OP_CLOSE {
                            return true;
                        }
                        pos += f.end;
                    }
                    self.buf.drain(..pos);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if last_data.elapsed() >= quiet {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        closed
    }
}

/// A blocking MQTT connection: CONNECT -> CONNACK, then silence (no
/// PINGREQ: the keep-alive given to `open` must outlast the hold).
pub struct MqttSession {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl MqttSession {
    pub fn open(url: &MqttUrl, v: mqtt::Version, client_id: &str, keepalive: u16) -> Result<MqttSession, String> {
        let mut stream = TcpStream::connect_timeout(&url.addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to {}: {e}", url.addr))?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        stream.set_write_timeout(Some(Duration::from_secs(10))).ok();
        let mut out = Vec::with_capacity(64);
        mqtt::connect(&mut out, v, client_id, keepalive);
        stream.write_all(&out).map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 512];
        loop {
            if let Some(p) = mqtt::parse_packet(&buf)? {
                if p.kind != mqtt::CONNACK {
                    return Err(format!("expected CONNACK, got packet type {}", p.kind));
                }
                let ca = mqtt::connack(v, &buf[p.start..p.end])?;
                if ca.code != 0 {
                    return Err(format!("broker refused CONNECT: code 0x{:02x}", ca.code));
                }
                buf.drain(..p.end);
                return Ok(MqttSession { stream, buf });
            }
            let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("broker closed the connection before CONNACK".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the broker closed the connection (EOF, reset, or a
    /// DISCONNECT packet among the unread bytes), bounded like
    /// `Session::drain_and_check_closed`.
    pub fn drain_and_check_closed(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut chunk = vec![0u8; 16 * 1024];
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut pos = 0;
            while let Ok(Some(p)) = mqtt::parse_packet(&self.buf[pos..]) {
                if p.kind == mqtt::DISCONNECT {
                    return true;
                }
                pos += p.end;
            }
            self.buf.drain(..pos);
            if Instant::now() > deadline || self.buf.len() > DRAIN_LIMIT {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Sends DISCONNECT (best effort).
    pub fn close(&mut self) {
        let mut out = Vec::with_capacity(2);
        mqtt::disconnect(&mut out);
        let _ = self.stream.write(&out);
    }
}

/// VmRSS and VmHWM of a process in KiB, from /proc/PID/status.
pub fn proc_mem_kb(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_is_readable() {
        let (rss, hwm) = proc_mem_kb(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }
}
