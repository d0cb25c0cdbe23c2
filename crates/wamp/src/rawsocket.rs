//! WAMP-over-RawSocket (the spec's "RawSocket Transport"): the 4-octet
//! handshake and the 4-octet frame prefix. Pure: bytes in, verdicts out.
//!
//! Handshake: the client sends `0x7F, LLLL SSSS, 0, 0` (the longest message
//! it takes, 2^(9+L) octets, and the serializer); the router echoes the
//! serializer with its own length, or answers `0x7F, EEEE 0000, 0, 0` with
//! an error code and closes. Frames: `RRRR XTTT` (reserved, the 25th length
//! bit, the type: message, PING, PONG) and a 24-bit length.

use crate::message::Serializer;

pub const MAGIC: u8 = 0x7F;
/// The largest message RawSocket can carry: 2^24 octets.
pub const MAX_LENGTH: usize = 1 << 24;

/// Handshake error codes (the upper nibble of the reply's second octet).
pub mod error {
    pub const SERIALIZER_UNSUPPORTED: u8 = 1;
    pub const MAX_LENGTH_UNACCEPTABLE: u8 = 2;
    pub const RESERVED_BITS: u8 = 3;
}

/// What the router answers a client's handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Speak `ser`; never send the client a message over `max_out` octets.
    Accept { ser: Serializer, max_out: usize, reply: [u8; 4] },
    /// Send `reply`, then close.
    Refuse { reply: [u8; 4], why: &'static str },
    /// Not RawSocket at all (first octet is not 0x7F): close.
    NotRawSocket,
}

/// The LENGTH nibble for the longest message this router accepts (at most
/// `max_in`, rounded down to a power of two, between 2^9 and 2^24).
pub fn length_code(max_in: usize) -> u8 {
    let max = max_in.clamp(1 << 9, MAX_LENGTH);
    (usize::BITS - 1 - max.leading_zeros()) as u8 - 9
}

/// The longest message a LENGTH nibble allows.
pub fn length_of(code: u8) -> usize {
    1 << (9 + usize::from(code & 0x0f))
}

/// Answers a client's 4 handshake octets; `max_in` bounds what it may send.
pub fn handshake(req: [u8; 4], max_in: usize) -> Handshake {
    if req[0] != MAGIC {
        return Handshake::NotRawSocket;
    }
    let refuse = |code: u8, why| Handshake::Refuse { reply: [MAGIC, code << 4, 0, 0], why };
    if req[2] != 0 || req[3] != 0 {
        return refuse(error::RESERVED_BITS, "reserved handshake octets are not zero");
    }
    let ser = match req[1] & 0x0f {
        1 => Serializer::Json,
        2 => Serializer::MsgPack,
        3 => Serializer::Cbor,
        _ => return refuse(error::SERIALIZER_UNSUPPORTED, "serializer not supported (JSON 1, MessagePack 2, CBOR 3)"),
    };
    let ours = length_code(max_in);
    Handshake::Accept { ser, max_out: length_of(req[1] >> 4), reply: [MAGIC, (ours << 4) | (req[1] & 0x0f), 0, 0] }
}

/// The SERIALIZER nibble of `ser`.
pub fn serializer_code(ser: Serializer) -> u8 {
    match ser {
        Serializer::Json => 1,
        Serializer::MsgPack => 2,
        Serializer::Cbor => 3,
    }
}

/// A client's handshake: speak `ser`, send it nothing over `max_in`
/// octets (rounded down to a power of two, 2^9 to 2^24).
pub fn client_request(ser: Serializer, max_in: usize) -> [u8; 4] {
    [MAGIC, (length_code(max_in) << 4) | serializer_code(ser), 0, 0]
}

/// A client's reading of the router's answer to [`client_request`]: the
/// longest message the router takes, or why it refused.
pub fn client_reply(ser: Serializer, reply: [u8; 4]) -> Result<usize, String> {
    if reply[0] != MAGIC || reply[2] != 0 || reply[3] != 0 {
        return Err(format!("not a RawSocket handshake reply: {reply:02x?}"));
    }
    match reply[1] & 0x0f {
        0 => Err(match reply[1] >> 4 {
            error::SERIALIZER_UNSUPPORTED => "the router does not speak that serializer".to_owned(),
            error::MAX_LENGTH_UNACCEPTABLE => "the router does not accept that maximum length".to_owned(),
            error::RESERVED_BITS => "the router saw reserved bits set".to_owned(),
            code => format!("the router refused the handshake (error {code})"),
        }),
        s if s == serializer_code(ser) => Ok(length_of(reply[1] >> 4)),
        s => Err(format!("the router answered with serializer {s}, not {}", serializer_code(ser))),
    }
}

/// A frame's transport-level type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    Ping,
    Pong,
}

/// One frame found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    /// The payload is `buf[4..end]`.
    pub end: usize,
}

