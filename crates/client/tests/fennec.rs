//! fennec-client against the Fennec router, started in-process: pub/sub,
//! RPC with typed arguments, typed errors, ticket authentication, leaving.

mod common;

use fennec_client::{Args, Auth, Client, Error, Options, Serializer, Value};
use std::sync::mpsc;
use std::time::Duration;

fn router(toml: &str) -> fennec::server::Running {
    common::router_with(&[], toml)
}

fn url(r: &fennec::server::Running) -> String {
    common::url(r)
}

#[test]
fn pubsub_and_rpc_with_typed_arguments_in_every_serializer() {
    let r = router("");
    for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        let opts = || Options { serializer: ser, ..Options::default() };
        let callee = Client::connect_with(&url(&r), "realm1", opts()).unwrap();
        let caller = Client::connect_with(&url(&r), "realm1", opts()).unwrap();
        let add = format!("com.add.{ser:?}");
        callee
            .register(&add, |inv| {
                let (a, b): (i64, i64) = inv.args.to()?;
                Args::from(a + b)
            })
            .unwrap();
        assert_eq!(caller.call::<_, i64>(&add, (2, -5)).unwrap(), -3, "{ser:?}");
        // Keyword arguments and a whole result.
        let echo = format!("com.echo.{ser:?}");
        callee.register(&echo, |inv| Ok(inv.args)).unwrap();
        let sent = Args::from(("x", 1.5, vec![1u8, 2])).unwrap().kwarg("k", true).unwrap();
        let got = caller.call_with(&echo, sent.clone(), vec![]).unwrap();
        assert_eq!(got.get::<String>(0).unwrap(), "x");
        assert!(got.kw::<bool>("k").unwrap());
        assert_eq!(got.args.len(), 3);

        // Pub/sub: the subscriber gets what the publisher sent, acknowledged.
        let (tx, rx) = mpsc::channel();
        let topic = format!("com.ticks.{ser:?}");
        let sub = caller.subscribe(&topic, move |e| tx.send(e.args.get::<u64>(0).unwrap()).unwrap()).unwrap();
        for i in 0..10u64 {
            callee.publish_acked(&topic, Args::from((i,)).unwrap(), vec![]).unwrap();
        }
        callee.publish(&topic, (10u64,)).unwrap();
        let got: Vec<u64> = (0..11).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert_eq!(got, (0..=10).collect::<Vec<_>>());
        caller.unsubscribe(sub).unwrap();
        assert!(matches!(caller.unsubscribe(sub), Err(Error::NoSuchSubscription(_))));
        caller.leave().unwrap();
        callee.leave().unwrap();
    }
    r.shutdown();
}

