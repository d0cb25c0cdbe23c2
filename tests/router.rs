//! End-to-end tests of the router over real sockets: the Basic Profile,
//! errors, malformed input, cross-core routing and ordering, slow consumers,
//! metrics and shutdown.

mod common;

use common::*;
use fennec::payload::Payload;
use fennec::value::{dict_get, Dict, Value};
use fennec::wamp::message::{Msg, Serializer};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const JSON: Serializer = Serializer::Json;
const MSGPACK: Serializer = Serializer::MsgPack;

#[test]
fn pubsub_with_args_kwargs_ack_and_exclude_me() {
    let r = router(&["--cores", "2"]);
    for (ps, ss) in [(JSON, JSON), (JSON, MSGPACK), (MSGPACK, JSON), (MSGPACK, MSGPACK)] {
        let mut sub = join(r.local_addr, ss);
        let mut publ = join(r.local_addr, ps);
        let sid = sub.subscribe("com.example.t", Dict::new());
        // The publisher subscribes too: exclude_me (default true) keeps its own event away.
        publ.subscribe("com.example.t", Dict::new());
        let payload = Payload::new(
            Some(vec![Value::UInt(1), Value::Str("two".into()), Value::Bin(vec![0, 1, 254, 255])]),
            Some(vec![("k".into(), Value::Dict(vec![("n".into(), Value::Int(-3))]))]),
        );
        publ.publish("com.example.t", payload.clone(), true);
        match sub.recv() {
            Msg::Event { subscription, payload: got, .. } => {
                assert_eq!(subscription, sid);
                assert_eq!(got, payload, "{ps:?} -> {ss:?}");
            }
            other => panic!("{other:?}"),
        }
        // exclude_me=false: the publisher gets its own event.
        let request = publ.request();
        let options = opts(&[("exclude_me", Value::Bool(false)), ("acknowledge", Value::Bool(true))]);
        publ.send(&Msg::Publish { request, options, topic: "com.example.t".into(), payload: args(vec![]) });
        let mut got_event = false;
        let mut got_ack = false;
        for _ in 0..2 {
            match publ.recv() {
                Msg::Published { .. } => got_ack = true,
                Msg::Event { .. } => got_event = true,
                other => panic!("{other:?}"),
            }
        }
        assert!(got_event && got_ack);
        assert!(matches!(sub.recv(), Msg::Event { .. }));
        // Unsubscribe stops delivery; a second unsubscribe is an error.
        let request = sub.request();
        sub.send(&Msg::Unsubscribe { request, subscription: sid });
        assert!(matches!(sub.recv(), Msg::Unsubscribed { request: r } if r == request));
        sub.send(&Msg::Unsubscribe { request: request + 1, subscription: sid });
        assert_eq!(sub.expect_error(m::UNSUBSCRIBE), "wamp.error.no_such_subscription");
        publ.publish("com.example.t", args(vec![Value::UInt(9)]), true);
        sub.publish("com.example.sync", args(vec![]), true);
    }
    r.shutdown();
}

#[test]
fn pattern_subscriptions_report_the_topic() {
    let r = router(&["--cores", "2"]);
    let mut sub = join(r.local_addr, JSON);
    let mut publ = join(r.local_addr, MSGPACK);
    let prefix = sub.subscribe("com.a", opts(&[("match", Value::Str("prefix".into()))]));
    let wild = sub.subscribe("com..c", opts(&[("match", Value::Str("wildcard".into()))]));
    publ.publish("com.a.c", args(vec![]), true);
    let mut seen = Vec::new();
    for _ in 0..2 {
        match sub.recv() {
            Msg::Event { subscription, details, .. } => {
                assert_eq!(fennec::value::dict_get(&details, "topic"), Some(&Value::Str("com.a.c".into())));
                seen.push(subscription);
            }
            other => panic!("{other:?}"),
        }
    }
    seen.sort();
    let mut want = vec![prefix, wild];
    want.sort();
    assert_eq!(seen, want);
    let request = sub.request();
    sub.send(&Msg::Subscribe { request, options: opts(&[("match", Value::Str("fuzzy".into()))]), topic: "a".into() });
    assert_eq!(sub.expect_error(m::SUBSCRIBE), "wamp.error.invalid_argument");
    r.shutdown();
}

