//! fennec-client's transports and authentication methods against the
//! Fennec router, in-process: WebSocket and RawSocket, plain and over TLS
//! (a test CA made here), in every serializer; ticket, WAMP-CRA (plain
//! and salted) and cryptosign, and their refusals.

mod common;
#[path = "../../../tests/common/pki.rs"]
mod pki;

use fennec_client::{Auth, Client, Error, Options, Serializer, Tls};
use std::sync::mpsc;
use std::time::Duration;

struct Router {
    running: fennec::server::Running,
    dir: tempfile::TempDir,
}

fn router(toml: &str) -> Router {
    let dir = tempfile::tempdir().unwrap();
    pki::write(dir.path());
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let (cert, key) = (path("cert.pem"), path("key.pem"));
    let flags = [
        "--rawsocket",
        "127.0.0.1:0",
        "--wss",
        "127.0.0.1:0",
        "--rawsocket-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    let running = common::router_with(&flags, toml);
    Router { running, dir }
}

impl Router {
    fn urls(&self) -> [String; 4] {
        let r = &self.running;
        [
            format!("ws://{}/ws", r.local_addr),
            format!("wss://localhost:{}/ws", r.wss_addr.unwrap().port()),
            format!("tcp://{}", r.rawsocket_addr.unwrap()),
            format!("tcps://localhost:{}", r.rawsocket_tls_addr.unwrap().port()),
        ]
    }

    fn tls(&self) -> Tls {
        Tls { ca_file: Some(self.dir.path().join("ca.pem")), ..Tls::default() }
    }
}

#[test]
fn every_transport_in_every_serializer() {
    let r = router("");
    for url in r.urls() {
        for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
            let what = format!("{url} {ser:?}");
            let opts = || Options {
                serializer: ser,
                tls: r.tls(),
                timeout: Some(Duration::from_secs(10)),
                ..Options::default()
            };
            let callee = Client::connect_with(&url, "realm1", opts()).unwrap_or_else(|e| panic!("{what}: {e}"));
            let caller = Client::connect_with(&url, "realm1", opts()).unwrap();
            let procedure = format!("com.t.{}.{ser:?}", url.split(':').next().unwrap());
            callee.register(&procedure, |inv| Ok(inv.args)).unwrap();
            // Larger than one read, and than a TLS record.
            let big = "x".repeat(200_000);
            let back: String = caller.call(&procedure, (big.clone(),)).unwrap();
            assert_eq!(back, big, "{what}");
            let (tx, rx) = mpsc::channel();
            let topic = format!("{procedure}.ticks");
            caller.subscribe(&topic, move |e| tx.send(e.args.get::<u32>(0).unwrap()).unwrap()).unwrap();
            for i in 0..100u32 {
                callee.publish(&topic, (i,)).unwrap();
            }
            let got: Vec<u32> = (0..100).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
            assert_eq!(got, (0..100).collect::<Vec<_>>(), "{what}");
            caller.leave().unwrap();
            callee.leave().unwrap();
        }
    }
    r.running.shutdown();
}

#[test]
fn a_router_certificate_nobody_vouches_for_is_a_tls_error() {
    let r = router("");
    let [_, wss, _, tcps] = r.urls();
    for url in [wss, tcps] {
        // The built-in Mozilla roots do not know the test CA.
        match Client::connect(&url, "realm1") {
            Err(Error::Tls(m)) => assert!(m.contains("certificate"), "{m}"),
            Err(e) => panic!("{url}: {e}"),
            Ok(_) => panic!("{url}: connected"),
        }
        // Nor does a name the certificate does not carry pass.
        let opts = Options { tls: Tls { server_name: Some("example.com".into()), ..r.tls() }, ..Options::default() };
        assert!(matches!(Client::connect_with(&url, "realm1", opts), Err(Error::Tls(_))), "{url}");
    }
    r.running.shutdown();
}

