//! Minimal MQTT 3.1.1 (protocol level 4) and MQTT 5 client packet codec:
//! CONNECT, CONNACK, SUBSCRIBE, SUBACK, PUBLISH, PUBACK, PINGREQ, PINGRESP,
//! DISCONNECT. Encoders append to a `Vec<u8>`; the decoder parses one packet
//! in place at the start of a buffer and returns offsets into it.

use std::net::SocketAddr;

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// Largest packet the client accepts (remaining length), a sanity bound.
const MAX_PACKET: usize = 64 * 1024 * 1024;

/// Protocol level: 4 = MQTT 3.1.1, 5 = MQTT 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MqttUrl {
    pub addr: SocketAddr,
}

/// Parses `mqtt://HOST[:PORT]` (default port 1883; plain TCP only).
pub fn parse_url(url: &str) -> Result<MqttUrl, String> {
    let rest = if let Some(r) = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")) {
        r
    } else if url.starts_with("mqtts://") || url.starts_with("ssl://") {
        return Err("mqtts:// (TLS) is not supported; use mqtt://".into());
    } else {
        return Err(format!("URL must start with mqtt://, got {url}"));
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(format!("an mqtt:// URL has no path: {url}"));
    }
    let (_, _, addr) = crate::ws::resolve(hostport, 1883, url)?;
    Ok(MqttUrl { addr })
}

/// Appends a variable byte integer (remaining length, property length).
pub fn put_varint(mut n: usize, out: &mut Vec<u8>) {
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
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads a variable byte integer at the start of `b`: `Ok(Some((value,
/// bytes used)))`, `Ok(None)` if incomplete.
fn get_varint(b: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut v = 0usize;
    for i in 0..4 {
        let Some(&x) = b.get(i) else { return Ok(None) };
        v |= ((x & 0x7f) as usize) << (7 * i);
        if x & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Err("malformed variable byte integer (more than 4 bytes)".into())
}

fn put_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT with clean session / clean start, no will, no credentials.
/// MQTT 5: no properties (the server may then send up to 65535 unacked
/// QoS 1 PUBLISHes, the default Receive Maximum).
pub fn connect(out: &mut Vec<u8>, v: Version, client_id: &str, keepalive: u16) {
    let props = if v == Version::V5 { 1 } else { 0 };
    let rem = 2 + 4 + 1 + 1 + 2 + props + 2 + client_id.len();
    out.push(CONNECT << 4);
    put_varint(rem, out);
    put_str(b"MQTT", out);
    out.push(v.level());
    out.push(0x02); // clean session / clean start
    out.extend_from_slice(&keepalive.to_be_bytes());
    if v == Version::V5 {
        out.push(0); // property length
    }
    put_str(client_id.as_bytes(), out);
}

/// SUBSCRIBE with one topic filter at `qos`.
pub fn subscribe(out: &mut Vec<u8>, v: Version, pkid: u16, filter: &str, qos: u8) {
    let props = if v == Version::V5 { 1 } else { 0 };
    let rem = 2 + props + 2 + filter.len() + 1;
    out.push((SUBSCRIBE << 4) | 0x02);
    put_varint(rem, out);
    out.extend_from_slice(&pkid.to_be_bytes());
    if v == Version::V5 {
        out.push(0);
    }
    put_str(filter.as_bytes(), out);
    // v5 subscription options: QoS in bits 0-1, No Local / Retain As
    // Published / Retain Handling all 0 -- the same meaning as 3.1.1.
    out.push(qos & 0x03);
}

/// PUBLISH at `qos` (0 or 1; `pkid` ignored for 0), no retain, not DUP.
pub fn publish(out: &mut Vec<u8>, v: Version, topic: &[u8], qos: u8, pkid: u16, payload: &[u8]) {
    let props = if v == Version::V5 { 1 } else { 0 };
    let id = if qos > 0 { 2 } else { 0 };
    let rem = 2 + topic.len() + id + props + payload.len();
    out.reserve(1 + varint_len(rem) + rem);
    out.push((PUBLISH << 4) | ((qos & 0x03) << 1));
    put_varint(rem, out);
    put_str(topic, out);
    if qos > 0 {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    if v == Version::V5 {
        out.push(0);
    }
    out.extend_from_slice(payload);
}

/// PUBACK (success; v5 short form: reason code 0 and no properties may be
/// omitted).
pub fn puback(out: &mut Vec<u8>, pkid: u16) {
    out.push(PUBACK << 4);
    out.push(2);
    out.extend_from_slice(&pkid.to_be_bytes());
}

pub fn pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[PINGREQ << 4, 0]);
}

/// DISCONNECT (normal; v5 reason code 0 may be omitted).
pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[DISCONNECT << 4, 0]);
}

