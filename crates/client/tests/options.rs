//! fennec-client passes WAMP's and Fennec's options through and reads
//! what the router puts in details, against the Fennec router in-process:
//! publisher exclusion and black/white listing, disclose_me, retained
//! values and get_retained, a conditional write refused, prefix and
//! wildcard subscriptions (the topic in details), `after` (history),
//! prefix registrations (the procedure in details), invocation policies.

mod common;

use fennec_client::{Args, Client, Error, Event, Options, Value};
use std::sync::mpsc;
use std::time::Duration;

fn router() -> (fennec::server::Running, String) {
    let toml = r#"
[[realm]]
name = "realm1"
[[realm.history]]
uri = "com.hist."
match = "prefix"
limit = 10
"#;
    let r = common::router_with(&[], toml);
    let url = common::url(&r);
    (r, url)
}

fn client(url: &str) -> Client {
    Client::connect_with(url, "realm1", Options { timeout: Some(Duration::from_secs(10)), ..Options::default() })
        .unwrap()
}

fn opt(k: &str, v: Value) -> (String, Value) {
    (k.to_owned(), v)
}

/// Subscribes `c` to `topic` with `options`; its events on the receiver.
fn listen(c: &Client, topic: &str, options: Vec<(String, Value)>) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    c.subscribe_with(topic, options, move |e| drop(tx.send(e))).unwrap();
    rx
}

fn next(rx: &mpsc::Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(5)).expect("an event")
}

fn none(rx: &mpsc::Receiver<Event>) {
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "no event");
}

fn detail<'a>(e: &'a Event, k: &str) -> Option<&'a Value> {
    e.details.iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

#[test]
fn publish_options_and_what_subscribers_see() {
    let (r, url) = router();
    let (p, s1, s2) = (client(&url), client(&url), client(&url));
    let (e1, e2) = (listen(&s1, "com.t", vec![]), listen(&s2, "com.t", vec![]));
    let me = listen(&p, "com.t", vec![]);
    let args = || Args::from(("x",)).unwrap();

    // exclude_me: false reaches the publisher too; disclose_me names it.
    p.publish_acked(
        "com.t",
        args(),
        vec![opt("exclude_me", Value::Bool(false)), opt("disclose_me", Value::Bool(true))],
    )
    .unwrap();
    let got = next(&e1);
    assert_eq!(detail(&got, "publisher").and_then(Value::as_u64), Some(p.session_id()));
    next(&e2);
    next(&me);
    // eligible / exclude.
    p.publish_acked("com.t", args(), vec![opt("eligible", Value::List(vec![Value::UInt(s1.session_id())]))]).unwrap();
    next(&e1);
    none(&e2);
    p.publish_acked("com.t", args(), vec![opt("exclude", Value::List(vec![Value::UInt(s1.session_id())]))]).unwrap();
    next(&e2);
    none(&e1);
    none(&me);
    r.shutdown();
}

#[test]
fn retained_values_conditional_writes_patterns_and_history() {
    let (r, url) = router();
    let (p, s) = (client(&url), client(&url));
    // A retained value, handed to a later subscriber first.
    p.publish_acked("com.key", Args::from((1,)).unwrap(), vec![opt("retain", Value::UInt(0))]).unwrap();
    let late = listen(&s, "com.key", vec![opt("get_retained", Value::Bool(true))]);
    let got = next(&late);
    assert_eq!(detail(&got, "retained"), Some(&Value::Bool(true)));
    assert_eq!(got.args.get::<i64>(0).unwrap(), 1);
    // when: null (only if the key has no value): refused, typed.
    let when_empty = vec![opt("retain", Value::UInt(0)), opt("when", Value::Null)];
    match p.publish_acked("com.key", Args::from((2,)).unwrap(), when_empty) {
        Err(e) => assert!(e.uri().is_some(), "an error with a URI: {e}"),
        Ok(_) => panic!("a conditional write on a key that has a value went through"),
    }
    none(&late);

    // Prefix and wildcard subscriptions name the topic.
    let prefix = listen(&s, "com.tree", vec![opt("match", Value::Str("prefix".into()))]);
    let wild = listen(&s, "com..leaf", vec![opt("match", Value::Str("wildcard".into()))]);
    p.publish_acked("com.tree.leaf", Args::default(), vec![]).unwrap();
    assert_eq!(next(&prefix).topic.as_deref(), Some("com.tree.leaf"));
    assert_eq!(next(&wild).topic.as_deref(), Some("com.tree.leaf"));

    // after: the history after a publication, then live.
    let first = p.publish_acked("com.hist.a", Args::from((1,)).unwrap(), vec![]).unwrap();
    p.publish_acked("com.hist.a", Args::from((2,)).unwrap(), vec![]).unwrap();
    p.publish_acked("com.hist.a", Args::from((3,)).unwrap(), vec![]).unwrap();
    let replay = listen(&s, "com.hist.a", vec![opt("after", Value::UInt(first))]);
    assert_eq!(next(&replay).args.get::<i64>(0).unwrap(), 2);
    assert_eq!(next(&replay).args.get::<i64>(0).unwrap(), 3);
    p.publish_acked("com.hist.a", Args::from((4,)).unwrap(), vec![]).unwrap();
    assert_eq!(next(&replay).args.get::<i64>(0).unwrap(), 4);
    r.shutdown();
}

