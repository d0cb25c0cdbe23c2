//! The server side of the WebSocket opening handshake, pure: request bytes
//! in, a decision and the response bytes out. `httparse` parses the request;
//! tungstenite derives the accept key. (tungstenite's own server handshake
//! wants to own a stream and block or retry on it; here the event loop owns
//! the socket, so we only feed it bytes.)

use tungstenite::handshake::derive_accept_key;

/// Largest request head accepted; bigger gets 431.
pub const MAX_REQUEST_HEAD: usize = 8192;

/// A WebSocket endpoint: a path and the subprotocols it speaks, in order of
/// preference when the client offers several.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub path: String,
    pub protocols: &'static [&'static str],
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The head is not complete yet.
    Incomplete,
    /// Switch to WebSocket: send `response`, the first `consumed` bytes were
    /// the request; anything after them is already WebSocket data.
    Upgrade { endpoint: usize, protocol: &'static str, response: Vec<u8>, consumed: usize },
    /// Send `response` and close.
    Reject { response: Vec<u8> },
}

fn reject(status: &str, extra_headers: &str, body: &str) -> Outcome {
    let response = format!(
        "HTTP/1.1 {status}\r\nServer: fennec\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    Outcome::Reject { response: response.into_bytes() }
}

fn header_has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value).map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))).unwrap_or(false)
}

/// Looks at the bytes received so far on a new connection.
pub fn handle(buf: &[u8], endpoints: &[Endpoint]) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_HEAD => {
            return reject("431 Request Header Fields Too Large", "", "request head too large\n")
        }
        Ok(httparse::Status::Partial) => return Outcome::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return reject("431 Request Header Fields Too Large", "", "too many headers\n")
        }
        Err(e) => return reject("400 Bad Request", "", &format!("malformed HTTP request: {e}\n")),
    };
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let Some(index) = endpoints.iter().position(|e| e.path == path) else {
        return reject("404 Not Found", "", &format!("no endpoint at {path}\n"));
    };
    let endpoint = &endpoints[index];
    let wanted = endpoint.protocols.join(", ");
    if req.method != Some("GET") {
        return reject("405 Method Not Allowed", "Allow: GET\r\n", "WebSocket endpoints take GET only\n");
    }
    let headers: &[httparse::Header] = req.headers;
    let find = |name: &'static str| headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
    let upgrade = find("upgrade").any(|h| header_has_token(h.value, "websocket"));
    let connection = find("connection").any(|h| header_has_token(h.value, "upgrade"));
    if !upgrade || !connection {
        return reject(
            "426 Upgrade Required",
            "Upgrade: websocket\r\n",
            &format!("this is a WebSocket endpoint: connect with a client speaking {wanted}\n"),
        );
    }
    if !find("sec-websocket-version").any(|h| h.value == b"13") {
        return reject("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n", "WebSocket version 13 only\n");
    }
    let Some(key) = find("sec-websocket-key").next() else {
        return reject("400 Bad Request", "", "missing Sec-WebSocket-Key\n");
    };
    let offered: Vec<&str> = find("sec-websocket-protocol")
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(protocol) = offered.iter().find_map(|o| endpoint.protocols.iter().find(|p| *p == o)) else {
        return reject(
            "400 Bad Request",
            "",
            &format!("no supported WebSocket subprotocol offered: this endpoint speaks {wanted}\n"),
        );
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nServer: fennec\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
        derive_accept_key(key.value)
    );
    Outcome::Upgrade { endpoint: index, protocol, response: response.into_bytes(), consumed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Vec<Endpoint> {
        vec![Endpoint { path: "/ws".into(), protocols: &["wamp.2.msgpack", "wamp.2.json"] }]
    }

    fn request(path: &str, protocols: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
        )
    }

    fn status(o: &Outcome) -> String {
        let bytes = match o {
            Outcome::Upgrade { response, .. } | Outcome::Reject { response } => response,
            Outcome::Incomplete => return "incomplete".into(),
        };
        String::from_utf8_lossy(&bytes[9..12]).into_owned()
    }

    #[test]
    fn upgrades_with_client_preference() {
        let mut req = request("/ws?x=1", "foo, wamp.2.json, wamp.2.msgpack").into_bytes();
        let head_len = req.len();
        req.extend_from_slice(b"\x81");
        match handle(&req, &endpoints()) {
            Outcome::Upgrade { protocol, response, consumed, endpoint } => {
                assert_eq!((protocol, consumed, endpoint), ("wamp.2.json", head_len, 0));
                let text = String::from_utf8(response).unwrap();
                assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejections() {
        let eps = endpoints();
        assert_eq!(handle(b"GET /ws HTTP/1.1\r\nHost: x\r\n", &eps), Outcome::Incomplete);
        assert_eq!(status(&handle(request("/ws", "mqtt").as_bytes(), &eps)), "400");
        assert_eq!(status(&handle(request("/other", "wamp.2.json").as_bytes(), &eps)), "404");
        assert_eq!(status(&handle(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", &eps)), "426");
        assert_eq!(status(&handle(b"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n", &eps)), "405");
        assert_eq!(status(&handle(b"\x16\x03\x01 garbage\r\n\r\n", &eps)), "400");
        assert_eq!(status(&handle(&vec![b'G'; MAX_REQUEST_HEAD], &eps)), "431");
    }
}