#[test]
fn rpc_across_cores_and_errors() {
    let r = router(&["--cores", "2"]);
    let mut callee = join(r.local_addr, MSGPACK);
    let mut caller = join(r.local_addr, JSON);
    let reg = callee.register("com.example.add");
    // Second registration of the same procedure from another session.
    let request = caller.request();
    caller.send(&Msg::Register { request, options: Dict::new(), procedure: "com.example.add".into() });
    assert_eq!(caller.expect_error(m::REGISTER), "wamp.error.procedure_already_exists");

    let payload =
        Payload::new(Some(vec![Value::UInt(2), Value::Bin(vec![7; 3])]), Some(vec![("x".into(), Value::Float(1.5))]));
    let request = caller.request();
    caller.send(&Msg::Call {
        request,
        options: Dict::new(),
        procedure: "com.example.add".into(),
        payload: payload.clone(),
    });
    let inv = match callee.recv() {
        Msg::Invocation { request: inv, registration, payload: got, .. } => {
            assert_eq!(registration, reg);
            assert_eq!(got, payload);
            inv
        }
        other => panic!("{other:?}"),
    };
    callee.send(&Msg::Yield { request: inv, options: Dict::new(), payload: payload.clone() });
    match caller.recv() {
        Msg::Result { request: r, payload: got, .. } => assert_eq!((r, got), (request, payload)),
        other => panic!("{other:?}"),
    }
    // A late second YIELD for the same invocation is dropped: exactly one RESULT.
    callee.send(&Msg::Yield { request: inv, options: Dict::new(), payload: args(vec![]) });

    // The callee's own error URI, args and kwargs reach the caller.
    let request = caller.request();
    caller.send(&Msg::Call {
        request,
        options: Dict::new(),
        procedure: "com.example.add".into(),
        payload: args(vec![]),
    });
    let Msg::Invocation { request: inv, .. } = callee.recv() else { panic!() };
    let err_payload = Payload::new(Some(vec![Value::UInt(1)]), Some(vec![("a".into(), Value::UInt(3))]));
    callee.send(&Msg::Error {
        request_type: m::INVOCATION,
        request: inv,
        details: Dict::new(),
        error: "com.example.error.foo".into(),
        payload: err_payload.clone(),
    });
    match caller.recv() {
        Msg::Error { request_type: m::CALL, request: r, error, payload, .. } => {
            assert_eq!((r, error.as_str(), payload), (request, "com.example.error.foo", err_payload));
        }
        other => panic!("{other:?}"),
    }

    // Unknown procedure, invalid URI, unknown registration.
    let request = caller.request();
    caller.send(&Msg::Call { request, options: Dict::new(), procedure: "com.nope".into(), payload: args(vec![]) });
    assert_eq!(caller.expect_error(m::CALL), "wamp.error.no_such_procedure");
    let request = caller.request();
    caller.send(&Msg::Register { request, options: Dict::new(), procedure: "bad uri".into() });
    assert_eq!(caller.expect_error(m::REGISTER), "wamp.error.invalid_uri");
    let request = caller.request();
    caller.send(&Msg::Unregister { request, registration: 12345 });
    assert_eq!(caller.expect_error(m::UNREGISTER), "wamp.error.no_such_registration");

    // Unregister, then the procedure is gone.
    let request = callee.request();
    callee.send(&Msg::Unregister { request, registration: reg });
    assert!(matches!(callee.recv(), Msg::Unregistered { .. }));
    let request = caller.request();
    caller.send(&Msg::Call {
        request,
        options: Dict::new(),
        procedure: "com.example.add".into(),
        payload: args(vec![]),
    });
    assert_eq!(caller.expect_error(m::CALL), "wamp.error.no_such_procedure");
    r.shutdown();
}

#[test]
fn callee_leaving_cancels_its_pending_calls_and_frees_the_procedure() {
    let r = router(&["--cores", "2"]);
    let mut callee = join(r.local_addr, JSON);
    let mut caller = join(r.local_addr, JSON);
    callee.register("com.example.slow");
    let request = caller.request();
    caller.send(&Msg::Call {
        request,
        options: Dict::new(),
        procedure: "com.example.slow".into(),
        payload: args(vec![]),
    });
    assert!(matches!(callee.recv(), Msg::Invocation { .. }));
    drop(callee); // the socket closes without GOODBYE
    match caller.recv() {
        Msg::Error { request_type: m::CALL, request: r, error, .. } => {
            assert_eq!((r, error.as_str()), (request, "wamp.error.canceled"))
        }
        other => panic!("{other:?}"),
    }
    // The registration is cleaned up on every shard: another session can take it.
    let mut again = join(r.local_addr, MSGPACK);
    again.register("com.example.slow");
    r.shutdown();
}

