//! The strict pre-check of one whole client packet, run before `mqttbytes`
//! reads it: every field `mqttbytes` reads loosely or not at all. Pure:
//! bytes in, a verdict out. PUBLISH, the packet on the hot path, is not
//! handed to `mqttbytes` at all: `publish` checks and reads it in one pass
//! (one copy of the payload, no second UTF-8 validation).
//!
//! - Every UTF-8 string (client ID, will topic, user name, topic names and
//!   filters, user properties, content type, response topic, reason
//!   string): well-formed UTF-8 (MQTT 1.5.4), no U+0000, and, as Mosquitto
//!   does where the spec allows it ("MAY treat it as malformed"), no control
//!   characters (U+0001..U+001F, U+007F..U+009F) and no non-characters.
//! - v5 properties: only the identifiers the packet may carry (else
//!   malformed, 2.2.2.2), each at most once except User Property (else a
//!   protocol error), and values in range: Payload Format Indicator, Request
//!   Problem / Response Information 0 or 1, Receive Maximum, Maximum Packet
//!   Size and Subscription Identifier not 0, Authentication Data only with a
//!   method.
//! - Reserved bits: subscription options (3.1.1: the 6 high bits; v5: bits 6
//!   and 7, and Retain Handling 3), the 3.1.1 password flag without a user
//!   name.
//! - Nothing after the last field of a CONNECT, SUBSCRIBE option or ack.
//!
use super::codec::{reason, DecodeError, PubProps, Publish, Version};
use bytes::Bytes;

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError { reason: reason::MALFORMED, message: message.into() }
}

fn protocol_error(message: impl Into<String>) -> DecodeError {
    DecodeError { reason: reason::PROTOCOL_ERROR, message: message.into() }
}

/// Checks an MQTT UTF-8 string's bytes.
pub fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    // One pass over the ASCII prefix (topics and client IDs are nearly
    // always all of it); the rest, if any, is decoded and checked per char.
    let ascii = bytes.iter().position(|b| !(0x20..0x7f).contains(b)).unwrap_or(bytes.len());
    if let Some(&b) = bytes.get(ascii).filter(|&&b| b < 0x80) {
        return Err(bad_char(u32::from(b)));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| malformed("string is not valid UTF-8"))?;
    for c in s[ascii..].chars() {
        let c = u32::from(c);
        let control = c < 0x20 || (0x7f..=0x9f).contains(&c);
        let nonchar = (0xfdd0..=0xfdef).contains(&c) || c & 0xfffe == 0xfffe;
        if control || nonchar {
            return Err(bad_char(c));
        }
    }
    Ok(s)
}

fn bad_char(c: u32) -> DecodeError {
    if c == 0 {
        malformed("string holds U+0000")
    } else {
        malformed(format!("string holds U+{c:04X}, which MQTT strings must not"))
    }
}

/// A cursor over a packet body.
struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(malformed(format!("packet ends inside the {what}")));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn varint(&mut self, what: &str) -> Result<u32, DecodeError> {
        let mut n = 0u32;
        for i in 0..4 {
            let b = self.u8(what)?;
            n |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(malformed(format!("{what} longer than 4 bytes")))
    }
    fn bin(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
    fn str(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        utf8(self.bin(what)?)
    }
    fn end(&self, what: &str) -> Result<(), DecodeError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!("{} bytes after the {what}", self.b.len())))
        }
    }
}

/// Where a v5 property block stands, for the identifiers it may hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    Connect,
    Will,
    Publish,
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

