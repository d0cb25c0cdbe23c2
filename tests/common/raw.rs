//! Raw MQTT over TCP for the integration tests: exact bytes out, packets
//! in, every read with a deadline. For what no client library will send
//! (malformed packets, MQTT 3.1, a flow cut in the middle).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest wait for anything that should happen.
pub const STEP: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched.
pub const QUIET: Duration = Duration::from_millis(300);

/// One packet: fixed header byte and remaining-length field.
pub fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub fn mqtt_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT at protocol level 4 (3.1.1) or 5, no will, no credentials.
pub fn connect_packet(level: u8, id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(&mut b, b"MQTT");
    b.push(level);
    b.push(if clean { 0x02 } else { 0 });
    b.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        b.push(0); // no properties
    }
    mqtt_str(&mut b, id.as_bytes());
    packet(0x10, &b)
}

pub fn publish_packet(level: u8, topic: &[u8], qos: u8, pkid: u16, dup: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(&mut b, topic);
    if qos > 0 {
        b.extend_from_slice(&pkid.to_be_bytes());
    }
    if level == 5 {
        b.push(0);
    }
    b.extend_from_slice(payload);
    packet(0x30 | (u8::from(dup) << 3) | (qos << 1), &b)
}

/// SUBSCRIBE (MQTT 3.1.1) with packet ID 1 to one filter at QoS 0.
pub fn subscribe_packet(filter: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 1];
    mqtt_str(&mut b, filter);
    b.push(0);
    packet(0x82, &b)
}

pub fn pubrel_packet(pkid: u16) -> Vec<u8> {
    packet(0x62, &pkid.to_be_bytes())
}

/// Packets read from a raw connection: (fixed header byte, body).
pub type Packets = Vec<(u8, Vec<u8>)>;

pub struct Raw {
    pub s: TcpStream,
}

impl Raw {
    pub fn open(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(STEP)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s }
    }

    /// Opens, sends CONNECT, expects a successful CONNACK; returns session present.
    pub fn connected(addr: SocketAddr, level: u8, id: &str, clean: bool, keep_alive: u16) -> (Raw, bool) {
        let mut r = Raw::open(addr);
        r.send(&connect_packet(level, id, clean, keep_alive));
        let body = r.expect(0x20, "CONNACK");
        assert_eq!(body[1], 0, "CONNACK code for {id}: {body:?}");
        (r, body[0] & 1 == 1)
    }

    /// Write errors are ignored: the broker may already have closed.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    /// The next packet (first byte, body); `Ok(None)` when the connection
    /// ended; `Err` when nothing came within `STEP`.
    pub fn try_read(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let mut b1 = [0u8];
        match self.s.read(&mut b1) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("nothing from the broker within {STEP:?}"))
            }
            Err(_) => return Ok(None),
        }
        let mut len = 0usize;
        for i in 0..4 {
            let mut b = [0u8];
            if self.s.read_exact(&mut b).is_err() {
                return Ok(None);
            }
            len |= usize::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        if self.s.read_exact(&mut body).is_err() {
            return Ok(None);
        }
        Ok(Some((b1[0], body)))
    }

    pub fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        self.try_read().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn expect(&mut self, byte1: u8, what: &str) -> Vec<u8> {
        match self.read() {
            Some((b, body)) if b == byte1 => body,
            other => panic!("expected {what} ({byte1:#04x}), got {other:02x?}"),
        }
    }

    /// Reads until the broker closes; returns what came before, or `Err`
    /// with it if the connection was still open after `STEP`.
    pub fn try_closed(&mut self) -> Result<Packets, Packets> {
        self.try_closed_within(STEP)
    }

    /// `try_closed` with another limit (for input that should close at once).
    pub fn try_closed_within(&mut self, limit: Duration) -> Result<Packets, Packets> {
        self.s.set_read_timeout(Some(limit)).unwrap();
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            match self.try_read() {
                Ok(Some(p)) => got.push(p),
                Ok(None) => return Ok(got),
                Err(_) => return Err(got),
            }
            if Instant::now() > deadline {
                return Err(got);
            }
        }
    }

    /// Nothing arrives for `QUIET` (and the connection stays open).
    pub fn quiet(&mut self) {
        self.s.set_read_timeout(Some(QUIET)).unwrap();
        let mut b = [0u8; 64];
        match self.s.read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected nothing for {QUIET:?}, got {other:?} {:02x?}", &b[..8]),
        }
        self.s.set_read_timeout(Some(STEP)).unwrap();
    }

    pub fn closed(&mut self) -> Packets {
        self.try_closed().unwrap_or_else(|got| panic!("the broker did not close the connection; got {got:02x?}"))
    }
}
