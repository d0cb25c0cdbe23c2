//! WebSocket client plumbing: URL parsing, the opening handshake (blocking,
//! done once per connection before the load starts) and RFC 6455 framing
//! (client frames are masked, server frames are parsed in place).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BIN: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

#[derive(Clone, Debug)]
pub struct WsUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub addr: SocketAddr,
}

pub fn parse_url(url: &str) -> Result<WsUrl, String> {
    let rest = if let Some(r) = url.strip_prefix("ws://") {
        r
    } else if url.starts_with("wss://") {
        return Err("wss:// (TLS) is not supported; use ws://".into());
    } else {
        return Err(format!("URL must start with ws://, got {url}"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port, addr) = resolve(hostport, 80, url)?;
    Ok(WsUrl { host: host.to_string(), port, path: path.to_string(), addr })
}

/// Splits `HOST[:PORT]` (IPv6 in brackets) and resolves it; `url` is for
/// error messages.
pub fn resolve<'a>(hostport: &'a str, default_port: u16, url: &str) -> Result<(&'a str, u16, SocketAddr), String> {
    let (host, port) = match hostport.rfind(':') {
        Some(i) if !hostport.ends_with(']') => {
            let port = hostport[i + 1..].parse::<u16>().map_err(|e| format!("bad port in {url}: {e}"))?;
            (&hostport[..i], port)
        }
        _ => (hostport, default_port),
    };
    if host.is_empty() {
        return Err(format!("no host in {url}"));
    }
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    Ok((host, port, addr))
}

/// Connects and performs the WebSocket upgrade requesting `subprotocol`.
/// Returns the (blocking) stream and any bytes received after the response
/// header.
pub fn connect(url: &WsUrl, subprotocol: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s = TcpStream::connect_timeout(&url.addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {}: {e}", url.addr))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let key = tungstenite::handshake::client::generate_key();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {subprotocol}\r\nUser-Agent: fennec-load\r\n\r\n",
        url.path, url.host, url.port
    );
    s.write_all(req.as_bytes()).map_err(|e| format!("handshake write to {} failed: {e}", url.addr))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| format!("handshake read from {} failed: {e}", url.addr))?;
        if n == 0 {
            return Err(format!("{} closed the connection during the WebSocket handshake", url.addr));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Partial) => {
                if buf.len() > 64 * 1024 {
                    return Err("handshake response too large".into());
                }
                continue;
            }
            Ok(httparse::Status::Complete(hlen)) => {
                let code = resp.code.unwrap_or(0);
                if code != 101 {
                    return Err(format!(
                        "WebSocket upgrade rejected by {}: HTTP {} {}",
                        url.addr,
                        code,
                        resp.reason.unwrap_or("")
                    ));
                }
                let hdr = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let expect = tungstenite::handshake::derive_accept_key(key.as_bytes());
                if hdr("Sec-WebSocket-Accept").as_deref() != Some(expect.as_str()) {
                    return Err("bad Sec-WebSocket-Accept in handshake response".into());
                }
                match hdr("Sec-WebSocket-Protocol") {
                    Some(p) if p == subprotocol => {}
                    Some(p) => return Err(format!("router chose subprotocol {p:?}, we asked for {subprotocol}")),
                    None => {
                        return Err(format!(
                            "router did not accept subprotocol {subprotocol} \
                             (no Sec-WebSocket-Protocol in response)"
                        ))
                    }
                }
                let rest = buf[hlen..].to_vec();
                return Ok((s, rest));
            }
            Err(e) => return Err(format!("bad handshake response: {e}")),
        }
    }
}

/// Appends one masked client frame (FIN set) with `payload` to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    let n = payload.len();
    out.reserve(n + 14);
    out.push(0x80 | opcode);
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `data` with the repeating 4-byte `mask`, 8 bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ m8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Payload range within the buffer passed to `parse_frame`.
    pub start: usize,
    pub end: usize,
}

/// Parses one frame at the beginning of `buf` (unmasking in place when the
/// peer masked it). Returns `Ok(None)` when more bytes are needed.
pub fn parse_frame(buf: &mut [u8]) -> Result<Option<Frame>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err("WebSocket frame with RSV bits set (extension not negotiated)".into());
    }
    let masked = b1 & 0x80 != 0;
    let mut len = (b1 & 0x7f) as u64;
    let mut pos = 2usize;
    if len == 126 {
        if buf.len() < 4 {
            return Ok(None);
        }
        len = u16::from_be_bytes([buf[2], buf[3]]) as u64;
        pos = 4;
    } else if len == 127 {
        if buf.len() < 10 {
            return Ok(None);
        }
        len = u64::from_be_bytes(buf[2..10].try_into().unwrap());
        pos = 10;
    }
    if len > (1 << 31) {
        return Err(format!("WebSocket frame too large: {len} bytes"));
    }
    let mut mask = [0u8; 4];
    if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        mask.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
    }
    let end = pos + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    if masked {
        apply_mask(&mut buf[pos..end], mask);
    }
    Ok(Some(Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, start: pos, end }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip() {
        for n in [0usize, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            write_frame(&mut out, OP_BIN, &payload, [1, 2, 3, 4]);
            let f = parse_frame(&mut out).unwrap().unwrap();
            assert!(f.fin);
            assert_eq!(f.opcode, OP_BIN);
            assert_eq!(&out[f.start..f.end], &payload[..]);
            assert_eq!(f.end, out.len());
            // partial
            let l = out.len();
            assert!(parse_frame(&mut out[..l - 1]).unwrap().is_none());
        }
    }

    #[test]
    fn url() {
        let u = parse_url("ws://127.0.0.1:9000/ws").unwrap();
        assert_eq!(u.port, 9000);
        assert_eq!(u.path, "/ws");
        let u = parse_url("ws://127.0.0.1").unwrap();
        assert_eq!(u.port, 80);
        assert_eq!(u.path, "/");
        assert!(parse_url("http://x").is_err());
    }
}
