//! A minimal blocking WAMP client for the integration tests, over real
//! sockets (tungstenite's client for the WebSocket side). Interop with
//! third-party clients is covered by tests/autobahn.rs; this one exists to
//! script exact byte sequences, malformed input and cross-core timing.
#![allow(dead_code)]

pub mod pki;
pub mod process;
pub mod raw;

use fennec::config::{Cli, Config, File};
use fennec::payload::Payload;
use fennec::server::Running;
use fennec::value::{Dict, Value};
use fennec::wamp::message::{decode, encode, Msg, Serializer};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

#[allow(unused_imports)]
pub use fennec::wamp::message as m;

/// The base flags of an in-process test router: ephemeral ports, no
/// pinning, and memory-only retained values unless the test asks for a
/// store (`tests/durable.rs` runs the binary with `--data`).
fn base_args(flags: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["fennec", "--listen", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--no-pin"].map(String::from).into();
    if !flags.iter().any(|f| *f == "--durability" || *f == "--data") {
        args.extend(["--durability".to_owned(), "none".to_owned()]);
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    args
}

/// Starts an in-process router on an ephemeral port with extra flags.
pub fn router(flags: &[&str]) -> Running {
    let args = base_args(flags);
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("flags");
    fennec::server::start(Config::resolve(cli, File::default()).expect("config")).expect("start")
}

/// Starts an in-process router with extra flags and a configuration file's text.
pub fn router_with_config(flags: &[&str], toml_text: &str) -> Running {
    let args = base_args(flags);
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("flags");
    let file: File = toml::from_str(toml_text).expect("configuration");
    fennec::server::start(Config::resolve(cli, file).expect("config")).expect("start")
}

/// An in-process router on two workers, `--durability sync`, over the
/// given store (a test double of the `Store` trait) and configuration.
pub fn router_with_store(extra: &[&str], file: File, store: Box<dyn fennec::store::Store>) -> Running {
    let mut args: Vec<&str> =
        vec!["fennec", "--cores", "2", "--no-pin", "--listen", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"];
    args.extend(["--durability", "sync"]);
    args.extend(extra);
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("flags");
    fennec::server::start_with(Config::resolve(cli, file).expect("config"), Some(store)).expect("start")
}

/// Connects and opens a session on `realm`.
pub fn join_realm(addr: SocketAddr, ser: Serializer, realm: &str) -> Client {
    let mut c = connect(addr, ser);
    c.send(&Msg::Hello { realm: realm.into(), details: roles() });
    match c.recv() {
        Msg::Welcome { session, .. } => c.session = session,
        other => panic!("expected WELCOME on {realm}, got {other:?}"),
    }
    c
}

pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub ser: Serializer,
    next: u64,
    pub session: u64,
}

pub fn connect(addr: SocketAddr, ser: Serializer) -> Client {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", ser.subprotocol().parse().unwrap());
    let (ws, resp) = tungstenite::client(req, stream).expect("handshake");
    assert_eq!(resp.headers()["sec-websocket-protocol"], ser.subprotocol());
    Client { ws, ser, next: 0, session: 0 }
}

pub fn roles() -> Dict {
    let role = |r: &str| (r.to_owned(), Value::Dict(Dict::new()));
    let roles = vec![role("publisher"), role("subscriber"), role("caller"), role("callee")];
    vec![("roles".into(), Value::Dict(roles))]
}

/// Connects and opens a session on realm1.
pub fn join(addr: SocketAddr, ser: Serializer) -> Client {
    join_realm(addr, ser, "realm1")
}

pub fn args(values: Vec<Value>) -> Payload {
    Payload::args(values)
}

pub fn opts(pairs: &[(&str, Value)]) -> Dict {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

impl Client {
    pub fn request(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn frame(&self, msg: &Msg) -> Message {
        let mut out = Vec::new();
        encode(self.ser, msg, &mut out);
        match self.ser {
            Serializer::Json => Message::text(String::from_utf8(out).unwrap()),
            Serializer::MsgPack | Serializer::Cbor => Message::binary(out),
        }
    }

    pub fn send(&mut self, msg: &Msg) {
        let frame = self.frame(msg);
        self.ws.send(frame).expect("send");
    }

    /// Queues without flushing (for bursts).
    pub fn write(&mut self, msg: &Msg) {
        let frame = self.frame(msg);
        self.ws.write(frame).expect("write");
    }

    pub fn flush(&mut self) {
        self.ws.flush().expect("flush");
    }

    /// The next WAMP message; panics on timeout or close.
    pub fn recv(&mut self) -> Msg {
        match self.next_message() {
            Ok(msg) => msg,
            Err(e) => panic!("expected a message, got {e}"),
        }
    }

    /// The next WAMP message, or a description of how the connection ended.
    pub fn next_message(&mut self) -> Result<Msg, String> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Ok(decode(self.ser, t.as_bytes()).expect("valid WAMP")),
                Ok(Message::Binary(b)) => return Ok(decode(self.ser, &b).expect("valid WAMP")),
                Ok(Message::Close(frame)) => {
                    return Err(format!("close {:?}", frame.map(|f| (u16::from(f.code), f.reason.to_string()))))
                }
                Ok(_) => continue,
                Err(e) => return Err(format!("error {e}")),
            }
        }
    }

    /// Reads until the connection ends; returns the close code if there was one.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub fn subscribe(&mut self, topic: &str, options: Dict) -> u64 {
        let request = self.request();
        self.send(&Msg::Subscribe { request, options, topic: topic.into() });
        match self.recv() {
            Msg::Subscribed { request: r, subscription } if r == request => subscription,
            other => panic!("expected SUBSCRIBED, got {other:?}"),
        }
    }

    pub fn register(&mut self, procedure: &str) -> u64 {
        let request = self.request();
        self.send(&Msg::Register { request, options: Dict::new(), procedure: procedure.into() });
        match self.recv() {
            Msg::Registered { request: r, registration } if r == request => registration,
            other => panic!("expected REGISTERED, got {other:?}"),
        }
    }

    pub fn publish(&mut self, topic: &str, payload: Payload, acknowledge: bool) {
        let request = self.request();
        let options = if acknowledge { opts(&[("acknowledge", Value::Bool(true))]) } else { Dict::new() };
        self.send(&Msg::Publish { request, options, topic: topic.into(), payload });
        if acknowledge {
            match self.recv() {
                Msg::Published { request: r, .. } if r == request => {}
                other => panic!("expected PUBLISHED, got {other:?}"),
            }
        }
    }

    /// Expects an ERROR for `request_type` and returns its URI.
    pub fn expect_error(&mut self, request_type: u64) -> String {
        match self.recv() {
            Msg::Error { request_type: t, error, .. } if t == request_type => error,
            other => panic!("expected ERROR, got {other:?}"),
        }
    }

    /// Expects ABORT, returns its reason, and checks the connection closes.
    pub fn expect_abort(&mut self) -> String {
        let reason = match self.recv() {
            Msg::Abort { reason, .. } => reason,
            other => panic!("expected ABORT, got {other:?}"),
        };
        self.expect_close();
        reason
    }
}