#[test]
fn errors_are_typed() {
    let r = router("");
    let c = Client::connect(&url(&r), "realm1").unwrap();
    assert!(matches!(c.call::<_, ()>("com.nobody", ()), Err(Error::NoSuchProcedure(_))));
    c.register("com.fails", |_| {
        Err(Error::Application { uri: "com.error.bad".into(), args: vec![Value::UInt(7)], kwargs: vec![] })
    })
    .unwrap();
    match c.call::<_, ()>("com.fails", ()) {
        Err(Error::Application { uri, args, .. }) => {
            assert_eq!((uri.as_str(), args), ("com.error.bad", vec![Value::UInt(7)]))
        }
        other => panic!("{other:?}"),
    }
    // A handler's conversion error reaches the caller as an error too.
    c.register("com.wants.int", |inv| Args::from(inv.args.get::<i64>(0)?)).unwrap();
    assert!(c.call::<_, i64>("com.wants.int", ("seven",)).is_err());
    assert!(matches!(c.register("com.fails", |_| Args::from(())), Err(Error::ProcedureAlreadyExists(_))));
    assert!(matches!(c.call::<_, ()>("bad..uri", ()), Err(Error::InvalidUri(_))));
    // A realm that does not exist: ABORT, typed.
    match Client::connect(&url(&r), "no.such.realm") {
        Err(Error::Aborted { reason, .. }) => assert_eq!(reason, "wamp.error.no_such_realm"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("joined"),
    }
    // After leaving, every operation fails as closed.
    c.leave().unwrap();
    assert!(matches!(c.publish("t", ()), Err(Error::Closed) | Ok(())));
    assert!(matches!(c.call::<_, ()>("com.fails", ()), Err(Error::Closed)));
    r.shutdown();
}

#[test]
fn a_handler_may_use_the_client() {
    let r = router("");
    let c = Client::connect(&url(&r), "realm1").unwrap();
    c.register("com.inner", |_| Args::from(41)).unwrap();
    let again = c.clone();
    c.register("com.outer", move |_| {
        let n: i64 = again.call("com.inner", ())?;
        Args::from(n + 1)
    })
    .unwrap();
    assert_eq!(c.call::<_, i64>("com.outer", ()).unwrap(), 42);
    r.shutdown();
}

#[test]
fn ticket_authentication() {
    let r = router(
        r#"
[[realm]]
name = "secure"
[[realm.principal]]
authid = "alice"
role = "user"
ticket = "s3cret"
"#,
    );
    let auth = |ticket: &str| Options {
        auth: Auth::Ticket { authid: "alice".into(), ticket: ticket.into() },
        ..Options::default()
    };
    let c = Client::connect_with(&url(&r), "secure", auth("s3cret")).unwrap();
    let authid = c.welcome_details().iter().find(|(k, _)| k == "authid").map(|(_, v)| v.clone());
    assert_eq!(authid, Some(Value::Str("alice".into())));
    match Client::connect_with(&url(&r), "secure", auth("wrong")) {
        Err(Error::Aborted { reason, .. }) => assert_eq!(reason, "wamp.error.authentication_failed"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("joined with a wrong ticket"),
    }
    c.leave().unwrap();
    r.shutdown();
}

#[test]
fn a_call_without_an_answer_times_out_and_the_session_goes_on() {
    let r = router("");
    let callee = Client::connect(&url(&r), "realm1").unwrap();
    let opts = Options { timeout: Some(Duration::from_millis(300)), ..Options::default() };
    let caller = Client::connect_with(&url(&r), "realm1", opts).unwrap();
    let (started_tx, started) = mpsc::channel();
    let started_tx = std::sync::Mutex::new(started_tx);
    callee
        .register("com.slow", move |_| {
            let _ = started_tx.lock().unwrap().send(());
            std::thread::sleep(Duration::from_millis(1500));
            Args::from(1)
        })
        .unwrap();
    callee.register("com.fast", |_| Args::from(2)).unwrap();
    let t = std::time::Instant::now();
    match caller.call::<_, i64>("com.slow", ()) {
        Err(Error::Timeout(Some(m))) => assert!(m.contains("no answer"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_millis(1400), "gave up at its timeout, not at the answer");
    started.recv_timeout(Duration::from_secs(5)).unwrap();
    // The session is fine, and the late answer (the router drops it: the
    // call was cancelled) does not turn up as another call's result.
    assert_eq!(caller.call::<_, i64>("com.fast", ()).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(caller.call::<_, i64>("com.fast", ()).unwrap(), 2);
    caller.leave().unwrap();
    callee.leave().unwrap();
    r.shutdown();
}

#[test]
fn a_request_right_after_leaving_never_hangs() {
    // The connection's thread ends just after the GOODBYE's answer: a
    // request sent in that moment may find nobody to read it, and must
    // still come back (Error::Closed) rather than wait for ever.
    let r = router("");
    for _ in 0..100 {
        let c = Client::connect(&url(&r), "realm1").unwrap();
        c.leave().unwrap();
        let (tx, rx) = mpsc::channel();
        let c2 = c.clone();
        std::thread::spawn(move || tx.send(c2.call::<_, ()>("com.any", ()).map(|_| ())).unwrap());
        let answer = rx.recv_timeout(Duration::from_secs(5)).expect("an answer, not a hang");
        assert!(matches!(answer, Err(Error::Closed)), "{answer:?}");
    }
    r.shutdown();
}
