//! The byte streams a session runs over, behind one face: WebSocket
//! (`ws://`, `wss://`) or RawSocket (`tcp://`, `tcps://`), each over plain
//! TCP or rustls. The same code serves the blocking join (a socket with a
//! read timeout) and the connection's non-blocking loop (a socket that
//! says `WouldBlock`): [`Transport::recv`] answers [`Recv::Empty`] for
//! both.

use crate::error::{Error, Result};
use fennec_wamp::message::Serializer;
use fennec_wamp::rawsocket::{self, Kind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// The longest message the client takes from the router (RawSocket tells
/// the router in its handshake; the WebSocket reader enforces it).
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// How to check the router's certificate on `wss://` and `tcps://`, and
/// the client's own certificate if the router asks for one (authmethod
/// `tls`).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// PEM file of the CAs to trust in place of the built-in Mozilla roots
    /// (`webpki-roots`), for a router with a private CA.
    pub ca_file: Option<PathBuf>,
    /// The client's certificate chain and private key (PEM files).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the certificate must carry, when it is not the URL's host.
    pub server_name: Option<String>,
}

/// Where to connect, from a URL.
struct Target {
    tls: bool,
    websocket: bool,
    host: String,
    port: u16,
}

fn target(url: &str) -> Result<Target> {
    let bad = |why: &str| Error::Protocol(format!("{url}: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL"))?;
    let (tls, websocket, default_port) = match scheme {
        "ws" => (false, true, 80),
        "wss" => (true, true, 443),
        "tcp" | "rs" => (false, false, 0),
        "tcps" | "rss" => (true, false, 0),
        _ => return Err(bad("the scheme must be ws, wss, tcp (RawSocket) or tcps (RawSocket over TLS)")),
    };
    let authority = rest.split('/').next().unwrap_or("");
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').ok_or_else(|| bad("an unclosed [IPv6 address]"))?,
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        },
    };
    let port = match port.strip_prefix(':').unwrap_or(port) {
        "" if default_port != 0 => default_port,
        "" => return Err(bad("a RawSocket URL needs a port")),
        p => p.parse::<u16>().map_err(|_| bad("the port is not a number"))?,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Target { tls, websocket, host: host.to_owned(), port })
}