/// Collects StatsD lines for a while.
pub fn statsd_lines(sock: &std::net::UdpSocket, until: impl Fn(&str) -> bool, limit: Duration) -> String {
    let mut all = String::new();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 65536];
    while start.elapsed() < limit && !until(&all) {
        if let Ok(n) = sock.recv(&mut buf) {
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            all.push('\n');
        }
    }
    all
}

/// Sum of the values of a StatsD counter in the collected lines.
pub fn counter(lines: &str, name: &str) -> f64 {
    lines.lines().filter_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.strip_suffix("|c")?.parse::<f64>().ok()).sum()
}

/// Polls a rumqttc (3.1.1) connection until `pick` accepts an event (5 s at most).
pub fn mqtt_wait<T>(
    conn: &mut rumqttc::Connection,
    what: &str,
    mut pick: impl FnMut(&rumqttc::Event) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match conn.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(Ok(ev)) => {
                if let Some(t) = pick(&ev) {
                    return t;
                }
            }
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!("no {what} within 5 s"),
        }
    }
}

/// Runs a Mosquitto command-line client (mosquitto_pub, mosquitto_sub).
pub fn mosquitto(tool: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{tool}` ({e}): the MQTT interop tests need the Mosquitto command-line \
             clients; install them with `apt-get install mosquitto-clients` (scripts/test does)"
        )
    })
}

pub fn ok_stdout(tool: &str, args: &[&str]) -> String {
    let out = mosquitto(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