#[test]
fn wampcra_salted_wampcra_and_cryptosign() {
    let seed = [42u8; 32];
    let salted = fennec_wamp::auth::derive_cra_key("salty", "pepper", 1000, 32);
    let pubkey = fennec_wamp::auth::cryptosign_public_key(&seed);
    let r = router(&format!(
        r#"
[[realm]]
name = "secure"
[[realm.principal]]
authid = "cra"
role = "user"
cra_secret = "s3cret"
[[realm.principal]]
authid = "salt"
role = "user"
cra_key = "{salted}"
cra_salt = "pepper"
cra_iterations = 1000
cra_keylen = 32
[[realm.principal]]
authid = "sign"
role = "user"
cryptosign = ["{pubkey}"]
"#
    ));
    let [ws, _, tcp, _] = r.urls();
    let cases = [
        (Auth::WampCra { authid: "cra".into(), secret: "s3cret".into() }, "cra", "wampcra"),
        (Auth::WampCra { authid: "salt".into(), secret: "salty".into() }, "salt", "wampcra"),
        (Auth::Cryptosign { authid: "sign".into(), seed }, "sign", "cryptosign"),
    ];
    for url in [&ws, &tcp] {
        for (auth, authid, method) in &cases {
            let c = Client::connect_with(url, "secure", Options { auth: auth.clone(), ..Options::default() })
                .unwrap_or_else(|e| panic!("{url} {authid}: {e}"));
            let got = |k: &str| {
                c.welcome_details().iter().find(|(n, _)| n == k).and_then(|(_, v)| v.as_str().map(str::to_owned))
            };
            assert_eq!(got("authid").as_deref(), Some(*authid));
            assert_eq!(got("authmethod").as_deref(), Some(*method));
            c.leave().unwrap();
        }
    }
    let wrong = [
        Auth::WampCra { authid: "cra".into(), secret: "wrong".into() },
        Auth::WampCra { authid: "salt".into(), secret: "wrong".into() },
        Auth::Cryptosign { authid: "sign".into(), seed: [1; 32] },
    ];
    for auth in wrong {
        match Client::connect_with(&ws, "secure", Options { auth: auth.clone(), ..Options::default() }) {
            Err(Error::Aborted { reason, .. }) => assert_eq!(reason, "wamp.error.authentication_failed", "{auth:?}"),
            Err(e) => panic!("{auth:?}: {e}"),
            Ok(_) => panic!("{auth:?} joined"),
        }
    }
    r.running.shutdown();
}

#[test]
fn a_message_too_long_for_the_router_fails_alone() {
    // RawSocket: the router said in its handshake how long a message it
    // takes (16 MiB); a longer one is refused before it is sent, typed,
    // and the session goes on.
    let r = router("");
    let [_, _, tcp, _] = r.urls();
    let c = Client::connect_with(&tcp, "realm1", Options { serializer: Serializer::MsgPack, ..Options::default() })
        .unwrap();
    let huge = vec![b'x'; 17 << 20];
    let args = fennec_client::Args::from((serde_bytes_like(&huge),)).unwrap();
    let too_long = |e: &Error| e.uri() == Some("wamp.error.payload_size_exceeded");
    match c.publish_acked("com.big", args.clone(), vec![]) {
        Err(e) => assert!(too_long(&e), "{e}"),
        Ok(_) => panic!("a 17 MiB PUBLISH went through"),
    }
    c.register("com.big.result", move |_| fennec_client::Args::from((serde_bytes_like(&vec![b'y'; 17 << 20]),)))
        .unwrap();
    match c.call_with("com.big.result", fennec_client::Args::default(), vec![]) {
        Err(e) => assert!(too_long(&e), "the callee's too-long result comes back as an error: {e}"),
        Ok(_) => panic!("a 17 MiB YIELD went through"),
    }
    c.register("com.small", |_| fennec_client::Args::from(1)).unwrap();
    assert_eq!(c.call::<_, i32>("com.small", ()).unwrap(), 1, "the session goes on");
    c.leave().unwrap();
    r.running.shutdown();
}

/// Bytes as a MessagePack `bin` (through `Value::Bin`).
fn serde_bytes_like(b: &[u8]) -> fennec_client::Value {
    fennec_client::Value::Bin(b.to_vec())
}