/// The value type of a property identifier, and where a client may send it.
fn property(id: u32) -> Option<(Kind, &'static [At])> {
    use At::*;
    use Kind::*;
    const MESSAGE: &[At] = &[Publish, Will];
    Some(match id {
        0x01 => (Byte, MESSAGE),
        0x02 => (Four, MESSAGE),
        0x03 => (Str, MESSAGE),
        0x08 => (Str, MESSAGE),
        0x09 => (Bin, MESSAGE),
        0x0b => (Var, &[Subscribe, Publish]),
        0x11 => (Four, &[Connect, Disconnect]),
        0x15 => (Str, &[Connect]),
        0x16 => (Bin, &[Connect]),
        0x17 => (Byte, &[Connect]),
        0x18 => (Four, &[Will]),
        0x19 => (Byte, &[Connect]),
        0x1c => (Str, &[Disconnect]),
        0x1f => (Str, &[Ack, Disconnect]),
        0x21 => (Two, &[Connect]),
        0x22 => (Two, &[Connect]),
        0x23 => (Two, &[Publish]),
        0x26 => (Pair, &[Connect, Will, Publish, Ack, Subscribe, Unsubscribe, Disconnect]),
        0x27 => (Four, &[Connect]),
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Byte,
    Two,
    Four,
    Var,
    Bin,
    Str,
    Pair,
}

/// A property's value, for the caller that keeps it.
enum Value<'a> {
    Int(u32),
    Bin(&'a [u8]),
    Str(&'a str),
    Pair(&'a str, &'a str),
}

/// Reads and checks one v5 property block; `keep` sees each property.
fn properties<'a>(r: &mut Rd<'a>, at: At, mut keep: impl FnMut(u32, Value<'a>)) -> Result<(), DecodeError> {
    let len = r.varint("property length")? as usize;
    let mut p = Rd { b: r.take(len, "properties")? };
    let mut seen = 0u64;
    while !p.b.is_empty() {
        let id = p.varint("property identifier")?;
        let Some((kind, _)) = property(id).filter(|(_, allowed)| allowed.contains(&at)) else {
            return Err(malformed(format!("property {id:#04x} is not allowed in this packet")));
        };
        let bit = 1u64 << id;
        if id != 0x26 && seen & bit != 0 {
            return Err(protocol_error(format!("property {id:#04x} given twice")));
        }
        seen |= bit;
        let value = match kind {
            Kind::Byte => u32::from(p.u8("property")?),
            Kind::Two => u32::from(p.u16("property")?),
            Kind::Four => p.u32("property")?,
            Kind::Var => p.varint("property")?,
            Kind::Bin => {
                keep(id, Value::Bin(p.bin("property")?));
                continue;
            }
            Kind::Str => {
                keep(id, Value::Str(p.str("property")?));
                continue;
            }
            Kind::Pair => {
                let k = p.str("user property name")?;
                keep(id, Value::Pair(k, p.str("user property value")?));
                continue;
            }
        };
        match id {
            0x01 | 0x17 | 0x19 if value > 1 => {
                return Err(protocol_error(format!("property {id:#04x} is {value}, not 0 or 1")))
            }
            0x21 | 0x27 if value == 0 => return Err(protocol_error(format!("property {id:#04x} is 0"))),
            0x0b if value == 0 => return Err(protocol_error("subscription identifier 0")),
            _ => {}
        }
        keep(id, Value::Int(value));
    }
    if seen & (1 << 0x16) != 0 && seen & (1 << 0x15) == 0 {
        return Err(protocol_error("authentication data without an authentication method"));
    }
    Ok(())
}

/// Checks and reads a client PUBLISH (`flags`: the fixed header's low bits).
pub fn publish(version: Version, flags: u8, body: &[u8]) -> Result<Publish, DecodeError> {
    let qos = (flags >> 1) & 3;
    let dup = flags & 0x08 != 0;
    if qos == 3 {
        return Err(malformed("PUBLISH at QoS 3"));
    }
    if qos == 0 && dup {
        return Err(malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let mut r = Rd { b: body };
    let topic = r.str("topic name")?;
    check_topic_name(topic)?;
    let pkid = if qos > 0 { r.u16("packet identifier")? } else { 0 };
    if qos > 0 && pkid == 0 {
        return Err(protocol_error("packet identifier 0"));
    }
    let (mut alias, mut props, mut sub_id) = (None, PubProps::default(), false);
    if version == Version::V5 {
        properties(&mut r, At::Publish, |id, v| match (id, v) {
            (0x01, Value::Int(n)) => props.payload_format = Some(n as u8),
            (0x02, Value::Int(n)) => props.expiry = Some(n),
            (0x03, Value::Str(s)) => props.content_type = Some(s.to_owned()),
            (0x08, Value::Str(s)) => props.response_topic = Some(s.to_owned()),
            (0x09, Value::Bin(b)) => props.correlation = Some(Bytes::copy_from_slice(b)),
            (0x0b, _) => sub_id = true,
            (0x23, Value::Int(n)) => alias = Some(n as u16),
            (0x26, Value::Pair(k, v)) => props.user.push((k.to_owned(), v.to_owned())),
            _ => {}
        })?;
        if sub_id {
            return Err(protocol_error("a client PUBLISH carries a subscription identifier"));
        }
        if alias == Some(0) {
            return Err(DecodeError { reason: reason::TOPIC_ALIAS_INVALID, message: "topic alias 0".into() });
        }
        if let Some(t) = &props.response_topic {
            check_topic_name(t)?;
        }
        if topic.is_empty() && alias.is_none() {
            return Err(protocol_error("empty topic name without a topic alias"));
        }
    } else if topic.is_empty() {
        return Err(protocol_error("empty topic name"));
    }
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic: topic.to_owned(),
        pkid,
        payload: Bytes::copy_from_slice(r.b),
        alias,
        props: (!props.is_empty()).then(|| Box::new(props)),
    })
}

/// Wildcards are for filters.
fn check_topic_name(topic: &str) -> Result<(), DecodeError> {
    if topic.contains(['+', '#']) {
        return Err(DecodeError {
            reason: reason::TOPIC_NAME_INVALID,
            message: format!("topic name '{topic}' holds a wildcard"),
        });
    }
    Ok(())
}

/// Checks one client packet other than PUBLISH (`publish` reads that):
/// `kind` and `flags` from the fixed header (its flags are already
/// checked), `body` the rest of the packet. A 3.1 CONNECT is checked as the
/// 3.1.1 one it is rewritten to.
pub fn packet(version: Version, kind: u8, body: &[u8]) -> Result<(), DecodeError> {
    let v5 = version == Version::V5;
    let mut r = Rd { b: body };
    match kind {
        1 => {
            r.str("protocol name")?;
            r.u8("protocol level")?;
            let cf = r.u8("connect flags")?;
            r.u16("keep alive")?;
            if v5 {
                properties(&mut r, At::Connect, |_, _| {})?;
            } else if cf & 0x40 != 0 && cf & 0x80 == 0 {
                return Err(malformed("password flag without a user name"));
            }
            r.str("client identifier")?;
            if cf & 0x04 != 0 {
                if v5 {
                    properties(&mut r, At::Will, |_, _| {})?;
                }
                r.str("will topic")?;
                r.bin("will payload")?;
            }
            if cf & 0x80 != 0 {
                r.str("user name")?;
            }
            if cf & 0x40 != 0 {
                r.bin("password")?;
            }
            r.end("CONNECT payload")
        }
        4..=7 => {
            r.u16("packet identifier")?;
            if v5 && !r.b.is_empty() {
                r.u8("reason code")?;
                if !r.b.is_empty() {
                    properties(&mut r, At::Ack, |_, _| {})?;
                }
            }
            r.end("acknowledgement")
        }
        8 => {
            r.u16("packet identifier")?;
            if v5 {
                properties(&mut r, At::Subscribe, |_, _| {})?;
            }
            while !r.b.is_empty() {
                r.str("topic filter")?;
                let o = r.u8("subscription options")?;
                // 3.1.1: malformed (3.8.3.1); 5: "a Protocol Error" (3.8.3.1).
                if o & 3 == 3 && !v5 {
                    return Err(malformed("subscription at QoS 3"));
                }
                if o & 3 == 3 {
                    return Err(protocol_error("subscription at QoS 3"));
                }
                if !v5 && o & 0xfc != 0 {
                    return Err(malformed("reserved bits set in a requested QoS"));
                }
                if v5 && o & 0xc0 != 0 {
                    return Err(malformed("reserved subscription option bits set"));
                }
                if v5 && (o >> 4) & 3 == 3 {
                    return Err(protocol_error("retain handling 3"));
                }
            }
            Ok(())
        }
        10 => {
            r.u16("packet identifier")?;
            if v5 {
                properties(&mut r, At::Unsubscribe, |_, _| {})?;
            }
            while !r.b.is_empty() {
                r.str("topic filter")?;
            }
            Ok(())
        }
        14 if v5 && !r.b.is_empty() => {
            r.u8("reason code")?;
            if !r.b.is_empty() {
                properties(&mut r, At::Disconnect, |_, _| {})?;
            }
            r.end("DISCONNECT")
        }
        _ => Ok(()),
    }
}

/// The filters of an UNSUBSCRIBE body that `packet` accepted.
pub fn unsubscribe_filters(version: Version, body: &[u8]) -> Vec<String> {
    let mut r = Rd { b: &body[2..] };
    if version == Version::V5 {
        let len = r.varint("property length").expect("checked") as usize;
        r.take(len, "properties").expect("checked");
    }
    let mut filters = Vec::new();
    while !r.b.is_empty() {
        filters.push(r.str("topic filter").expect("checked").to_owned());
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(version: Version, kind: u8, flags: u8, body: &[u8]) -> u8 {
        let r = if kind == 3 { publish(version, flags, body).map(|_| ()) } else { packet(version, kind, body) };
        r.map_or_else(|e| e.reason, |()| 0)
    }

    #[test]
    fn strings() {
        assert!(utf8(b"a/b").is_ok());
        assert!(utf8("é/ü/€/𝄞".as_bytes()).is_ok());
        for bad in [&b"a\0b"[..], b"a\x01", b"\x7f", b"a\xc3\x28", b"\xed\xa0\x80", b"\xc0\x80"] {
            assert_eq!(utf8(bad).unwrap_err().reason, reason::MALFORMED, "{bad:02x?}");
        }
        for bad in ["\u{85}", "\u{fdd0}", "\u{ffff}", "\u{1fffe}"] {
            assert!(utf8(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v5_properties() {
        let v5 = Version::V5;
        // PUBLISH topic "a", then properties.
        let publish = |props: &[u8]| {
            let mut b = vec![0, 1, b'a', props.len() as u8];
            b.extend_from_slice(props);
            b.push(b'x');
            code(v5, 3, 0, &b)
        };
        assert_eq!(publish(&[0x01, 1]), 0);
        assert_eq!(publish(&[0x01, 2]), reason::PROTOCOL_ERROR, "payload format 2");
        assert_eq!(publish(&[0x01, 0, 0x01, 0]), reason::PROTOCOL_ERROR, "duplicate");
        assert_eq!(publish(&[0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 0]), 0, "user properties repeat");
        assert_eq!(publish(&[0x11, 0, 0, 0, 1]), reason::MALFORMED, "session expiry in PUBLISH");
        assert_eq!(publish(&[0x7f, 0]), reason::MALFORMED, "unknown identifier");
        assert_eq!(publish(&[0x03, 0, 2, b'a', 0]), reason::MALFORMED, "NUL in content type");
        assert_eq!(publish(&[0x02, 0, 0]), reason::MALFORMED, "truncated value");
        // CONNECT: name, level 5, flags (clean), keep-alive, properties, client id.
        let connect = |props: &[u8]| {
            let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, props.len() as u8];
            b.extend_from_slice(props);
            b.extend_from_slice(&[0, 1, b'c']);
            code(v5, 1, 0, &b)
        };
        assert_eq!(connect(&[0x21, 0, 1, 0x27, 0, 0, 0, 20]), 0);
        assert_eq!(connect(&[0x21, 0, 0]), reason::PROTOCOL_ERROR, "receive maximum 0");
        assert_eq!(connect(&[0x27, 0, 0, 0, 0]), reason::PROTOCOL_ERROR, "maximum packet size 0");
        assert_eq!(connect(&[0x17, 2]), reason::PROTOCOL_ERROR, "request problem information 2");
        assert_eq!(connect(&[0x16, 0, 0]), reason::PROTOCOL_ERROR, "authentication data alone");
        assert_eq!(connect(&[0x23, 0, 1]), reason::MALFORMED, "topic alias in CONNECT");
        // SUBSCRIBE: subscription identifier 0, options.
        assert_eq!(code(v5, 8, 2, &[0, 1, 2, 0x0b, 0, 0, 1, b'a', 0]), reason::PROTOCOL_ERROR);
        assert_eq!(code(v5, 8, 2, &[0, 1, 0, 0, 1, b'a', 0x30]), reason::PROTOCOL_ERROR, "retain handling 3");
        assert_eq!(code(v5, 8, 2, &[0, 1, 0, 0, 1, b'a', 0x40]), reason::MALFORMED, "reserved bit");
        assert_eq!(code(v5, 8, 2, &[0, 1, 0, 0, 1, b'a', 0x2e]), 0);
    }

    #[test]
    fn v4_fields() {
        let v4 = Version::V4;
        assert_eq!(code(v4, 8, 2, &[0, 1, 0, 1, b'a', 0x04]), reason::MALFORMED, "reserved QoS bits");
        assert_eq!(code(v4, 8, 2, &[0, 1, 0, 2, b'a', 0, 1]), reason::MALFORMED, "NUL in a filter");
        assert_eq!(code(v4, 10, 2, &[0, 1, 0, 2, b'a', 0xff]), reason::MALFORMED, "not UTF-8");
        // Password without a user name; trailing bytes after the client ID.
        let connect = |flags: u8, rest: &[u8]| {
            let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 0, 0, 1, b'c'];
            b.extend_from_slice(rest);
            code(v4, 1, 0, &b)
        };
        assert_eq!(connect(0x02, &[]), 0);
        assert_eq!(connect(0x42, &[0, 0]), reason::MALFORMED);
        assert_eq!(connect(0xc2, &[0, 1, b'u', 0, 0]), 0);
        assert_eq!(connect(0x02, &[0]), reason::MALFORMED);
        assert_eq!(connect(0x82, &[0, 1, 0x01]), reason::MALFORMED, "control character in the user name");
    }
}