#[test]
fn goodbye_then_new_session_on_same_connection() {
    let r = router(&["--cores", "1"]);
    let mut c = join(r.local_addr, JSON);
    c.subscribe("a.b", Dict::new());
    c.send(&Msg::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() });
    assert!(matches!(c.recv(), Msg::Goodbye { reason, .. } if reason == "wamp.close.goodbye_and_out"));
    c.send(&Msg::Hello { realm: "realm1".into(), details: roles() });
    assert!(matches!(c.recv(), Msg::Welcome { .. }));
    r.shutdown();
}

#[test]
fn welcome_announces_roles() {
    let r = router(&["--cores", "1"]);
    let mut c = connect(r.local_addr, MSGPACK);
    c.send(&Msg::Hello { realm: "realm1".into(), details: roles() });
    let Msg::Welcome { session, details } = c.recv() else { panic!() };
    assert!((1..=1u64 << 53).contains(&session));
    let roles = fennec::value::dict_get(&details, "roles").and_then(Value::as_dict).unwrap();
    assert!(fennec::value::dict_get(roles, "broker").is_some());
    assert!(fennec::value::dict_get(roles, "dealer").is_some());
    r.shutdown();
}

#[test]
fn unknown_realm_is_refused_and_any_realm_accepts() {
    let r = router(&["--cores", "1"]);
    let mut c = connect(r.local_addr, JSON);
    c.send(&Msg::Hello { realm: "nosuchrealm".into(), details: roles() });
    assert_eq!(c.expect_abort(), "wamp.error.no_such_realm");
    r.shutdown();
    let r = router(&["--cores", "1", "--any-realm"]);
    let mut c = connect(r.local_addr, JSON);
    c.send(&Msg::Hello { realm: "com.example.any".into(), details: roles() });
    assert!(matches!(c.recv(), Msg::Welcome { .. }));
    r.shutdown();
}

