//! MQTT 3.1.1 and 5 packets: bytes in, packets out, and back. No I/O.
//!
//! Decoding is done by `mqttbytes` (v4 and v5), behind a pre-check that
//! rejects what it lets through or stumbles on: reserved fixed-header flags,
//! a v5 DISCONNECT or ack without a body, AUTH, the reserved CONNECT flag,
//! wildcards in topic names, and everything `check` looks at (every UTF-8
//! string, every v5 property, reserved option bits). The result is one
//! packet type for all versions, so the session layer is written once.
//!
//! MQTT 3.1 (protocol name `MQIsdp`, level 3) has the packet formats of
//! 3.1.1: its CONNECT is rewritten to the 3.1.1 form for `mqttbytes`, and
//! `Version::V3` tells the session what differs (client ID rules, no
//! session-present flag).
//!
//! Encoding is by hand: outgoing packets are few and small, and a PUBLISH is
//! written straight into one buffer (header, topic, properties, payload)
//! with no intermediate structs, which `mqttbytes`' writers would need.

use super::check;
use bytes::{Bytes, BytesMut};
use mqttbytes::{v4, v5, QoS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3).
    V3,
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// v5 reason codes the broker sends.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const MALFORMED: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    pub const UNSUPPORTED_VERSION: u8 = 0x84;
    pub const BAD_CLIENT_ID: u8 = 0x85;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_ID_IN_USE: u8 = 0x91;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARDS_NOT_SUPPORTED: u8 = 0xA2;
}

/// Application properties of a PUBLISH (and a will) that the broker passes
/// through unchanged (v5). They are the core's neutral message properties.
pub use crate::router::MsgProps as PubProps;

#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// v5 will delay interval, seconds.
    pub delay: u32,
    pub props: PubProps,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    /// The password, as `mqttbytes` reads it (a UTF-8 string).
    pub password: Option<String>,
    /// v5: seconds the session outlives the connection (0: ends with it).
    pub session_expiry: u32,
    /// v5: most unacknowledged QoS 1/2 PUBLISHes the client accepts.
    pub receive_max: u16,
    pub max_packet_size: Option<u32>,
    pub topic_alias_max: u16,
    pub request_problem_info: bool,
    pub auth_method: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    /// May be empty in v5 when `alias` names the topic.
    pub topic: String,
    pub pkid: u16,
    pub payload: Bytes,
    pub alias: Option<u16>,
    pub props: Option<Box<PubProps>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SubFilter {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained on subscribe, 1: only for a new subscription, 2: never.
    pub retain_handling: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    Connect(Box<Connect>),
    Publish(Publish),
    PubAck { pkid: u16, reason: u8 },
    PubRec { pkid: u16, reason: u8 },
    PubRel { pkid: u16, reason: u8 },
    PubComp { pkid: u16, reason: u8 },
    Subscribe { pkid: u16, filters: Vec<SubFilter>, id: Option<u32> },
    Unsubscribe { pkid: u16, filters: Vec<String> },
    PingReq,
    Disconnect { reason: u8, session_expiry: Option<u32> },
}

/// Why input was refused: the v5 reason code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub reason: u8,
    pub message: String,
}

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError { reason: reason::MALFORMED, message: message.into() }
}

fn protocol_error(message: impl Into<String>) -> DecodeError {
    DecodeError { reason: reason::PROTOCOL_ERROR, message: message.into() }
}

/// The fixed header: packet type and flags, and the whole packet's length.
struct Header {
    byte1: u8,
    header_len: usize,
    remaining: usize,
}

/// `Ok(None)`: not enough bytes yet.
fn header(buf: &[u8]) -> Result<Option<Header>, DecodeError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(Header { byte1: buf[0], header_len: 2 + i, remaining }));
        }
    }
    Err(malformed("remaining length longer than 4 bytes"))
}

/// The protocol name and level of a CONNECT packet's body.
fn connect_level(body: &[u8]) -> Result<(&[u8], u8), DecodeError> {
    if body.len() < 2 {
        return Err(malformed("CONNECT too short"));
    }
    let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let name = body.get(2..2 + n).ok_or_else(|| malformed("CONNECT too short"))?;
    let level = *body.get(2 + n).ok_or_else(|| malformed("CONNECT too short"))?;
    let flags = *body.get(3 + n).ok_or_else(|| malformed("CONNECT too short"))?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return Err(protocol_error("protocol name is not MQTT"));
    }
    if flags & 1 != 0 {
        return Err(malformed("reserved CONNECT flag is set"));
    }
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 3;
    if will_qos == 3 || (!will && (will_qos != 0 || flags & 0x20 != 0)) {
        return Err(malformed("invalid will flags"));
    }
    Ok((name, level))
}

