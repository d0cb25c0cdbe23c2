//! WebSocket framing (RFC 6455), pure. Header parsing is tungstenite's
//! `FrameHeader::parse`; the rest is what a server needs and tungstenite's
//! `WebSocket` type does not offer: unmasking in place inside a caller-owned
//! buffer (no copy per frame) and writing a frame header in front of an
//! already-encoded payload, so one framed EVENT can be shared by many
//! connections.

use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn code(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }
}

/// A complete frame found at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    /// Offset of the (now unmasked) payload in the buffer.
    pub payload_start: usize,
    pub payload_len: usize,
}

impl Frame {
    /// Bytes consumed by this frame, header included.
    pub fn end(&self) -> usize {
        self.payload_start + self.payload_len
    }
}

/// A violation that ends the connection with a close code.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError {
    pub close_code: u16,
    pub reason: &'static str,
}

pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_POLICY: u16 = 1008;

/// Parses the frame at the front of `buf` and unmasks its payload in place.
/// `Ok(None)`: not all of the frame is there yet; `need` tells how many bytes
/// the whole frame takes once its header is known.
pub fn parse(buf: &mut [u8], max_payload: usize, need: &mut usize) -> Result<Option<Frame>, FrameError> {
    let mut cursor = Cursor::new(&buf[..]);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(_) => return Err(FrameError { close_code: CLOSE_PROTOCOL_ERROR, reason: "invalid opcode" }),
    };
    let header_len = cursor.position() as usize;
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(FrameError { close_code: CLOSE_PROTOCOL_ERROR, reason: "reserved bits set" });
    }
    let Some(mask) = header.mask else {
        return Err(FrameError { close_code: CLOSE_PROTOCOL_ERROR, reason: "client frames must be masked" });
    };
    let opcode = match header.opcode {
        OpCode::Data(Data::Continue) => Opcode::Continuation,
        OpCode::Data(Data::Text) => Opcode::Text,
        OpCode::Data(Data::Binary) => Opcode::Binary,
        OpCode::Control(Control::Close) => Opcode::Close,
        OpCode::Control(Control::Ping) => Opcode::Ping,
        OpCode::Control(Control::Pong) => Opcode::Pong,
        _ => return Err(FrameError { close_code: CLOSE_PROTOCOL_ERROR, reason: "invalid opcode" }),
    };
    let control = matches!(opcode, Opcode::Close | Opcode::Ping | Opcode::Pong);
    if control && (len > 125 || !header.is_final) {
        return Err(FrameError { close_code: CLOSE_PROTOCOL_ERROR, reason: "invalid control frame" });
    }
    if len > max_payload as u64 {
        return Err(FrameError { close_code: CLOSE_TOO_BIG, reason: "message too big" });
    }
    let len = len as usize;
    *need = header_len + len;
    if buf.len() < header_len + len {
        return Ok(None);
    }
    unmask(&mut buf[header_len..header_len + len], mask);
    Ok(Some(Frame { fin: header.is_final, opcode, payload_start: header_len, payload_len: len }))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Room a server frame header may need in front of its payload.
pub const MAX_HEADER: usize = 10;

/// Writes an unmasked server frame header for a payload of `len` bytes into
/// the end of `room` (which is `MAX_HEADER` long) and returns where it starts.
pub fn header_into(room: &mut [u8], opcode: Opcode, len: usize) -> usize {
    debug_assert_eq!(room.len(), MAX_HEADER);
    let first = 0x80 | opcode.code();
    if len < 126 {
        room[8] = first;
        room[9] = len as u8;
        8
    } else if len <= u16::MAX as usize {
        room[6] = first;
        room[7] = 126;
        room[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        6
    } else {
        room[0] = first;
        room[1] = 127;
        room[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        0
    }
}

/// A server frame as a new buffer (for control frames and replies).
pub fn frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut room = [0u8; MAX_HEADER];
    let start = header_into(&mut room, opcode, payload.len());
    let mut out = Vec::with_capacity(MAX_HEADER - start + payload.len());
    out.extend_from_slice(&room[start..]);
    out.extend_from_slice(payload);
    out
}

/// A close frame with a status code and a reason (truncated to fit 125 bytes).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len().min(123));
    payload.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(Opcode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn parses_and_unmasks() {
        for size in [0, 5, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut buf = client_frame(2, true, &payload);
            let total = buf.len();
            let mut need = 0;
            // Every strict prefix is incomplete.
            for cut in [0, 1, 2, total - 1] {
                if cut < total {
                    assert_eq!(parse(&mut buf.clone()[..cut], 1 << 20, &mut need), Ok(None));
                }
            }
            let f = parse(&mut buf, 1 << 20, &mut need).unwrap().unwrap();
            assert_eq!(f.opcode, Opcode::Binary);
            assert_eq!(f.end(), total);
            assert_eq!(&buf[f.payload_start..f.end()], &payload[..]);
        }
    }

    #[test]
    fn refuses_bad_frames() {
        let mut need = 0;
        let mut unmasked = vec![0x82, 1, 7];
        assert_eq!(parse(&mut unmasked, 100, &mut need).unwrap_err().close_code, CLOSE_PROTOCOL_ERROR);
        let mut big = client_frame(2, true, &[0; 200]);
        assert_eq!(parse(&mut big, 100, &mut need).unwrap_err().close_code, CLOSE_TOO_BIG);
        let mut reserved_op = client_frame(3, true, b"x");
        assert!(parse(&mut reserved_op, 100, &mut need).is_err());
        let mut rsv = client_frame(2, true, b"x");
        rsv[0] |= 0x40;
        assert!(parse(&mut rsv, 100, &mut need).is_err());
        let mut fragmented_ping = client_frame(9, false, b"x");
        assert!(parse(&mut fragmented_ping, 100, &mut need).is_err());
    }

    #[test]
    fn server_headers() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let f = frame(Opcode::Text, &vec![b'a'; len]);
            let mut cursor = Cursor::new(&f[..]);
            let (h, l) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(h.is_final && h.mask.is_none());
            assert_eq!(l as usize, len);
            assert_eq!(cursor.position() as usize + len, f.len());
        }
        let c = close_frame(1000, &"é".repeat(100));
        assert!(c.len() <= 127);
    }
}
