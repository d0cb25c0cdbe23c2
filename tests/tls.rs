//! TLS listeners (rustls on the workers): WAMP over wss:// and MQTT over
//! TLS, with a test CA and server certificate made here (rcgen). A rustls
//! client that trusts the CA gets through; one that trusts another CA
//! fails its handshake, and so does a plaintext client on the TLS port;
//! neither disturbs a session already open. `mosquitto_pub` /
//! `mosquitto_sub --cafile` reach the MQTT TLS listener.

#[allow(unused_imports)]
mod common;

use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// A CA and a server certificate for localhost / 127.0.0.1, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_der = Pki::write(dir.path());
        Pki { ca_der, dir }
    }

    /// Writes a new CA and certificates it signed into `dir`.
    fn write(dir: &std::path::Path) -> CertificateDer<'static> {
        common::pki::write(dir)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config_trusting(self.ca_der.clone())
    }
}

fn client_config_trusting(ca: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake to its end (or its failure) now.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// A WAMP session over wss:// (JSON).
fn wamp(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> tungstenite::WebSocket<Tls> {
    let s = tls_connect(addr, cfg).expect("TLS handshake");
    let mut req = format!("wss://localhost:{}/ws", addr.port()).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
    let (mut ws, _) = tungstenite::client(req, s).expect("WebSocket over TLS");
    ws.send(Message::text(r#"[1,"realm1",{"roles":{"publisher":{},"subscriber":{}}}]"#)).unwrap();
    assert!(recv(&mut ws).starts_with("[2,"), "WELCOME");
    ws
}

fn recv(ws: &mut tungstenite::WebSocket<Tls>) -> String {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn router(pki: &Pki) -> fennec::server::Running {
    let (cert, key) = (pki.path("cert.pem"), pki.path("key.pem"));
    common::router(&["--wss", "127.0.0.1:0", "--mqtt-tls", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key])
}

#[test]
fn wamp_over_wss_and_bad_clients_do_not_disturb_it() {
    let pki = Pki::new();
    let r = router(&pki);
    let wss = r.wss_addr.expect("wss listener");
    let mut sub = wamp(wss, pki.client_config());
    sub.send(Message::text(r#"[32,1,{},"tls.topic"]"#)).unwrap();
    assert!(recv(&mut sub).starts_with("[33,1,"), "SUBSCRIBED");

    // A client that trusts another CA: its handshake fails.
    let other = Pki::new();
    assert!(tls_connect(wss, other.client_config()).is_err(), "the wrong CA is refused");
    // A plaintext client on the TLS port is answered with an alert and closed.
    let mut plain = TcpStream::connect(wss).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "no plaintext answer: {got:?}");

    // The session open before them goes on: a publication over wss reaches it.
    let mut publ = wamp(wss, pki.client_config());
    let big = "x".repeat(200_000);
    publ.send(Message::text(format!(r#"[16,2,{{"acknowledge":true}},"tls.topic",["{big}"]]"#))).unwrap();
    assert!(recv(&mut publ).starts_with("[17,2,"), "PUBLISHED");
    let event = recv(&mut sub);
    assert!(event.starts_with("[36,") && event.contains(&big), "a 200 kB EVENT through TLS");
    // Plain WebSocket is still served on its own listener.
    let _plain = common::join(r.local_addr, fennec::wamp::message::Serializer::Json);
    r.shutdown();
}

#[test]
fn mosquitto_over_tls() {
    let pki = Pki::new();
    let r = router(&pki);
    let port = r.mqtt_tls_addr.expect("MQTT TLS listener").port().to_string();
    let ca = pki.path("ca.pem");
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port, "--cafile", &ca, "-t", "tls/t", "-C", "1", "-W", "10", "-q", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (Debian: mosquitto-clients)");
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile", &ca, "-t", "tls/t", "-m", "over tls", "-q", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    let out = sub.wait_with_output().unwrap();
    assert!(out.status.success(), "mosquitto_sub got the message");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");
    // With another CA, mosquitto_pub fails.
    let other = Pki::new();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile", &other.path("ca.pem"), "-t", "tls/t", "-m", "x"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the wrong CA is refused");
    r.shutdown();
}

/// New certificate files and a reload (what SIGHUP does): new connections
/// get the new certificate, the session open before goes on.
#[test]
fn certificates_reload_without_dropping_sessions() {
    let pki = Pki::new();
    let r = router(&pki);
    let wss = r.wss_addr.unwrap();
    let old_ca = pki.client_config();
    let mut before = wamp(wss, old_ca.clone());
    let new_ca = client_config_trusting(Pki::write(pki.dir.path()));
    r.reload_tls().expect("reloaded");
    // The workers take it from their inbox: allow them a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tls_connect(wss, new_ca.clone()).is_err() {
        assert!(std::time::Instant::now() < deadline, "the new certificate is served");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tls_connect(wss, old_ca).is_err(), "the old one is not");
    before.send(Message::text(r#"[32,1,{},"reload.t"]"#)).unwrap();
    assert!(recv(&mut before).starts_with("[33,1,"), "the old session goes on");
    // A file that is not a certificate leaves the configuration as it is.
    std::fs::write(pki.dir.path().join("cert.pem"), "garbage").unwrap();
    assert!(r.reload_tls().is_err());
    assert!(tls_connect(wss, new_ca).is_ok());
    r.shutdown();
}

/// A client configuration that trusts the CA and presents the client certificate.
fn client_with_cert(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &std::fs::read(pki.path("client.pem")).unwrap()[..]).map(|c| c.unwrap()).collect();
    let key =
        rustls_pemfile::private_key(&mut &std::fs::read(pki.path("client-key.pem")).unwrap()[..]).unwrap().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    Arc::new(cfg)
}

const CERT_REALM: &str = r#"
[[realm]]
name = "realm1"
[[realm.principal]]
authid = "device-cn"
role = "device"
tls = true
[mqtt]
username_from_cert = true
"#;

/// authmethod `tls` (WAMP over wss and over RawSocket-over-TLS) and MQTT's
/// user name from the certificate: a verified client certificate whose
/// common name is a principal's authid logs it in.
#[test]
fn client_certificates_authenticate() {
    let pki = Pki::new();
    let (cert, key, ca) = (pki.path("cert.pem"), pki.path("key.pem"), pki.path("ca.pem"));
    let flags = [
        "--wss",
        "127.0.0.1:0",
        "--mqtt-tls",
        "127.0.0.1:0",
        "--rawsocket-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ];
    let r = common::router_with_config(&flags, CERT_REALM);
    let wss = r.wss_addr.unwrap();
    let hello = r#"[1,"realm1",{"roles":{"subscriber":{}},"authmethods":["tls"]}]"#;
    for (cfg, expect) in [(client_with_cert(&pki), "[2,"), (pki.client_config(), "[3,")] {
        let s = tls_connect(wss, cfg).expect("TLS");
        let mut req = format!("wss://localhost:{}/ws", wss.port()).into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
        let (mut ws, _) = tungstenite::client(req, s).unwrap();
        ws.send(Message::text(hello)).unwrap();
        let answer = recv(&mut ws);
        assert!(answer.starts_with(expect), "{answer}");
        if expect == "[2," {
            assert!(answer.contains(r#""authid":"device-cn""#) && answer.contains(r#""authmethod":"tls""#), "{answer}");
        } else {
            assert!(answer.contains("wamp.error.no_auth_method"), "without a certificate: {answer}");
        }
    }
    // RawSocket over TLS: the 4-octet handshake (JSON), then HELLO.
    let mut raw = tls_connect(r.rawsocket_tls_addr.expect("RawSocket TLS"), client_with_cert(&pki)).unwrap();
    raw.write_all(&[0x7f, 0xf1, 0, 0]).unwrap();
    let mut reply = [0u8; 4];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], 0x7f, "accepted: {reply:?}");
    let len = hello.len() as u32;
    raw.write_all(&[0, (len >> 16) as u8, (len >> 8) as u8, len as u8]).unwrap();
    raw.write_all(hello.as_bytes()).unwrap();
    let mut head = [0u8; 4];
    raw.read_exact(&mut head).unwrap();
    let n = (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
    let mut body = vec![0; n];
    raw.read_exact(&mut body).unwrap();
    let welcome = String::from_utf8(body).unwrap();
    assert!(welcome.starts_with("[2,") && welcome.contains("device-cn"), "{welcome}");
    // MQTT: with the certificate, no user name or password is needed; without, refused.
    let port = r.mqtt_tls_addr.unwrap().port().to_string();
    let (cc, ck) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let with_cert =
        ["-h", "localhost", "-p", &port, "--cafile", &ca, "--cert", &cc, "--key", &ck, "-t", "c/t", "-m", "x"];
    assert!(Command::new("mosquitto_pub").args(with_cert).status().unwrap().success(), "logged in by its certificate");
    let without = ["-h", "localhost", "-p", &port, "--cafile", &ca, "-t", "c/t", "-m", "x"];
    let status = Command::new("mosquitto_pub").args(without).stderr(std::process::Stdio::null()).status().unwrap();
    assert!(!status.success(), "anonymous is refused in a realm with principals");
    r.shutdown();
}

#[test]
fn a_tls_listener_needs_a_certificate() {
    let cli = <fennec::config::Cli as clap::Parser>::try_parse_from(["fennec", "--wss", "127.0.0.1:0"]).unwrap();
    let err = fennec::config::Config::resolve(cli, fennec::config::File::default()).unwrap_err();
    assert!(err.contains("tls.cert"), "{err}");
}