/// The version of the CONNECT at the start of `buf`, if it names one this
/// broker speaks: a CONNECT refused as malformed is answered in its version
/// (v5: CONNACK with the reason code).
pub fn connect_version(buf: &[u8]) -> Option<Version> {
    let h = header(buf).ok()??;
    let body = buf.get(h.header_len..)?;
    match connect_level(body) {
        Ok((b"MQIsdp", 3)) => Some(Version::V3),
        Ok((b"MQTT", 4)) => Some(Version::V4),
        Ok((b"MQTT", 5)) => Some(Version::V5),
        _ => None,
    }
}

/// What `decode` found at the start of a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A packet and the bytes it took.
    Packet(Packet, usize),
    /// A CONNECT with a protocol level this broker does not speak.
    UnsupportedVersion(u8),
    /// More bytes are needed.
    Incomplete,
}

/// Decodes one packet. `version` is `None` until CONNECT has been read,
/// and then only CONNECT is accepted. `max` bounds the whole packet.
pub fn decode(version: Option<Version>, buf: &[u8], max: usize) -> Result<Decoded, DecodeError> {
    let Some(h) = header(buf)? else { return Ok(Decoded::Incomplete) };
    let total = h.header_len + h.remaining;
    if total > max {
        return Err(DecodeError {
            reason: reason::PACKET_TOO_LARGE,
            message: format!("packet of {total} bytes is over the limit of {max}"),
        });
    }
    if buf.len() < total {
        return Ok(Decoded::Incomplete);
    }
    let kind = h.byte1 >> 4;
    let flags = h.byte1 & 0x0f;
    let expected_flags = match kind {
        3 => flags, // PUBLISH: dup, qos, retain
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    // MQTT 3.1 sent PUBREL, SUBSCRIBE and UNSUBSCRIBE at "QoS 1", with DUP
    // set when resent.
    let v31_dup = version == Some(Version::V3) && expected_flags == 0b0010 && flags == 0b1010;
    if flags != expected_flags && !v31_dup {
        return Err(malformed(format!("invalid flags {flags:#06b} for packet type {kind}")));
    }
    let body = &buf[h.header_len..total];
    let version = match version {
        None => {
            if kind != 1 {
                return Err(protocol_error("the first packet must be CONNECT"));
            }
            match connect_level(body)? {
                (b"MQIsdp", 3) => Version::V3,
                (b"MQTT", 4) => Version::V4,
                (b"MQTT", 5) => Version::V5,
                (_, level) => return Ok(Decoded::UnsupportedVersion(level)),
            }
        }
        Some(v) => {
            if kind == 1 {
                return Err(protocol_error("second CONNECT"));
            }
            v
        }
    };
    if kind == 3 {
        return Ok(Decoded::Packet(Packet::Publish(check::publish(version, flags, body)?), total));
    }
    if kind != 15 {
        check::packet(version, kind, body)?;
    }
    let v4 = matches!(version, Version::V3 | Version::V4);
    let packet = match (version, kind) {
        (_, 15) => {
            return Err(DecodeError { reason: reason::BAD_AUTH_METHOD, message: "AUTH is not supported".into() })
        }
        (_, 2 | 9 | 11 | 13) => return Err(protocol_error(format!("packet type {kind} is not sent by clients"))),
        // Fixed-length packets: any other remaining length is malformed
        // (mqttbytes would ignore the extra bytes).
        (_, 12) if h.remaining != 0 => {
            return Err(malformed(format!("packet type {kind} with remaining length {}", h.remaining)))
        }
        (_, 14) if v4 && h.remaining != 0 => {
            return Err(malformed(format!("packet type {kind} with remaining length {}", h.remaining)))
        }
        (_, 4..=7) if v4 && h.remaining != 2 => {
            return Err(malformed(format!("packet type {kind} with remaining length {}", h.remaining)))
        }
        (Version::V5, 14) if h.remaining == 0 => Packet::Disconnect { reason: 0, session_expiry: None },
        // A reason code without the properties length: properties are empty.
        (Version::V5, 14) if h.remaining == 1 => Packet::Disconnect { reason: body[0], session_expiry: None },
        (Version::V5, 4..=7) if h.remaining == 2 => {
            let pkid = u16::from_be_bytes([body[0], body[1]]);
            check_pkid(pkid)?;
            ack(kind, pkid, 0)
        }
        // Read here: `check` has walked it, and mqttbytes 0.6's v5 reader
        // prints every UNSUBSCRIBE's packet ID to stderr (a `dbg!`).
        (_, 10) => unsubscribe(u16::from_be_bytes([body[0], body[1]]), check::unsubscribe_filters(version, body))?,
        (Version::V3, 1) => from_v4(read_v4(&v31_as_v311(body))?, Version::V3)?,
        (Version::V3 | Version::V4, _) => from_v4(read_v4(&buf[..total])?, Version::V4)?,
        (Version::V5, _) => from_v5(read_v5(&buf[..total])?)?,
    };
    Ok(Decoded::Packet(packet, total))
}

/// A 3.1 CONNECT (`MQIsdp`, level 3) as the 3.1.1 CONNECT it equals field
/// for field (`MQTT`, level 4), header included. Once per connection.
fn v31_as_v311(body: &[u8]) -> Vec<u8> {
    // connect_level checked the name ("MQIsdp": 2 + 6 bytes) and the level.
    let rest = &body[9..];
    let mut v = Vec::with_capacity(rest.len() + 12);
    v.push(0x10);
    let mut n = rest.len() + 7;
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        v.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4]);
    v.extend_from_slice(rest);
    v
}

