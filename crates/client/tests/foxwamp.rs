//! fennec-client against a router nobody here wrote: fox-wamp (npm,
//! installed into tests/node by the test command), started by the test,
//! for the Basic Profile: RPC, pub/sub, typed errors. fox-wamp speaks JSON
//! only.

use fennec_client::{Args, Client, Error, Options, Serializer, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Fox(Child);

impl Drop for Fox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts fox-wamp on a free port; its URL.
fn fox() -> (Fox, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let modules = root.join("tests/node/node_modules");
    assert!(modules.join("fox-wamp").exists(), "fox-wamp in tests/node (scripts/test installs it)");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("node")
        .arg(root.join("perf/fox-wamp-router.js"))
        .arg(port.to_string())
        .env("NODE_PATH", &modules)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "fox-wamp did not start: {line}");
    (Fox(child), format!("ws://127.0.0.1:{port}/ws"))
}

/// JSON, and no request waits for ever: a router that drops one fails
/// the test instead of hanging it.
fn json() -> Options {
    Options { serializer: Serializer::Json, timeout: Some(Duration::from_secs(10)), ..Options::default() }
}

#[test]
fn basic_profile_against_fox_wamp() {
    let (_fox, url) = fox();
    let callee = Client::connect_with(&url, "realm1", json()).unwrap();
    let caller = Client::connect_with(&url, "realm1", json()).unwrap();
    assert_ne!(callee.session_id(), caller.session_id());

    let add = callee
        .register("com.add", |inv| {
            let (a, b): (i64, i64) = inv.args.to()?;
            Args::from((a + b, "sum"))
        })
        .unwrap();
    let result = caller.call_with("com.add", Args::from((2, 3)).unwrap(), vec![]).unwrap();
    assert_eq!(result.get::<i64>(0).unwrap(), 5);
    assert_eq!(result.get::<String>(1).unwrap(), "sum");
    assert_eq!(caller.call::<_, i64>("com.add", (40, 2)).unwrap(), 42);
    callee.unregister(add).unwrap();
    assert!(matches!(caller.call::<_, i64>("com.add", (1, 1)), Err(Error::NoSuchProcedure(_))));

    callee
        .register("com.fail", |_| {
            Err(Error::Application { uri: "com.error.nope".into(), args: vec![], kwargs: vec![] })
        })
        .unwrap();
    // fox-wamp does not pass a callee's error URI on: the caller gets
    // wamp.error.callee_failure with that URI as its argument.
    match caller.call::<_, ()>("com.fail", ()) {
        Err(Error::Application { uri, args, .. }) => {
            assert_eq!(uri, "wamp.error.callee_failure");
            assert_eq!(args.first().and_then(Value::as_str), Some("com.error.nope"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(caller.call::<_, ()>("com.nobody", ()), Err(Error::NoSuchProcedure(_))));

    let (tx, rx) = mpsc::channel();
    let sub = caller.subscribe("com.ticks", move |e| tx.send(e.args.get::<u64>(0).unwrap()).unwrap()).unwrap();
    for i in 0..5u64 {
        callee.publish_acked("com.ticks", Args::from((i,)).unwrap(), vec![]).unwrap();
    }
    let got: Vec<u64> = (0..5).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    caller.unsubscribe(sub).unwrap();
    caller.leave().unwrap();
    callee.leave().unwrap();
}