#[test]
fn prefix_registrations_name_the_procedure() {
    let (r, url) = router();
    let (callee, caller) = (client(&url), client(&url));
    callee
        .register_with("com.api", vec![opt("match", Value::Str("prefix".into()))], |inv| {
            Args::from(inv.procedure.unwrap_or_default())
        })
        .unwrap();
    assert_eq!(caller.call::<_, String>("com.api.users.list", ()).unwrap(), "com.api.users.list");
    // disclose_me on a call names the caller to the callee.
    callee.register("com.who", |inv| Args::from(inv.caller)).unwrap();
    let who = caller.call_with("com.who", Args::default(), vec![opt("disclose_me", Value::Bool(true))]).unwrap();
    assert_eq!(who.get::<Option<u64>>(0).unwrap(), Some(caller.session_id()));
    assert!(matches!(caller.call::<_, String>("org.other", ()), Err(Error::NoSuchProcedure(_))));
    r.shutdown();
}

#[test]
fn invocation_policies_share_a_procedure() {
    let (r, url) = router();
    let (one, two, caller) = (client(&url), client(&url), client(&url));
    let shared = || vec![opt("invoke", Value::Str("roundrobin".into()))];
    for callee in [&one, &two] {
        let me = callee.session_id();
        callee.register_with("com.shared", shared(), move |_| Args::from(me)).unwrap();
    }
    let got: Vec<u64> = (0..4).map(|_| caller.call::<_, u64>("com.shared", ()).unwrap()).collect();
    assert_eq!(got[0], got[2]);
    assert_eq!(got[1], got[3]);
    assert_ne!(got[0], got[1], "round robin takes turns: {got:?}");
    // A single registration refuses a second callee, typed.
    one.register("com.single", |_| Args::from(1)).unwrap();
    assert!(matches!(two.register("com.single", |_| Args::from(2)), Err(Error::ProcedureAlreadyExists(_))));
    r.shutdown();
}

#[test]
fn typed_options_say_the_same() {
    use fennec_client::{CallOptions, Invoke, Match, PublishOptions, RegisterOptions, SubscribeOptions};
    let (r, url) = router();
    let (p, s) = (client(&url), client(&url));
    p.publish_acked("com.typed.key", Args::from((5,)).unwrap(), PublishOptions::new().retain(None)).unwrap();
    let (tx, rx) = mpsc::channel();
    let opts = SubscribeOptions::new().match_policy(Match::Prefix).get_retained(true);
    s.subscribe_with("com.typed", opts, move |e| drop(tx.send(e))).unwrap();
    let got = next(&rx);
    assert_eq!((got.topic.as_deref(), detail(&got, "retained")), (Some("com.typed.key"), Some(&Value::Bool(true))));
    // A conditional write: only if the key has no value.
    let only_new = PublishOptions::new().retain(None).when(Value::Null);
    assert!(p.publish_acked("com.typed.key", Args::from((6,)).unwrap(), only_new.clone()).is_err());
    p.publish_acked("com.typed.other", Args::from((7,)).unwrap(), only_new).unwrap();
    assert_eq!(next(&rx).args.get::<i64>(0).unwrap(), 7);
    p.publish_with("com.typed.x", Args::from((8,)).unwrap(), PublishOptions::new().exclude(&[s.session_id()])).unwrap();
    none(&rx);

    for callee in [&p, &s] {
        let me = callee.session_id();
        let opts = RegisterOptions::new().invoke(Invoke::RoundRobin).disclose_caller(true);
        callee.register_with("com.typed.rr", opts, move |inv| Args::from((me, inv.caller))).unwrap();
    }
    let caller = client(&url);
    let a = caller.call_with("com.typed.rr", Args::default(), CallOptions::new()).unwrap();
    let b = caller.call_with("com.typed.rr", Args::default(), CallOptions::new()).unwrap();
    assert_ne!(a.get::<u64>(0).unwrap(), b.get::<u64>(0).unwrap(), "round robin");
    assert_eq!(a.get::<Option<u64>>(1).unwrap(), Some(caller.session_id()), "disclose_caller");
    // The router's call timeout.
    p.register("com.typed.slow", |_| {
        std::thread::sleep(Duration::from_millis(800));
        Args::from(1)
    })
    .unwrap();
    let quick = CallOptions::new().timeout(Duration::from_millis(100));
    assert!(matches!(caller.call_with("com.typed.slow", Args::default(), quick), Err(Error::Timeout(_))));
    r.shutdown();
}