/// Every kind of protocol violation gets ABORT wamp.error.protocol_violation
/// and a close, and a bystander session keeps working.
#[test]
fn protocol_violations_abort_only_the_offender() {
    let r = router(&["--cores", "2"]);
    let mut bystander = join(r.local_addr, JSON);
    bystander.subscribe("com.watch", Dict::new());
    let hello = r#"[1, "realm1", {"roles": {"subscriber": {}}}]"#;
    let cases: &[(&[&str], &str)] = &[
        (&[r#"[32, 1, {}, "a.b"]"#], "message before HELLO"),
        (&[hello, r#"[99, 1]"#], "unknown message type"),
        (&[hello, r#"[32, "one", {}, "a.b"]"#], "wrong field type"),
        (&[hello, r#"[16, 1, [], "a.b"]"#], "options not a dict"),
        (&[hello, hello], "second HELLO"),
        (&[hello, r#"{"not": "an array"}"#], "not an array"),
        (&[hello, "[16, 1, {}"], "truncated JSON"),
        (&[hello, r#"[36, 1, 2, {}]"#], "router-to-client message"),
        (&[hello, r#"[16, 0, {}, "a.b"]"#], "request id 0"),
        (&[r#"[1, "realm1", {}]"#], "HELLO without roles"),
    ];
    for (msgs, what) in cases {
        let mut c = connect(r.local_addr, JSON);
        let last = msgs.len() - 1;
        for (i, text) in msgs.iter().enumerate() {
            c.ws.send(tungstenite::Message::text(*text)).unwrap();
            if i < last {
                assert!(matches!(c.recv(), Msg::Welcome { .. }), "{what}");
            }
        }
        assert_eq!(c.expect_abort(), "wamp.error.protocol_violation", "{what}");
    }
    // MessagePack garbage.
    let mut c = connect(r.local_addr, MSGPACK);
    c.ws.send(tungstenite::Message::binary(vec![0xc1, 0xff, 0x00])).unwrap();
    assert_eq!(c.expect_abort(), "wamp.error.protocol_violation");
    // The bystander noticed nothing.
    let mut publ = join(r.local_addr, JSON);
    publ.publish("com.watch", args(vec![Value::UInt(1)]), true);
    assert!(matches!(bystander.recv(), Msg::Event { .. }));
    r.shutdown();
}

#[test]
fn oversized_messages_close_with_1009() {
    let r = router(&["--cores", "1", "--max-message-size", "4096"]);
    let mut c = join(r.local_addr, JSON);
    let big = format!(r#"[16, 1, {{}}, "a.b", ["{}"]]"#, "x".repeat(5000));
    c.ws.send(tungstenite::Message::text(big)).unwrap();
    assert_eq!(c.expect_close(), Some(1009));
    r.shutdown();
}

fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn non_websocket_requests_get_http_errors() {
    let r = router(&["--cores", "1"]);
    let plain = http(r.local_addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    let missing = http(r.local_addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let no_proto = http(
        r.local_addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(no_proto.starts_with("HTTP/1.1 400") && no_proto.contains("wamp.2.json"), "{no_proto}");
    let garbage = http(r.local_addr, "\x16\x03\x01\x00\x05hello\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    r.shutdown();
}

#[test]
fn connections_that_never_open_a_session_are_closed() {
    let r = router(&["--cores", "1", "--open-timeout-ms", "300"]);
    // Stuck in the HTTP phase: the socket is closed without a response.
    let mut silent = TcpStream::connect(r.local_addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // WebSocket open, but no HELLO: closed with 1008.
    let mut idle = connect(r.local_addr, JSON);
    let start = Instant::now();
    assert_eq!(idle.expect_close(), Some(1008));
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
    assert!(start.elapsed() < Duration::from_secs(5));
    // A session opened in time is not affected.
    let mut ok = join(r.local_addr, JSON);
    std::thread::sleep(Duration::from_millis(600));
    ok.subscribe("still.here", Dict::new());
    r.shutdown();
}

/// With two workers, consecutive connections land on different workers; a
/// subscription acknowledged on one core is seen by a publish from the other
/// immediately, every time.
#[test]
fn subscribe_then_publish_from_another_core_is_always_delivered() {
    let r = router(&["--cores", "2"]);
    let mut publ = join(r.local_addr, JSON);
    for i in 0..100 {
        let mut sub = join(r.local_addr, if i % 2 == 0 { JSON } else { MSGPACK });
        let topic = format!("com.fresh.t{i}");
        sub.subscribe(&topic, Dict::new());
        publ.publish(&topic, args(vec![Value::UInt(i)]), false);
        match sub.recv() {
            Msg::Event { payload, .. } => assert_eq!(payload.values().args, Some(vec![Value::UInt(i)])),
            other => panic!("{other:?}"),
        }
        // Keep the publisher on the other worker: skip one connection.
        let _spacer = connect(r.local_addr, JSON);
    }
    r.shutdown();
}

#[test]
fn hundred_thousand_events_in_order_across_cores() {
    let r = router(&["--cores", "2", "--outbound-queue-bytes", "268435456", "--outbound-queue-messages", "1000000"]);
    let mut sub = join(r.local_addr, MSGPACK);
    let mut publ = join(r.local_addr, JSON);
    sub.subscribe("com.seq", Dict::new());
    const N: u64 = 100_000;
    let reader = std::thread::spawn(move || {
        for expect in 0..N {
            match sub.recv() {
                Msg::Event { payload, .. } => assert_eq!(payload.values().args, Some(vec![Value::UInt(expect)])),
                other => panic!("{other:?}"),
            }
        }
        // None doubled: the next message is the end marker, not a repeat.
        match sub.recv() {
            Msg::Event { payload, .. } => assert_eq!(payload.values().args, Some(vec![Value::Str("end".into())])),
            other => panic!("{other:?}"),
        }
    });
    for i in 0..N {
        let request = publ.request();
        publ.write(&Msg::Publish {
            request,
            options: Dict::new(),
            topic: "com.seq".into(),
            payload: args(vec![Value::UInt(i)]),
        });
        if i % 256 == 0 {
            publ.flush();
        }
    }
    publ.flush();
    publ.publish("com.seq", args(vec![Value::Str("end".into())]), true);
    reader.join().unwrap();
    r.shutdown();
}

/// A subscriber that stops reading is closed after the grace period with
/// the counters raised, and the other subscriber gets every event.
#[test]
fn slow_subscriber_is_closed_and_others_get_everything() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let target = statsd.local_addr().unwrap().to_string();
    let r = router(&[
        "--cores",
        "1",
        "--outbound-queue-bytes",
        "65536",
        "--slow-grace-ms",
        "300",
        "--statsd",
        &target,
        "--metrics-interval-ms",
        "100",
    ]);
    let mut fast = join(r.local_addr, JSON);
    let mut slow = join(r.local_addr, JSON);
    fast.subscribe("com.flood", Dict::new());
    slow.subscribe("com.flood", Dict::new());
    // The slow one stops reading: its socket buffers fill, then its queue.
    // Once the router says it closed it (StatsD), it reads again at once: a
    // closed connection waits 2 s for its peer to read what is queued, so
    // the close frame must be read well within that, whatever the load.
    let watcher = std::thread::spawn(move || {
        let lines = statsd_lines(
            &statsd,
            |l| counter(l, "fennec.sessions.closed.slow_consumer") >= 1.0,
            Duration::from_secs(15),
        );
        let closed = slow.expect_close();
        (lines, closed)
    });
    let mut publ = join(r.local_addr, MSGPACK);
    const N: u64 = 20_000;
    // The publisher stays at most WINDOW events ahead of the fast reader, so
    // the fast reader's queue never fills: any loss it saw would be caused
    // by the slow one.
    const WINDOW: u64 = 16;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = progress.clone();
    let reader = std::thread::spawn(move || {
        for expect in 0..N {
            match fast.recv() {
                Msg::Event { payload, .. } => {
                    assert_eq!(payload.values().args.as_ref().unwrap()[0], Value::UInt(expect))
                }
                other => panic!("{other:?}"),
            }
            seen.store(expect + 1, std::sync::atomic::Ordering::Release);
        }
    });
    let blob = Value::Str("x".repeat(1024));
    for i in 0..N {
        let request = publ.request();
        let payload = args(vec![Value::UInt(i), blob.clone()]);
        publ.send(&Msg::Publish { request, options: Dict::new(), topic: "com.flood".into(), payload });
        while i >= WINDOW + progress.load(std::sync::atomic::Ordering::Acquire) {
            if reader.is_finished() {
                break;
            }
            std::thread::yield_now();
        }
    }
    reader.join().unwrap();
    let (lines, closed) = watcher.join().unwrap();
    assert_eq!(counter(&lines, "fennec.sessions.closed.slow_consumer"), 1.0, "{lines}");
    assert!(counter(&lines, "fennec.events.dropped") > 0.0, "{lines}");
    // The slow session was closed: after draining its socket, it ends.
    assert_eq!(closed, Some(1008));
    r.shutdown();
}

#[test]
fn statsd_lines_make_sense() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let target = statsd.local_addr().unwrap().to_string();
    let r = router(&["--cores", "2", "--statsd", &target, "--metrics-interval-ms", "100", "--statsd-prefix", "fx"]);
    let mut sub = join(r.local_addr, JSON);
    let mut publ = join(r.local_addr, JSON);
    let mut callee = join(r.local_addr, JSON);
    sub.subscribe("a.b", Dict::new());
    callee.register("a.p");
    for _ in 0..10 {
        publ.publish("a.b", args(vec![]), true);
        assert!(matches!(sub.recv(), Msg::Event { .. }));
    }
    let request = publ.request();
    publ.send(&Msg::Call { request, options: Dict::new(), procedure: "a.p".into(), payload: args(vec![]) });
    let Msg::Invocation { request: inv, .. } = callee.recv() else { panic!() };
    callee.send(&Msg::Yield { request: inv, options: Dict::new(), payload: args(vec![]) });
    assert!(matches!(publ.recv(), Msg::Result { .. }));
    let lines = statsd_lines(
        &statsd,
        |l| {
            counter(l, "fx.latency.publish_deliver.count") >= 10.0
                && l.contains("fx.latency.call_result.p99_us")
                && counter(l, "fx.messages.in") >= 17.0
                // An interval's lines span several datagrams, this one last.
                && l.contains("fx.sessions.active:3|g")
        },
        Duration::from_secs(10),
    );
    assert_eq!(counter(&lines, "fx.latency.publish_deliver.count"), 10.0, "{lines}");
    assert_eq!(counter(&lines, "fx.sessions.opened"), 3.0, "{lines}");
    // HELLO x3, SUBSCRIBE, REGISTER, PUBLISH x10, CALL, YIELD.
    assert_eq!(counter(&lines, "fx.messages.in"), 17.0, "{lines}");
    assert!(counter(&lines, "fx.bytes.in") > 0.0 && counter(&lines, "fx.bytes.out") > 0.0, "{lines}");
    for line in lines.lines().filter(|l| l.contains("_us:")) {
        // Gauges: name:value|g with a positive latency under a few seconds.
        let value: f64 = line.split(':').nth(1).unwrap().strip_suffix("|g").unwrap().parse().unwrap();
        assert!(value > 0.0 && value < 5e6, "{line}");
    }
    assert!(lines.contains("fx.sessions.active:3|g"), "{lines}");
    r.shutdown();
}

#[test]
fn shutdown_says_goodbye() {
    let r = router(&["--cores", "2"]);
    let mut a = join(r.local_addr, JSON);
    let mut b = join(r.local_addr, MSGPACK);
    let t = std::thread::spawn(move || r.shutdown());
    for c in [&mut a, &mut b] {
        match c.recv() {
            Msg::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.system_shutdown"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.expect_close(), Some(1001));
    }
    t.join().unwrap();
}

/// A realm that forces disclosure names every caller and publisher; one that
/// forbids it refuses `disclose_me` with
/// `wamp.error.option_disallowed.disclose_me` and ignores `disclose_caller`.
#[test]
fn realm_disclosure_policies() {
    let r = common::router_with_config(
        &["--cores", "2"],
        r#"
        [[realm]]
        name = "forced"
        disclose = "force"
        [[realm]]
        name = "forbidden"
        disclose = "forbid"
        "#,
    );
    let details_of = |c: &mut Client| match c.recv() {
        Msg::Invocation { request, details, .. } => (request, details),
        Msg::Event { details, .. } => (0, details),
        other => panic!("{other:?}"),
    };
    // Forced: no one asked, both are named.
    let mut callee = common::join_realm(r.local_addr, JSON, "forced");
    let mut caller = common::join_realm(r.local_addr, MSGPACK, "forced");
    callee.register("com.p");
    callee.subscribe("com.t", Dict::new());
    let request = caller.request();
    caller.send(&Msg::Call { request, options: Dict::new(), procedure: "com.p".into(), payload: Payload::default() });
    let (inv, details) = details_of(&mut callee);
    assert_eq!(dict_get(&details, "caller"), Some(&Value::UInt(caller.session)), "{details:?}");
    assert_eq!(dict_get(&details, "caller_authrole"), Some(&Value::Str("anonymous".into())));
    callee.send(&Msg::Yield { request: inv, options: Dict::new(), payload: Payload::default() });
    assert!(matches!(caller.recv(), Msg::Result { .. }));
    caller.publish("com.t", args(vec![Value::UInt(1)]), true);
    let (_, details) = details_of(&mut callee);
    assert_eq!(dict_get(&details, "publisher"), Some(&Value::UInt(caller.session)), "{details:?}");
    // Forbidden: asking is an error, and a callee's disclose_caller is not honoured.
    let mut callee = common::join_realm(r.local_addr, JSON, "forbidden");
    let mut caller = common::join_realm(r.local_addr, JSON, "forbidden");
    let request = callee.request();
    let options = opts(&[("disclose_caller", Value::Bool(true))]);
    callee.send(&Msg::Register { request, options, procedure: "com.p".into() });
    assert!(matches!(callee.recv(), Msg::Registered { .. }));
    let ask = opts(&[("disclose_me", Value::Bool(true))]);
    let request = caller.request();
    caller.send(&Msg::Call { request, options: ask.clone(), procedure: "com.p".into(), payload: Payload::default() });
    assert_eq!(caller.expect_error(m::CALL), "wamp.error.option_disallowed.disclose_me");
    let request = caller.request();
    let mut publish_options = ask;
    publish_options.push(("acknowledge".into(), Value::Bool(true)));
    caller.send(&Msg::Publish {
        request,
        options: publish_options,
        topic: "com.t".into(),
        payload: Payload::default(),
    });
    assert_eq!(caller.expect_error(m::PUBLISH), "wamp.error.option_disallowed.disclose_me");
    let request = caller.request();
    caller.send(&Msg::Call { request, options: Dict::new(), procedure: "com.p".into(), payload: Payload::default() });
    let (_, details) = details_of(&mut callee);
    assert_eq!(dict_get(&details, "caller"), None, "{details:?}");
    r.shutdown();
}