/// TCP, or TLS over TCP.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn tls_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| Error::Tls(format!("{}: {e}", p.display())));
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            for cert in rustls_pemfile::certs(&mut &read(path)?[..]) {
                let cert = cert.map_err(|e| Error::Tls(format!("{}: not a PEM certificate: {e}", path.display())))?;
                roots.add(cert).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Tls(format!("{}: no certificate", path.display())));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert)?[..])
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Tls(format!("{}: not a PEM certificate chain: {e}", cert.display())))?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(key)?[..])
                .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?
                .ok_or_else(|| Error::Tls(format!("{}: no private key", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| Error::Tls(e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}

/// A WebSocket or a RawSocket, with the serializer it speaks.
pub(crate) struct Transport {
    pub ser: Serializer,
    kind: Framing,
}

enum Framing {
    WebSocket(Box<WebSocket<Stream>>),
    RawSocket(Raw),
}

/// RawSocket's framing over a stream: what is read and not yet taken, and
/// what is written and not yet sent.
struct Raw {
    stream: Stream,
    /// Octets read; frames start at `start`.
    inbuf: Vec<u8>,
    start: usize,
    /// Octets not yet written, from `sent` on.
    outbuf: Vec<u8>,
    sent: usize,
    /// The longest message the router takes.
    max_out: usize,
}

/// What one read found.
pub(crate) enum Recv {
    Message(Vec<u8>),
    /// Nothing yet (the socket would block, or its read timeout passed).
    Empty,
    /// The connection is over.
    Closed,
}

impl Transport {
    /// Connects to `url` and sets up its framing (TLS handshake, HTTP
    /// upgrade or RawSocket handshake), blocking, within `timeout`; the
    /// socket is left blocking with `timeout` as its read timeout.
    pub(crate) fn connect(url: &str, ser: Serializer, tls: &Tls, timeout: Duration) -> Result<Transport> {
        let t = target(url)?;
        let addr = (t.host.as_str(), t.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::Protocol(format!("{}: no address", t.host)))?;
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let mut stream = if t.tls {
            let name = tls.server_name.clone().unwrap_or_else(|| t.host.clone());
            let name = ServerName::try_from(name).map_err(|e| Error::Tls(e.to_string()))?;
            let conn = rustls::ClientConnection::new(tls_config(tls)?, name).map_err(|e| Error::Tls(e.to_string()))?;
            Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
        } else {
            Stream::Plain(tcp)
        };
        if let Stream::Tls(s) = &mut stream {
            // Handshake now, so a certificate problem is a TLS error.
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock).map_err(|e| Error::Tls(e.to_string()))?;
            }
        }
        let kind = if t.websocket {
            let mut req = url.into_client_request().map_err(|e| Error::WebSocket(e.to_string()))?;
            let protocol = ser.subprotocol().parse().map_err(|_| Error::Protocol("subprotocol".into()))?;
            req.headers_mut().insert("Sec-WebSocket-Protocol", protocol);
            let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE));
            let (ws, resp) = tungstenite::client::client_with_config(req, stream, Some(config))
                .map_err(|e| Error::WebSocket(e.to_string()))?;
            let chosen = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
            if chosen != Some(ser.subprotocol()) {
                return Err(Error::Protocol(format!(
                    "the router chose subprotocol {chosen:?}, not {}",
                    ser.subprotocol()
                )));
            }
            Framing::WebSocket(Box::new(ws))
        } else {
            stream.write_all(&rawsocket::client_request(ser, MAX_MESSAGE))?;
            let mut reply = [0u8; 4];
            stream.read_exact(&mut reply)?;
            let max_out = rawsocket::client_reply(ser, reply).map_err(Error::Protocol)?;
            Framing::RawSocket(Raw { stream, inbuf: Vec::new(), start: 0, outbuf: Vec::new(), sent: 0, max_out })
        };
        Ok(Transport { ser, kind })
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        match &self.kind {
            Framing::WebSocket(ws) => ws.get_ref().tcp(),
            Framing::RawSocket(r) => r.stream.tcp(),
        }
    }

    /// Queues one message and starts sending it; `Err` if the connection
    /// is over, or `wamp.error.payload_size_exceeded` (as
    /// `Error::Application`, nothing sent) if the message is longer than
    /// the router takes.
    pub(crate) fn send(&mut self, bytes: Vec<u8>) -> Result<()> {
        match &mut self.kind {
            Framing::WebSocket(ws) => {
                let frame = match self.ser {
                    Serializer::Json => {
                        Message::text(String::from_utf8(bytes).map_err(|e| Error::Protocol(e.to_string()))?)
                    }
                    _ => Message::binary(bytes),
                };
                match ws.write(frame) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
                    Err(e) => return Err(Error::WebSocket(e.to_string())),
                }
            }
            Framing::RawSocket(r) => {
                if bytes.len() > r.max_out {
                    let why = format!("a message of {} octets: the router takes {} at most", bytes.len(), r.max_out);
                    return Err(Error::Application {
                        uri: "wamp.error.payload_size_exceeded".into(),
                        args: vec![fennec_wamp::value::Value::Str(why)],
                        kwargs: Vec::new(),
                    });
                }
                r.outbuf.extend_from_slice(&rawsocket::prefix(Kind::Message, bytes.len()));
                r.outbuf.extend_from_slice(&bytes);
            }
        }
        self.flush().map(|_| ())
    }

    /// Writes what is queued: `Ok(true)` when all of it went, `Ok(false)`
    /// when the socket would block, `Err` when the connection is over.
    pub(crate) fn flush(&mut self) -> Result<bool> {
        match &mut self.kind {
            Framing::WebSocket(ws) => match ws.flush() {
                Ok(()) => Ok(true),
                Err(tungstenite::Error::Io(e)) if would_block(&e) => Ok(false),
                Err(e) => Err(Error::WebSocket(e.to_string())),
            },
            Framing::RawSocket(r) => {
                while r.sent < r.outbuf.len() {
                    match r.stream.write(&r.outbuf[r.sent..]) {
                        Ok(0) => return Err(Error::Closed),
                        Ok(n) => r.sent += n,
                        Err(e) if would_block(&e) => return Ok(false),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::Io(e)),
                    }
                }
                r.outbuf.clear();
                r.sent = 0;
                match r.stream.flush() {
                    Ok(()) => Ok(true),
                    Err(e) if would_block(&e) => Ok(false),
                    Err(e) => Err(Error::Io(e)),
                }
            }
        }
    }

    /// The next message, if one has come.
    pub(crate) fn recv(&mut self) -> Recv {
        match &mut self.kind {
            Framing::WebSocket(ws) => loop {
                return match ws.read() {
                    Ok(Message::Text(t)) => Recv::Message(t.as_bytes().to_vec()),
                    Ok(Message::Binary(b)) => Recv::Message(b.to_vec()),
                    Ok(Message::Close(_)) => Recv::Closed,
                    // Pings are answered by tungstenite (on the next flush).
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e)) if would_block(&e) => Recv::Empty,
                    Err(_) => Recv::Closed,
                };
            },
            Framing::RawSocket(r) => r.recv(),
        }
    }

    /// Starts closing the connection (a WebSocket close; RawSocket has no
    /// closing handshake: the socket's end says it).
    pub(crate) fn close(&mut self) {
        match &mut self.kind {
            Framing::WebSocket(ws) => drop(ws.close(None)),
            Framing::RawSocket(r) => drop(r.stream.tcp().shutdown(std::net::Shutdown::Write)),
        }
        let _ = self.flush();
    }
}