/// One packet at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub kind: u8,
    pub flags: u8,
    /// Variable header + payload: `buf[start..end]`.
    pub start: usize,
    pub end: usize,
}

/// Parses the fixed header at the start of `buf`. `Ok(None)` when the
/// packet is not complete yet.
pub fn parse_packet(buf: &[u8]) -> Result<Option<Packet>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((rem, n)) = get_varint(&buf[1..])? else { return Ok(None) };
    if rem > MAX_PACKET {
        return Err(format!("MQTT packet too large: {rem} bytes"));
    }
    let start = 1 + n;
    let end = start + rem;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Packet { kind: buf[0] >> 4, flags: buf[0] & 0x0f, start, end }))
}

fn short<T>(what: &str) -> Result<T, String> {
    Err(format!("malformed {what} (too short)"))
}

/// Skips a v5 property block at the start of `b`; returns bytes consumed.
fn skip_props(b: &[u8], what: &str) -> Result<usize, String> {
    match get_varint(b)? {
        Some((len, n)) if n + len <= b.len() => Ok(n + len),
        _ => short(what),
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Connack {
    /// 3.1.1 return code or v5 reason code (0 = accepted).
    pub code: u8,
    /// v5 Receive Maximum (property 0x21): max unacked QoS 1 PUBLISHes the
    /// server accepts from us.
    pub receive_max: Option<u16>,
    /// v5 Server Keep Alive (property 0x13), seconds.
    pub server_keepalive: Option<u16>,
}

pub fn connack(v: Version, b: &[u8]) -> Result<Connack, String> {
    if b.len() < 2 {
        return short("CONNACK");
    }
    let mut c = Connack { code: b[1], ..Connack::default() };
    if v == Version::V5 && b.len() > 2 {
        let Some((len, n)) = get_varint(&b[2..])? else { return short("CONNACK") };
        let mut p = &b[2 + n..];
        if p.len() < len {
            return short("CONNACK");
        }
        p = &p[..len];
        while let Some(&id) = p.first() {
            p = &p[1..];
            // Property value sizes (MQTT 5 section 2.2.2.2).
            let size = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
                0x13 | 0x21 | 0x22 | 0x23 => 2,
                0x02 | 0x11 | 0x18 | 0x27 => 4,
                0x0B => match get_varint(p)? {
                    Some((_, n)) => n,
                    None => return short("CONNACK property"),
                },
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                    if p.len() < 2 {
                        return short("CONNACK property");
                    }
                    2 + u16::from_be_bytes([p[0], p[1]]) as usize
                }
                0x26 => {
                    // user property: two strings
                    if p.len() < 2 {
                        return short("CONNACK property");
                    }
                    let k = 2 + u16::from_be_bytes([p[0], p[1]]) as usize;
                    if p.len() < k + 2 {
                        return short("CONNACK property");
                    }
                    k + 2 + u16::from_be_bytes([p[k], p[k + 1]]) as usize
                }
                x => return Err(format!("unknown CONNACK property 0x{x:02x}")),
            };
            if p.len() < size {
                return short("CONNACK property");
            }
            match id {
                0x21 => c.receive_max = Some(u16::from_be_bytes([p[0], p[1]])),
                0x13 => c.server_keepalive = Some(u16::from_be_bytes([p[0], p[1]])),
                _ => {}
            }
            p = &p[size..];
        }
    }
    Ok(c)
}

/// SUBACK: packet id and the first return/reason code (we subscribe to one
/// filter per SUBSCRIBE). Codes >= 0x80 are failures.
pub fn suback(v: Version, b: &[u8]) -> Result<(u16, u8), String> {
    if b.len() < 3 {
        return short("SUBACK");
    }
    let pkid = u16::from_be_bytes([b[0], b[1]]);
    let mut pos = 2;
    if v == Version::V5 {
        pos += skip_props(&b[2..], "SUBACK")?;
    }
    match b.get(pos) {
        Some(&code) => Ok((pkid, code)),
        None => short("SUBACK"),
    }
}