/// Parses the frame at the start of `buf`: `Ok(None)` if incomplete (the
/// whole frame needs `*need` octets). Errors fail the connection.
pub fn parse(buf: &[u8], max: usize, need: &mut usize) -> Result<Option<Frame>, &'static str> {
    let Some(&[b0, b1, b2, b3]) = buf.first_chunk::<4>() else {
        *need = 4;
        return Ok(None);
    };
    if b0 & 0xf0 != 0 {
        return Err("reserved frame bits set");
    }
    let kind = match b0 & 0x07 {
        0 => Kind::Message,
        1 => Kind::Ping,
        2 => Kind::Pong,
        _ => return Err("reserved frame type"),
    };
    let low = usize::from(b1) << 16 | usize::from(b2) << 8 | usize::from(b3);
    let len = if b0 & 0x08 != 0 {
        if low != 0 {
            return Err("25th length bit set with other length bits");
        }
        MAX_LENGTH
    } else {
        low
    };
    if len > max {
        return Err("message longer than the router's maximum");
    }
    *need = 4 + len;
    if buf.len() < *need {
        return Ok(None);
    }
    Ok(Some(Frame { kind, end: 4 + len }))
}

/// The 4-octet prefix of a frame of `len` octets (at most `MAX_LENGTH`).
pub fn prefix(kind: Kind, len: usize) -> [u8; 4] {
    debug_assert!(len <= MAX_LENGTH);
    let ty = match kind {
        Kind::Message => 0,
        Kind::Ping => 1,
        Kind::Pong => 2,
    };
    if len == MAX_LENGTH {
        return [0x08 | ty, 0, 0, 0];
    }
    [ty, (len >> 16) as u8, (len >> 8) as u8, len as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_side_of_the_handshake() {
        let req = client_request(Serializer::Cbor, 1 << 20);
        assert_eq!(req, [0x7f, 0xb3, 0, 0]);
        let Handshake::Accept { ser, max_out, reply } = handshake(req, 1 << 16) else { panic!() };
        assert_eq!((ser, max_out), (Serializer::Cbor, 1 << 20));
        assert_eq!(client_reply(Serializer::Cbor, reply), Ok(1 << 16));
        assert!(client_reply(Serializer::Json, reply).unwrap_err().contains("serializer 3"));
        let Handshake::Refuse { reply, .. } = handshake([0x7f, 0x09, 0, 0], 1 << 16) else { panic!() };
        assert!(client_reply(Serializer::Json, reply).unwrap_err().contains("does not speak"));
        assert!(client_reply(Serializer::Json, *b"HTTP").is_err());
    }

    #[test]
    fn handshakes() {
        // MessagePack, client takes 2^24: accepted, the router says 2^24 too.
        let Handshake::Accept { ser, max_out, reply } = handshake([0x7f, 0xf2, 0, 0], 16 << 20) else { panic!() };
        assert_eq!((ser, max_out, reply), (Serializer::MsgPack, 1 << 24, [0x7f, 0xf2, 0, 0]));
        // JSON, 512 octets; the router's 1 MiB is code 11.
        let Handshake::Accept { max_out, reply, .. } = handshake([0x7f, 0x01, 0, 0], 1 << 20) else { panic!() };
        assert_eq!((max_out, reply), (512, [0x7f, 0xb1, 0, 0]));
        assert!(matches!(handshake([0x7f, 0x03, 0, 0], 1 << 20), Handshake::Accept { ser: Serializer::Cbor, .. }));
        for (req, code) in [([0x7f, 0x10, 0, 0], 1), ([0x7f, 0x14, 0, 0], 1), ([0x7f, 0x12, 1, 0], 3)] {
            let Handshake::Refuse { reply, .. } = handshake(req, 1 << 20) else { panic!("{req:?}") };
            assert_eq!(reply, [0x7f, code << 4, 0, 0], "{req:02x?}");
        }
        assert_eq!(handshake(*b"GET ", 1 << 20), Handshake::NotRawSocket);
        assert_eq!((length_code(100), length_code(1 << 30), length_code(3000)), (0, 15, 2));
    }

    #[test]
    fn frames() {
        let mut need = 0;
        let mut f = prefix(Kind::Message, 3).to_vec();
        f.extend_from_slice(b"[6]");
        assert_eq!(parse(&f, 100, &mut need), Ok(Some(Frame { kind: Kind::Message, end: 7 })));
        assert_eq!(parse(&f[..5], 100, &mut need), Ok(None));
        assert_eq!(need, 7);
        assert_eq!(parse(&f[..2], 100, &mut need), Ok(None));
        assert_eq!(parse(&[1, 0, 0, 0], 100, &mut need).unwrap().unwrap().kind, Kind::Ping);
        assert!(parse(&[0x10, 0, 0, 0], 100, &mut need).is_err(), "reserved bits");
        assert!(parse(&[3, 0, 0, 0], 100, &mut need).is_err(), "reserved type");
        assert!(parse(&[0, 0, 0, 101], 100, &mut need).is_err(), "over the maximum");
        assert!(parse(&[0x08, 0, 0, 1], MAX_LENGTH, &mut need).is_err(), "25th bit with others");
        assert_eq!(prefix(Kind::Pong, MAX_LENGTH), [0x0a, 0, 0, 0]);
        assert_eq!(prefix(Kind::Message, MAX_LENGTH - 1), [0, 0xff, 0xff, 0xff]);
    }
}