impl Raw {
    fn recv(&mut self) -> Recv {
        loop {
            let mut need = 0;
            match rawsocket::parse(&self.inbuf[self.start..], MAX_MESSAGE, &mut need) {
                Err(_) => return Recv::Closed,
                Ok(Some(frame)) => {
                    let body = self.start + 4..self.start + frame.end;
                    self.start += frame.end;
                    match frame.kind {
                        Kind::Message => return Recv::Message(self.inbuf[body].to_vec()),
                        Kind::Ping => {
                            let payload = self.inbuf[body].to_vec();
                            self.outbuf.extend_from_slice(&rawsocket::prefix(Kind::Pong, payload.len()));
                            self.outbuf.extend_from_slice(&payload);
                        }
                        Kind::Pong => {}
                    }
                    continue;
                }
                Ok(None) => {}
            }
            // Keep the unread tail only.
            if self.start > 0 {
                self.inbuf.drain(..self.start);
                self.start = 0;
            }
            let have = self.inbuf.len();
            let more = need.saturating_sub(have).clamp(4096, 64 * 1024);
            self.inbuf.resize(have + more, 0);
            match self.stream.read(&mut self.inbuf[have..]) {
                Ok(0) => {
                    self.inbuf.truncate(have);
                    return Recv::Closed;
                }
                Ok(n) => self.inbuf.truncate(have + n),
                Err(e) => {
                    self.inbuf.truncate(have);
                    if e.kind() == ErrorKind::Interrupted {
                        continue;
                    }
                    return if would_block(&e) { Recv::Empty } else { Recv::Closed };
                }
            }
        }
    }
}

/// A non-blocking socket with nothing to do, or a blocking one whose
/// timeout passed.
fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = target("wss://example.com/ws").unwrap();
        assert!(t.tls && t.websocket && t.host == "example.com" && t.port == 443);
        let t = target("ws://127.0.0.1:8080/ws").unwrap();
        assert!(!t.tls && t.websocket && t.host == "127.0.0.1" && t.port == 8080);
        let t = target("tcps://[::1]:8081").unwrap();
        assert!(t.tls && !t.websocket && t.host == "::1" && t.port == 8081);
        assert!(target("tcp://host").is_err(), "RawSocket has no default port");
        assert!(target("http://host").is_err());
        assert!(target("ws://:80").is_err());
        assert!(target("ws://h:port").is_err());
    }
}