/// PUBACK: packet id and reason code (0 when absent; v5 codes >= 0x80 are
/// failures).
pub fn puback_parse(b: &[u8]) -> Result<(u16, u8), String> {
    if b.len() < 2 {
        return short("PUBACK");
    }
    Ok((u16::from_be_bytes([b[0], b[1]]), b.get(2).copied().unwrap_or(0)))
}

/// A received PUBLISH: offsets relative to the packet body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub qos: u8,
    pub pkid: u16,
    pub topic: (usize, usize),
    pub payload: (usize, usize),
}

pub fn publish_parse(v: Version, flags: u8, b: &[u8]) -> Result<Publish, String> {
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err("PUBLISH with QoS 3".into());
    }
    if b.len() < 2 {
        return short("PUBLISH");
    }
    let tlen = u16::from_be_bytes([b[0], b[1]]) as usize;
    let mut pos = 2 + tlen;
    let topic = (2, pos);
    let mut pkid = 0;
    if qos > 0 {
        if b.len() < pos + 2 {
            return short("PUBLISH");
        }
        pkid = u16::from_be_bytes([b[pos], b[pos + 1]]);
        pos += 2;
    }
    if v == Version::V5 {
        if pos > b.len() {
            return short("PUBLISH");
        }
        pos += skip_props(&b[pos..], "PUBLISH")?;
    }
    if pos > b.len() {
        return short("PUBLISH");
    }
    Ok(Publish { qos, pkid, topic, payload: (pos, b.len()) })
}