fn ack(kind: u8, pkid: u16, reason: u8) -> Packet {
    match kind {
        4 => Packet::PubAck { pkid, reason },
        5 => Packet::PubRec { pkid, reason },
        6 => Packet::PubRel { pkid, reason },
        _ => Packet::PubComp { pkid, reason },
    }
}

fn check_subscribe(pkid: u16, filters: usize) -> Result<(), DecodeError> {
    check_pkid(pkid)?;
    if filters == 0 {
        return Err(protocol_error("SUBSCRIBE without a topic filter"));
    }
    Ok(())
}

fn unsubscribe(pkid: u16, filters: Vec<String>) -> Result<Packet, DecodeError> {
    check_pkid(pkid)?;
    if filters.is_empty() {
        return Err(protocol_error("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Packet::Unsubscribe { pkid, filters })
}

/// A packet identifier of 0 parses, and is not allowed (MQTT 5, 2.2.1): a
/// protocol error, not a malformed packet (1.2's definitions).
fn check_pkid(pkid: u16) -> Result<(), DecodeError> {
    if pkid == 0 {
        return Err(protocol_error("packet identifier 0"));
    }
    Ok(())
}

fn map_err(e: mqttbytes::Error) -> DecodeError {
    use mqttbytes::Error as E;
    match e {
        E::TopicNotUtf8 => malformed("string is not valid UTF-8"),
        E::InvalidQoS(q) => malformed(format!("invalid QoS {q}")),
        E::PacketIdZero => protocol_error("packet identifier 0"),
        E::SubscriptionIdZero => protocol_error("subscription identifier 0"),
        E::InvalidProtocolLevel(l) => {
            DecodeError { reason: reason::UNSUPPORTED_VERSION, message: format!("level {l}") }
        }
        e => malformed(format!("{e:?}")),
    }
}

fn read_v4(packet: &[u8]) -> Result<v4::Packet, DecodeError> {
    let mut b = BytesMut::from(packet);
    v4::read(&mut b, usize::MAX).map_err(map_err)
}

fn read_v5(packet: &[u8]) -> Result<v5::Packet, DecodeError> {
    let mut b = BytesMut::from(packet);
    v5::read(&mut b, usize::MAX).map_err(map_err)
}

fn qos(q: QoS) -> u8 {
    q as u8
}

fn check_will_topic(topic: &str) -> Result<(), DecodeError> {
    if topic.contains(['+', '#']) {
        return Err(DecodeError {
            reason: reason::TOPIC_NAME_INVALID,
            message: format!("will topic '{topic}' holds a wildcard"),
        });
    }
    if topic.is_empty() {
        return Err(protocol_error("empty will topic"));
    }
    Ok(())
}

/// `version`: V3 for a rewritten 3.1 CONNECT, else V4.
fn from_v4(p: v4::Packet, version: Version) -> Result<Packet, DecodeError> {
    Ok(match p {
        v4::Packet::Connect(c) => {
            let will = match c.last_will {
                Some(w) => {
                    check_will_topic(&w.topic)?;
                    Some(Will {
                        topic: w.topic,
                        payload: w.message,
                        qos: qos(w.qos),
                        retain: w.retain,
                        delay: 0,
                        props: PubProps::default(),
                    })
                }
                None => None,
            };
            Packet::Connect(Box::new(Connect {
                version,
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                will,
                password: c.login.as_ref().map(|l| l.password.clone()).filter(|p| !p.is_empty()),
                username: c.login.map(|l| l.username),
                session_expiry: if c.clean_session { 0 } else { u32::MAX },
                receive_max: u16::MAX,
                max_packet_size: None,
                topic_alias_max: 0,
                request_problem_info: true,
                auth_method: None,
            }))
        }
        v4::Packet::PubAck(a) => Packet::PubAck { pkid: a.pkid, reason: 0 },
        v4::Packet::PubRec(a) => Packet::PubRec { pkid: a.pkid, reason: 0 },
        v4::Packet::PubRel(a) => Packet::PubRel { pkid: a.pkid, reason: 0 },
        v4::Packet::PubComp(a) => Packet::PubComp { pkid: a.pkid, reason: 0 },
        v4::Packet::Subscribe(s) => {
            check_subscribe(s.pkid, s.filters.len())?;
            let filters = s
                .filters
                .into_iter()
                .map(|f| SubFilter {
                    filter: f.path,
                    qos: qos(f.qos),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect();
            Packet::Subscribe { pkid: s.pkid, filters, id: None }
        }
        v4::Packet::PingReq => Packet::PingReq,
        v4::Packet::Disconnect => Packet::Disconnect { reason: 0, session_expiry: None },
        other => return Err(protocol_error(format!("{other:?} is not sent by clients"))),
    })
}

fn from_v5(p: v5::Packet) -> Result<Packet, DecodeError> {
    Ok(match p {
        v5::Packet::Connect(c) => {
            let props = c.properties;
            let prop = |f: &dyn Fn(&v5::ConnectProperties) -> Option<u32>| props.as_ref().and_then(f);
            // Zero values and duplicates were refused by `check`.
            let receive_max = prop(&|p| p.receive_maximum.map(u32::from));
            let max_packet_size = prop(&|p| p.max_packet_size);
            let will = match c.last_will {
                Some(w) => {
                    check_will_topic(&w.topic)?;
                    let (delay, props) = match w.properties {
                        Some(wp) => (
                            wp.delay_interval.unwrap_or(0),
                            PubProps {
                                payload_format: wp.payload_format_indicator,
                                expiry: wp.message_expiry_interval,
                                content_type: wp.content_type,
                                response_topic: wp.response_topic,
                                correlation: wp.correlation_data,
                                user: wp.user_properties,
                            },
                        ),
                        None => (0, PubProps::default()),
                    };
                    Some(Will { topic: w.topic, payload: w.message, qos: qos(w.qos), retain: w.retain, delay, props })
                }
                None => None,
            };
            Packet::Connect(Box::new(Connect {
                version: Version::V5,
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                will,
                password: c.login.as_ref().map(|l| l.password.clone()).filter(|p| !p.is_empty()),
                username: c.login.map(|l| l.username),
                session_expiry: prop(&|p| p.session_expiry_interval).unwrap_or(0),
                receive_max: receive_max.map_or(u16::MAX, |n| n as u16),
                max_packet_size,
                topic_alias_max: prop(&|p| p.topic_alias_max.map(u32::from)).unwrap_or(0) as u16,
                request_problem_info: prop(&|p| p.request_problem_info.map(u32::from)) != Some(0),
                auth_method: props.as_ref().and_then(|p| p.authentication_method.clone()),
            }))
        }
        v5::Packet::PubAck(a) => Packet::PubAck { pkid: a.pkid, reason: a.reason as u8 },
        v5::Packet::PubRec(a) => Packet::PubRec { pkid: a.pkid, reason: a.reason as u8 },
        v5::Packet::PubRel(a) => Packet::PubRel { pkid: a.pkid, reason: a.reason as u8 },
        v5::Packet::PubComp(a) => Packet::PubComp { pkid: a.pkid, reason: a.reason as u8 },
        v5::Packet::Subscribe(s) => {
            check_subscribe(s.pkid, s.filters.len())?;
            let id = match s.properties.and_then(|p| p.id) {
                Some(0) => return Err(protocol_error("subscription identifier 0")),
                Some(id) if id > 268_435_455 => return Err(malformed("subscription identifier too large")),
                id => id.map(|i| i as u32),
            };
            let filters = s
                .filters
                .into_iter()
                .map(|f| SubFilter {
                    filter: f.path,
                    qos: qos(f.qos),
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    retain_handling: f.retain_forward_rule as u8,
                })
                .collect();
            Packet::Subscribe { pkid: s.pkid, filters, id }
        }
        v5::Packet::PingReq => Packet::PingReq,
        v5::Packet::Disconnect(d) => Packet::Disconnect {
            reason: d.reason_code as u8,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        other => return Err(protocol_error(format!("{other:?} is not sent by clients"))),
    })
}

// ---------------------------------------------------------------------------
// Encoding

/// Room kept in front of a packet for the largest fixed header.
const HEAD: usize = 5;

/// A packet being written: the body after `HEAD` reserved bytes.
pub struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    fn new(capacity: usize) -> Enc {
        let mut buf = Vec::with_capacity(HEAD + capacity);
        buf.resize(HEAD, 0);
        Enc { buf }
    }

    fn u8(&mut self, b: u8) {
        self.buf.push(b);
    }

    fn u16(&mut self, n: u16) {
        self.buf.extend_from_slice(&n.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u16(b.len() as u16);
        self.buf.extend_from_slice(b);
    }

    /// Writes the fixed header in front of the body.
    fn finish(mut self, byte1: u8) -> Bytes {
        let len = self.buf.len() - HEAD;
        let mut tmp = [0u8; 4];
        let n = varint(len, &mut tmp);
        let start = HEAD - 1 - n;
        self.buf[start] = byte1;
        self.buf[start + 1..HEAD].copy_from_slice(&tmp[..n]);
        Bytes::from(self.buf).slice(start..)
    }
}

/// Writes a variable byte integer; returns its length.
fn varint(mut n: usize, out: &mut [u8; 4]) -> usize {
    let mut i = 0;
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out[i] = b;
        i += 1;
        if n == 0 || i == 4 {
            return i;
        }
    }
}

/// v5 properties, written into their own buffer and then length-prefixed.
#[derive(Default)]
pub struct Props {
    buf: Vec<u8>,
}

impl Props {
    pub fn u8(&mut self, id: u8, v: u8) -> &mut Self {
        self.buf.extend_from_slice(&[id, v]);
        self
    }
    pub fn u16(&mut self, id: u8, v: u16) -> &mut Self {
        self.buf.push(id);
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, id: u8, v: u32) -> &mut Self {
        self.buf.push(id);
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn varint(&mut self, id: u8, v: u32) -> &mut Self {
        let mut tmp = [0u8; 4];
        let n = varint(v as usize, &mut tmp);
        self.buf.push(id);
        self.buf.extend_from_slice(&tmp[..n]);
        self
    }
    pub fn str(&mut self, id: u8, v: &str) -> &mut Self {
        self.bin(id, v.as_bytes())
    }
    pub fn bin(&mut self, id: u8, v: &[u8]) -> &mut Self {
        self.buf.push(id);
        self.buf.extend_from_slice(&(v.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(v);
        self
    }
    pub fn pair(&mut self, id: u8, k: &str, v: &str) -> &mut Self {
        self.str(id, k);
        self.buf.extend_from_slice(&(v.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    fn write_to(&self, e: &mut Enc) {
        let mut tmp = [0u8; 4];
        let n = varint(self.buf.len(), &mut tmp);
        e.buf.extend_from_slice(&tmp[..n]);
        e.buf.extend_from_slice(&self.buf);
    }
}

/// Property identifiers.
pub mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDS_AVAILABLE: u8 = 0x29;
    pub const SHARED_AVAILABLE: u8 = 0x2A;
}

/// CONNACK. `code` is the v5 reason code; for v4 it is mapped to a return code.
pub fn connack(version: Version, session_present: bool, code: u8, props: &Props) -> Bytes {
    let mut e = Enc::new(8 + props.buf.len());
    // 3.1 has no session-present flag: the byte is reserved.
    e.u8(u8::from(session_present && code == 0 && version != Version::V3));
    match version {
        Version::V3 | Version::V4 => e.u8(v4_connack_code(code)),
        Version::V5 => {
            e.u8(code);
            props.write_to(&mut e);
        }
    }
    e.finish(0x20)
}

fn v4_connack_code(code: u8) -> u8 {
    match code {
        0 => 0,
        reason::UNSUPPORTED_VERSION => 1,
        reason::BAD_CLIENT_ID => 2,
        reason::SERVER_SHUTTING_DOWN | reason::SERVER_UNAVAILABLE | 0x89 => 3,
        reason::BAD_USERNAME_OR_PASSWORD => 4,
        reason::NOT_AUTHORIZED => 5,
        _ => 3,
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
pub fn ack_packet(version: Version, kind: u8, pkid: u16, code: u8) -> Bytes {
    let mut e = Enc::new(4);
    e.u16(pkid);
    if version == Version::V5 && code != 0 {
        e.u8(code);
    }
    e.finish((kind << 4) | if kind == 6 { 0b0010 } else { 0 })
}

pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;

/// SUBACK. Codes are v5 reason codes (granted QoS, or >= 0x80); v4 maps
/// every failure to 0x80.
pub fn suback(version: Version, pkid: u16, codes: &[u8]) -> Bytes {
    let mut e = Enc::new(3 + codes.len());
    e.u16(pkid);
    if version == Version::V5 {
        e.u8(0);
    }
    for &c in codes {
        e.u8(if version != Version::V5 && c >= 0x80 { 0x80 } else { c });
    }
    e.finish(0x90)
}

/// UNSUBACK (v5 carries a reason code per filter; v4 none).
pub fn unsuback(version: Version, pkid: u16, codes: &[u8]) -> Bytes {
    let mut e = Enc::new(3 + codes.len());
    e.u16(pkid);
    if version == Version::V5 {
        e.u8(0);
        for &c in codes {
            e.u8(c);
        }
    }
    e.finish(0xB0)
}

pub fn pingresp() -> Bytes {
    Bytes::from_static(&[0xD0, 0x00])
}

/// A v5 DISCONNECT from the server (v4 has none: the server just closes).
///
/// `max` is the client's maximum packet size: a reason string that would
/// make the packet larger is left out (MQTT 5, 3.14.2.2.2).
pub fn disconnect(code: u8, text: &str, max: usize) -> Bytes {
    if text.len() + 8 > max {
        return disconnect(code, "", usize::MAX);
    }
    let mut e = Enc::new(8 + text.len());
    e.u8(code);
    let mut p = Props::default();
    if !text.is_empty() {
        p.str(prop::REASON_STRING, text);
    }
    p.write_to(&mut e);
    e.finish(0xE0)
}

/// What a PUBLISH to one subscriber carries besides topic and payload.
pub struct PubOut<'a> {
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    /// Topic alias (v5); with `send_topic` false the topic name is empty.
    pub alias: Option<u16>,
    pub send_topic: bool,
    pub sub_ids: &'a [u32],
    pub props: Option<&'a PubProps>,
    /// Remaining message expiry, seconds (replaces the received one).
    pub expiry: Option<u32>,
}

/// Encodes a PUBLISH with the payload copied in.
pub fn publish(version: Version, topic: &str, payload: &[u8], o: &PubOut) -> Bytes {
    let mut e = Enc::new(topic.len() + payload.len() + 16);
    e.bytes(if o.send_topic { topic.as_bytes() } else { b"" });
    if o.qos > 0 {
        e.u16(o.pkid);
    }
    if version == Version::V5 {
        let mut p = Props::default();
        if let Some(props) = o.props {
            if let Some(f) = props.payload_format {
                p.u8(prop::PAYLOAD_FORMAT, f);
            }
            if let Some(ct) = &props.content_type {
                p.str(prop::CONTENT_TYPE, ct);
            }
            if let Some(rt) = &props.response_topic {
                p.str(prop::RESPONSE_TOPIC, rt);
            }
            if let Some(cd) = &props.correlation {
                p.bin(prop::CORRELATION_DATA, cd);
            }
            for (k, v) in &props.user {
                p.pair(prop::USER_PROPERTY, k, v);
            }
        }
        if let Some(exp) = o.expiry {
            p.u32(prop::MESSAGE_EXPIRY, exp);
        }
        if let Some(a) = o.alias {
            p.u16(prop::TOPIC_ALIAS, a);
        }
        for &id in o.sub_ids {
            p.varint(prop::SUBSCRIPTION_ID, id);
        }
        p.write_to(&mut e);
    }
    e.buf.extend_from_slice(payload);
    let byte1 = 0x30 | (u8::from(o.dup) << 3) | (o.qos << 1) | u8::from(o.retain);
    e.finish(byte1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_v5(flags: u8, props: &[u8], rest: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 60];
        body.push(props.len() as u8);
        body.extend_from_slice(props);
        body.extend_from_slice(rest);
        let mut p = vec![0x10, body.len() as u8];
        p.extend(body);
        p
    }

    fn one(version: Option<Version>, bytes: &[u8]) -> Result<Packet, DecodeError> {
        match decode(version, bytes, 1 << 20)? {
            Decoded::Packet(p, n) => {
                assert_eq!(n, bytes.len());
                Ok(p)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_v4_and_v5() {
        let v4 = [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 2, b'c', b'1'];
        let Packet::Connect(c) = one(None, &v4).unwrap() else { panic!() };
        assert_eq!((c.version, c.client_id.as_str(), c.clean_start, c.keep_alive), (Version::V4, "c1", true, 30));
        // Session expiry 100, receive maximum 5.
        let p = connect_v5(2, &[0x11, 0, 0, 0, 100, 0x21, 0, 5], &[0, 1, b'x']);
        let Packet::Connect(c) = one(None, &p).unwrap() else { panic!() };
        assert_eq!((c.version, c.session_expiry, c.receive_max), (Version::V5, 100, 5));
        // Level 3 is reported, not decoded.
        let mut v3 = v4;
        v3[8] = 3;
        assert_eq!(decode(None, &v3, 1000), Ok(Decoded::UnsupportedVersion(3)));
        // MQTT 3.1: `MQIsdp` at level 3, the 3.1.1 layout otherwise.
        let v31 = [0x10, 16, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 30, 0, 2, b'c', b'1'];
        let Packet::Connect(c) = one(None, &v31).unwrap() else { panic!() };
        assert_eq!((c.version, c.client_id.as_str(), c.keep_alive), (Version::V3, "c1", 30));
        let mut v31_at_4 = v31;
        v31_at_4[10] = 4;
        assert_eq!(decode(None, &v31_at_4, 1000), Ok(Decoded::UnsupportedVersion(4)));
        // No session-present flag in a 3.1 CONNACK.
        assert_eq!(&connack(Version::V3, true, 0, &Props::default())[..], &[0x20, 2, 0, 0]);
    }

    #[test]
    fn rejects_bad_input() {
        // Reserved CONNECT flag.
        let p = connect_v5(3, &[], &[0, 1, b'x']);
        assert_eq!(one(None, &p).unwrap_err().reason, reason::MALFORMED);
        // Anything but CONNECT first.
        assert!(one(None, &[0xC0, 0]).is_err());
        // Second CONNECT.
        assert_eq!(one(Some(Version::V5), &p).unwrap_err().reason, reason::PROTOCOL_ERROR);
        // SUBSCRIBE with wrong flags.
        assert!(one(Some(Version::V4), &[0x80, 6, 0, 1, 0, 1, b'a', 0]).is_err());
        // PUBLISH to a wildcard topic.
        let e = one(Some(Version::V4), &[0x30, 5, 0, 3, b'a', b'/', b'#']).unwrap_err();
        assert_eq!(e.reason, reason::TOPIC_NAME_INVALID);
        // QoS 3.
        assert!(one(Some(Version::V4), &[0x36, 5, 0, 1, b'a', 0, 1]).is_err());
        // Remaining length of five bytes.
        assert!(decode(Some(Version::V4), &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 30).is_err());
        // Too large.
        assert_eq!(decode(Some(Version::V4), &[0x30, 0x80, 0x01], 100).unwrap_err().reason, reason::PACKET_TOO_LARGE);
        // AUTH.
        assert_eq!(one(Some(Version::V5), &[0xF0, 0]).unwrap_err().reason, reason::BAD_AUTH_METHOD);
        // Truncated topic.
        assert!(one(Some(Version::V4), &[0x30, 3, 0, 9, b'a']).is_err());
    }

    #[test]
    fn fixed_lengths_are_enforced() {
        for v in [Version::V4, Version::V5] {
            assert_eq!(one(Some(v), &[0xC0, 1, 0]).unwrap_err().reason, reason::MALFORMED);
            assert_eq!(one(Some(v), &[0xC0, 0]).unwrap(), Packet::PingReq);
        }
        assert_eq!(one(Some(Version::V4), &[0x40, 3, 0, 1, 0]).unwrap_err().reason, reason::MALFORMED);
        assert_eq!(one(Some(Version::V4), &[0xE0, 1, 0]).unwrap_err().reason, reason::MALFORMED);
        // v5 acks carry an optional reason code.
        assert_eq!(one(Some(Version::V5), &[0x40, 3, 0, 1, 0x10]).unwrap(), Packet::PubAck { pkid: 1, reason: 0x10 });
    }

    #[test]
    fn short_v5_forms() {
        assert_eq!(one(Some(Version::V5), &[0xE0, 0]).unwrap(), Packet::Disconnect { reason: 0, session_expiry: None });
        assert_eq!(
            one(Some(Version::V5), &[0xE0, 1, 4]).unwrap(),
            Packet::Disconnect { reason: 4, session_expiry: None }
        );
        assert_eq!(one(Some(Version::V5), &[0x40, 2, 0, 7]).unwrap(), Packet::PubAck { pkid: 7, reason: 0 });
        assert_eq!(one(Some(Version::V5), &[0x62, 2, 0, 7]).unwrap(), Packet::PubRel { pkid: 7, reason: 0 });
        assert_eq!(decode(Some(Version::V5), &[0x62, 2, 0], 100), Ok(Decoded::Incomplete));
    }

    #[test]
    fn publish_round_trip_through_mqttbytes() {
        let props = PubProps {
            content_type: Some("text/plain".into()),
            user: vec![("k".into(), "v".into())],
            ..Default::default()
        };
        let out = PubOut {
            qos: 1,
            retain: true,
            dup: false,
            pkid: 9,
            alias: Some(3),
            send_topic: true,
            sub_ids: &[1, 300],
            props: Some(&props),
            expiry: Some(10),
        };
        let bytes = publish(Version::V5, "a/b", b"hello", &out);
        let mut b = BytesMut::from(&bytes[..]);
        let v5::Packet::Publish(p) = v5::read(&mut b, 1000).unwrap() else { panic!() };
        assert_eq!((p.topic.as_str(), p.pkid, p.retain, &p.payload[..]), ("a/b", 9, true, &b"hello"[..]));
        let pp = p.properties.unwrap();
        assert_eq!(pp.subscription_identifiers, vec![1, 300]);
        assert_eq!((pp.topic_alias, pp.message_expiry_interval), (Some(3), Some(10)));
        assert_eq!(pp.user_properties, vec![("k".to_owned(), "v".to_owned())]);
        let v4b = publish(Version::V4, "a", &[0u8; 200], &PubOut { sub_ids: &[], props: None, ..out });
        let mut b = BytesMut::from(&v4b[..]);
        let v4::Packet::Publish(p) = v4::read(&mut b, 1000).unwrap() else { panic!() };
        assert_eq!(p.payload.len(), 200);
    }

    #[test]
    fn publish_decodes_what_publish_encodes() {
        let props = PubProps {
            payload_format: Some(1),
            expiry: Some(30),
            content_type: Some("text/plain".into()),
            response_topic: Some("re/ply".into()),
            correlation: Some(Bytes::from_static(b"\x00id")),
            user: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        };
        let out = PubOut {
            qos: 2,
            retain: true,
            dup: true,
            pkid: 9,
            alias: Some(3),
            send_topic: true,
            sub_ids: &[],
            props: Some(&props),
            expiry: Some(30),
        };
        let bytes = publish(Version::V5, "a/b", b"hello", &out);
        let Packet::Publish(p) = one(Some(Version::V5), &bytes).unwrap() else { panic!() };
        assert_eq!((p.dup, p.qos, p.retain, p.topic.as_str(), p.pkid), (true, 2, true, "a/b", 9));
        assert_eq!((&p.payload[..], p.alias), (&b"hello"[..], Some(3)));
        assert_eq!(p.props.as_deref(), Some(&props));
        let v4 = publish(Version::V4, "a/b", b"x", &PubOut { props: None, alias: None, expiry: None, ..out });
        let Packet::Publish(p) = one(Some(Version::V4), &v4).unwrap() else { panic!() };
        assert_eq!((p.topic.as_str(), p.pkid, &p.payload[..], p.props), ("a/b", 9, &b"x"[..], None));
    }

    /// Random and mutated input never panics the decoder, and what it
    /// accepts it accepts whole (the consumed length is within the input).
    #[test]
    fn decoder_survives_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let props = PubProps { user: vec![("k".into(), "v".into())], ..Default::default() };
        let out = PubOut {
            qos: 2,
            retain: false,
            dup: true,
            pkid: 3,
            alias: Some(1),
            send_topic: true,
            sub_ids: &[5],
            props: Some(&props),
            expiry: Some(9),
        };
        let seeds: Vec<Vec<u8>> = vec![
            connect_v5(2, &[0x11, 0, 0, 0, 100, 0x21, 0, 5], &[0, 1, b'x']),
            vec![0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 2, b'c', b'1'],
            publish(Version::V5, "a/b", b"payload", &out).to_vec(),
            publish(Version::V4, "a/b", b"payload", &out).to_vec(),
            vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1],
            vec![0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'+', 0x2e],
            vec![0xa2, 5, 0, 1, 0, 1, b'a'],
            vec![0x62, 2, 0, 7],
            vec![0xe0, 5, 0x04, 3, 0x11, 0, 0],
            vec![0x10, 16, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 30, 0, 2, b'c', b'1'],
            vec![0xa2, 10, 0, 1, 2, 0x26, 0, 0, 0, 0, 0, 1, b'a'],
            vec![0xa2, 7, 0, 1, 0, 1, b'a', 0, 0],
            vec![0x40, 9, 0, 1, 0x10, 5, 0x1f, 0, 2, b'o', b'k'],
        ];
        for i in 0..200_000 {
            let mut bytes = seeds[i % seeds.len()].clone();
            match rng.gen_range(0..4) {
                0 => {
                    let n = rng.gen_range(0..bytes.len());
                    bytes[n] = rng.gen();
                }
                1 => bytes.truncate(rng.gen_range(0..bytes.len())),
                2 => {
                    for _ in 0..rng.gen_range(1..4) {
                        let n = rng.gen_range(0..bytes.len());
                        bytes[n] ^= 1 << rng.gen_range(0..8);
                    }
                }
                _ => bytes = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect(),
            }
            for version in [None, Some(Version::V4), Some(Version::V5)] {
                if let Ok(Decoded::Packet(_, n)) = decode(version, &bytes, 1 << 20) {
                    assert!(n <= bytes.len());
                }
            }
        }
    }

    #[test]
    fn acks_encode() {
        assert_eq!(&ack_packet(Version::V4, PUBREL, 5, 0)[..], &[0x62, 2, 0, 5]);
        assert_eq!(&ack_packet(Version::V5, PUBACK, 5, 0x10)[..], &[0x40, 3, 0, 5, 0x10]);
        assert_eq!(&suback(Version::V4, 1, &[0, 0x87])[..], &[0x90, 4, 0, 1, 0, 0x80]);
        assert_eq!(&connack(Version::V4, true, 0, &Props::default())[..], &[0x20, 2, 1, 0]);
        assert_eq!(&disconnect(0x8E, "", usize::MAX)[..], &[0xE0, 2, 0x8E, 0]);
        assert_eq!(disconnect(0x8E, "taken over", 100).len(), 17);
        // Over the client's maximum packet size: the reason string goes.
        assert_eq!(&disconnect(0x8E, "taken over", 16)[..], &[0xE0, 2, 0x8E, 0]);
    }
}