/// A v5 DISCONNECT's reason code (0 when absent).
pub fn disconnect_reason(b: &[u8]) -> u8 {
    b.first().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Packet {
        let p = parse_packet(buf).unwrap().unwrap();
        assert_eq!(p.end, buf.len());
        for cut in 0..buf.len() {
            assert!(parse_packet(&buf[..cut]).unwrap().is_none(), "cut {cut}");
        }
        p
    }

    #[test]
    fn varint() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455] {
            let mut b = Vec::new();
            put_varint(n, &mut b);
            assert_eq!(b.len(), varint_len(n));
            assert_eq!(get_varint(&b).unwrap(), Some((n, b.len())));
        }
        assert!(get_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert_eq!(get_varint(&[0x80]).unwrap(), None);
    }

    #[test]
    fn connect_bytes_311() {
        let mut b = Vec::new();
        connect(&mut b, Version::V311, "ab", 60);
        assert_eq!(b, [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b']);
    }

    #[test]
    fn connect_bytes_5() {
        let mut b = Vec::new();
        connect(&mut b, Version::V5, "ab", 600);
        assert_eq!(b, [0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 2, 88, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn publish_roundtrip() {
        for v in [Version::V311, Version::V5] {
            for qos in [0u8, 1] {
                for size in [0usize, 10, 200, 20_000] {
                    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                    let mut b = Vec::new();
                    publish(&mut b, v, b"bench/topic/3", qos, 4242, &payload);
                    let p = one(&b);
                    assert_eq!(p.kind, PUBLISH);
                    let body = &b[p.start..p.end];
                    let m = publish_parse(v, p.flags, body).unwrap();
                    assert_eq!(m.qos, qos);
                    assert_eq!(&body[m.topic.0..m.topic.1], b"bench/topic/3");
                    assert_eq!(&body[m.payload.0..m.payload.1], &payload[..]);
                    if qos == 1 {
                        assert_eq!(m.pkid, 4242);
                    }
                }
            }
        }
    }

    #[test]
    fn publish_known_bytes() {
        let mut b = Vec::new();
        publish(&mut b, Version::V311, b"a/b", 1, 7, b"hi");
        assert_eq!(b, [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'h', b'i']);
        b.clear();
        publish(&mut b, Version::V5, b"a/b", 0, 0, b"hi");
        assert_eq!(b, [0x30, 8, 0, 3, b'a', b'/', b'b', 0, b'h', b'i']);
    }

    #[test]
    fn v5_publish_with_properties() {
        // topic "t", QoS 1, pkid 1, properties: message expiry (0x02, 4 bytes)
        // + topic alias (0x23, 2 bytes) = 8 bytes, payload "xy".
        let b = [0x32, 16, 0, 1, b't', 0, 1, 8, 0x02, 0, 0, 0, 9, 0x23, 0, 1, b'x', b'y'];
        let p = one(&b);
        let m = publish_parse(Version::V5, p.flags, &b[p.start..p.end]).unwrap();
        assert_eq!((m.qos, m.pkid), (1, 1));
        let body = &b[p.start..p.end];
        assert_eq!(&body[m.payload.0..m.payload.1], b"xy");
    }

    #[test]
    fn subscribe_bytes() {
        let mut b = Vec::new();
        subscribe(&mut b, Version::V311, 1, "a/b", 1);
        assert_eq!(b, [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'b', 1]);
        b.clear();
        subscribe(&mut b, Version::V5, 1, "a/b", 0);
        assert_eq!(b, [0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'b', 0]);
    }

    #[test]
    fn acks() {
        let c = connack(Version::V311, &[0, 0]).unwrap();
        assert_eq!(c, Connack { code: 0, receive_max: None, server_keepalive: None });
        assert_eq!(connack(Version::V311, &[0, 5]).unwrap().code, 5);
        // v5: flags, reason 0, props len 9: receive max 20, server keepalive 30,
        // topic alias max 10.
        let c = connack(Version::V5, &[0, 0, 9, 0x21, 0, 20, 0x13, 0, 30, 0x22, 0, 10]).unwrap();
        assert_eq!(c, Connack { code: 0, receive_max: Some(20), server_keepalive: Some(30) });
        // v5 with a string property (assigned client id) and a user property.
        let c = connack(Version::V5, &[0, 0x87, 12, 0x12, 0, 2, b'i', b'd', 0x26, 0, 1, b'k', 0, 1, b'v']).unwrap();
        assert_eq!(c.code, 0x87);
        assert!(connack(Version::V5, &[0, 0, 3, 0x21, 0]).is_err());
        assert_eq!(suback(Version::V311, &[0, 9, 1]).unwrap(), (9, 1));
        assert_eq!(suback(Version::V311, &[0, 9, 0x80]).unwrap(), (9, 0x80));
        assert_eq!(suback(Version::V5, &[0, 9, 0, 0]).unwrap(), (9, 0));
        assert_eq!(suback(Version::V5, &[0, 9, 3, 0x1F, 0, 0, 0x87]).unwrap(), (9, 0x87));
        assert_eq!(puback_parse(&[1, 2]).unwrap(), (258, 0));
        assert_eq!(puback_parse(&[1, 2, 0x10, 0]).unwrap(), (258, 0x10));
        let mut b = Vec::new();
        puback(&mut b, 258);
        assert_eq!(b, [0x40, 2, 1, 2]);
        b.clear();
        pingreq(&mut b);
        disconnect(&mut b);
        assert_eq!(b, [0xC0, 0, 0xE0, 0]);
    }

    #[test]
    fn several_packets_in_one_buffer() {
        let mut b = Vec::new();
        publish(&mut b, Version::V311, b"x", 0, 0, b"1");
        puback(&mut b, 3);
        b.extend_from_slice(&[PINGRESP << 4, 0]);
        let mut pos = 0;
        let mut kinds = Vec::new();
        while let Some(p) = parse_packet(&b[pos..]).unwrap() {
            kinds.push(p.kind);
            pos += p.end;
        }
        assert_eq!(kinds, [PUBLISH, PUBACK, PINGRESP]);
        assert_eq!(pos, b.len());
    }

    #[test]
    fn url() {
        let u = parse_url("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!(u.addr, "127.0.0.1:1884".parse().unwrap());
        assert_eq!(parse_url("mqtt://127.0.0.1").unwrap().addr.port(), 1883);
        assert_eq!(parse_url("mqtt://localhost:1883/").unwrap().addr.port(), 1883);
        assert!(parse_url("ws://127.0.0.1").is_err());
        assert!(parse_url("mqtts://127.0.0.1").is_err());
        assert!(parse_url("mqtt://127.0.0.1/x").is_err());
    }
}
