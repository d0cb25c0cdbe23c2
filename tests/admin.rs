//! The admin listener's `GET /metrics`, read by a real Prometheus
//! text-format parser (the `prometheus-parse` crate): counters, gauges and
//! the latency histograms reflect traffic that went through the router.

#[allow(unused_imports)]
mod common;

use common::{args, join, opts};
use fennec::value::Value;
use fennec::wamp::message::{Msg, Serializer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    request(addr, "GET", path, "")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))).map(|s| {
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        }
    })
}

#[test]
fn metrics_are_served_in_the_prometheus_format() {
    let r = common::router(&["--admin", "127.0.0.1:0", "--metrics-interval-ms", "50", "--cores", "2"]);
    let admin = r.admin_addr.expect("admin listener");
    let mut sub = join(r.local_addr, Serializer::Json);
    let request = sub.request();
    sub.send(&Msg::Subscribe { request, options: vec![], topic: "prom.t".into() });
    assert!(matches!(sub.recv(), Msg::Subscribed { .. }));
    let mut publ = join(r.local_addr, Serializer::Json);
    for i in 0..20u64 {
        let request = publ.request();
        let options = opts(&[("acknowledge", Value::Bool(true))]);
        publ.send(&Msg::Publish { request, options, topic: "prom.t".into(), payload: args(vec![Value::UInt(i)]) });
        assert!(matches!(publ.recv(), Msg::Published { .. }));
        assert!(matches!(sub.recv(), Msg::Event { .. }));
    }
    // Snapshots come every 50 ms, from each worker on its own: wait until
    // both workers' counts are in (the PUBLISHes are counted on the
    // publisher's, the deliveries on the subscriber's).
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (head, body) = get(admin, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"), "{head}");
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
        let delivered = scrape
            .samples
            .iter()
            .find(|s| s.metric == "fennec_op_duration_seconds" && s.labels.get("op") == Some("publish_deliver"))
            .and_then(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => h.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count),
                _ => None,
            });
        let received = value(&scrape, "fennec_messages_received_total", None).unwrap_or(0.0);
        let sent = value(&scrape, "fennec_messages_sent_total", None).unwrap_or(0.0);
        if delivered.is_some_and(|n| n >= 20.0) && received >= 23.0 && sent >= 43.0 {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "in time: 20 deliveries ({delivered:?}), 2 HELLO + SUBSCRIBE + 20 PUBLISH received ({received}), \
             2 WELCOME + SUBSCRIBED + 20 PUBLISHED + 20 EVENT sent ({sent})\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(value(&scrape, "fennec_sessions_opened_total", None).unwrap() >= 2.0);
    assert_eq!(value(&scrape, "fennec_sessions", None), Some(2.0));
    assert!(value(&scrape, "fennec_worker_sessions", Some(("worker", "1"))).is_some(), "per worker");
    assert!(value(&scrape, "fennec_sessions_closed_total", Some(("reason", "slow_consumer"))).is_some());
    // The console page is at /; anything else is not found.
    let (head, body) = get(admin, "/");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/html") && body.contains("EventSource"), "{head}");
    assert!(get(admin, "/nothing").0.starts_with("HTTP/1.1 404"));
    r.shutdown();
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// `/api/state` lists the WAMP and MQTT sessions and the subscriptions of
/// every worker; `/api/sessions/ID/kill` ends one.
#[test]
fn state_lists_sessions_and_kill_ends_one() {
    use common::raw::{subscribe_packet, Raw};
    let r = common::router(&["--admin", "127.0.0.1:0", "--cores", "2"]);
    let admin = r.admin_addr.expect("admin listener");
    let mut wamp = join(r.local_addr, Serializer::Json);
    let request_id = wamp.request();
    wamp.send(&Msg::Subscribe { request: request_id, options: vec![], topic: "state.t".into() });
    assert!(matches!(wamp.recv(), Msg::Subscribed { .. }));
    let (mut m, _) = Raw::connected(r.mqtt_addr.unwrap(), 4, "state-client", true, 60);
    m.send(&subscribe_packet(b"state/m"));
    m.expect(0x90, "SUBACK");

    let (head, body) = request(admin, "GET", "/api/state", "");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("application/json"), "{head}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    let workers = state["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{body}");
    assert_eq!(state["missing"], serde_json::json!([]));
    let sessions: Vec<&serde_json::Value> = workers.iter().flat_map(|w| w["sessions"].as_array().unwrap()).collect();
    let wamp_s = sessions.iter().find(|s| s["protocol"] == "wamp").expect("the WAMP session");
    let mqtt_s = sessions.iter().find(|s| s["protocol"] == "mqtt").expect("the MQTT session");
    assert_eq!(wamp_s["realm"], "realm1");
    assert!(wamp_s["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{wamp_s}");
    assert_eq!((wamp_s["online"].as_bool(), wamp_s["subscriptions"].as_u64()), (Some(true), Some(1)));
    assert_eq!((mqtt_s["online"].as_bool(), mqtt_s["subscriptions"].as_u64()), (Some(true), Some(1)));
    let subs: Vec<&serde_json::Value> = workers.iter().flat_map(|w| w["subscriptions"].as_array().unwrap()).collect();
    assert!(subs.iter().any(|s| s["topic"] == "state.t" && s["wamp_subscribers"] == 1 && s["match"] == "exact"));
    assert!(subs.iter().any(|s| s["topic"] == "state.m" && s["mqtt_subscribers"] == 1), "{subs:?}");

    // Kill the WAMP session: GOODBYE wamp.close.killed.
    let id = wamp_s["id"].as_u64().unwrap();
    let (head, body) = request(admin, "POST", &format!("/api/sessions/{id}/kill"), "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    match wamp.recv() {
        Msg::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.killed"),
        other => panic!("{other:?}"),
    }
    // The MQTT one: its connection is closed.
    let id = mqtt_s["id"].as_u64().unwrap();
    assert!(request(admin, "POST", &format!("/api/sessions/{id}/kill"), "").0.starts_with("HTTP/1.1 200"));
    m.closed();
    // Both are among the last closes, with their reason.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state: serde_json::Value = serde_json::from_str(&request(admin, "GET", "/api/state", "").1).unwrap();
        let closes: Vec<serde_json::Value> = state["workers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|w| w["recent_closes"].as_array().unwrap().clone())
            .collect();
        let killed =
            |p: &str| closes.iter().any(|c| c["protocol"] == p && c["reason"] == "killed" && c["realm"] == "realm1");
        if killed("wamp") && killed("mqtt") {
            break;
        }
        assert!(Instant::now() < deadline, "the kills among the last closes: {closes:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(request(admin, "POST", "/api/sessions/12345/kill", "").0.starts_with("HTTP/1.1 404"));
    assert!(request(admin, "POST", "/api/sessions/x/kill", "").0.starts_with("HTTP/1.1 400"));
    assert!(request(admin, "DELETE", "/api/state", "").0.starts_with("HTTP/1.1 405"));
}

/// With `admin_token`, every admin request needs it.
#[test]
fn an_admin_token_guards_every_endpoint() {
    let r = common::router_with_config(&["--admin", "127.0.0.1:0"], "[metrics]\nadmin_token = \"s3cret\"\n");
    let admin = r.admin_addr.unwrap();
    for path in ["/metrics", "/api/state"] {
        assert!(request(admin, "GET", path, "").0.starts_with("HTTP/1.1 401"), "{path} without the token");
        assert!(request(admin, "GET", path, "Authorization: Bearer nope\r\n").0.starts_with("HTTP/1.1 401"));
        let (head, _) = request(admin, "GET", path, "Authorization: Bearer s3cret\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    }
    assert!(request(admin, "GET", "/metrics?token=s3cret", "").0.starts_with("HTTP/1.1 200"));
    // Not on loopback: the token is required.
    let cli = <fennec::config::Cli as clap::Parser>::try_parse_from(["fennec", "--admin", "0.0.0.0:9180"]).unwrap();
    let err = fennec::config::Config::resolve(cli, fennec::config::File::default()).unwrap_err();
    assert!(err.contains("admin_token"), "{err}");
}

/// Per realm, per worker, MQTT online/offline, retained keys and the
/// store's commits: each reflects what the clients did, and a realm's
/// counters keep what its sessions counted after they end.
#[test]
fn realm_worker_mqtt_and_store_metrics() {
    use common::raw::Raw;
    let flags = ["--admin", "127.0.0.1:0", "--metrics-interval-ms", "50", "--realm", "realm1", "--realm", "other"];
    let r = common::router_with_store(&flags, Default::default(), Box::new(fennec::store::MemStore::default()));
    let admin = r.admin_addr.expect("admin listener");
    let mut publ = common::join_realm(r.local_addr, Serializer::Json, "realm1");
    for i in 0..5u64 {
        let request = publ.request();
        let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true))]);
        let topic = format!("metrics.key{}", i % 2);
        publ.send(&Msg::Publish { request, options, topic, payload: args(vec![Value::UInt(i)]) });
        assert!(matches!(publ.recv(), Msg::Published { .. }));
    }
    let mut other = common::join_realm(r.local_addr, Serializer::Json, "other");
    let request = other.request();
    other.send(&Msg::Subscribe { request, options: vec![], topic: "o.t".into() });
    assert!(matches!(other.recv(), Msg::Subscribed { .. }));
    // One MQTT session that stays online, one persistent one that goes offline.
    let mqtt = r.mqtt_addr.unwrap();
    let (_online, _) = Raw::connected(mqtt, 4, "metrics-online", true, 60);
    let (mut away, _) = Raw::connected(mqtt, 4, "metrics-away", false, 60);
    away.send(&[0xE0, 0x00]);
    away.closed();

    let scrape = |want: &dyn Fn(&prometheus_parse::Scrape) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = get(admin, "/metrics").1;
            let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("format");
            if want(&scrape) {
                return scrape;
            }
            assert!(Instant::now() < deadline, "{what}:\n{body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let realm = |s: &prometheus_parse::Scrape, name: &str, realm: &str| value(s, name, Some(("realm", realm)));
    let sessions = |s: &prometheus_parse::Scrape, realm: &str, proto: &str| {
        s.samples
            .iter()
            .find(|x| {
                x.metric == "fennec_realm_sessions"
                    && x.labels.get("realm") == Some(realm)
                    && x.labels.get("protocol") == Some(proto)
            })
            .map(|x| match x.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
    };
    let s = scrape(
        &|s| {
            value(s, "fennec_mqtt_sessions", Some(("state", "offline"))) == Some(1.0)
                && value(s, "fennec_mqtt_sessions", Some(("state", "online"))) == Some(1.0)
                && sessions(s, "realm1", "wamp") == Some(1.0)
                && sessions(s, "other", "wamp") == Some(1.0)
                && realm(s, "fennec_realm_messages_received_total", "realm1") >= Some(6.0)
                && value(s, "fennec_store_writes_total", None) >= Some(5.0)
        },
        "sessions per realm, MQTT online and offline, HELLO + 5 PUBLISH in realm1, 5 stored writes",
    );
    // The MQTT sessions are realm1's (the first realm is MQTT's).
    assert_eq!(sessions(&s, "realm1", "mqtt"), Some(2.0));
    assert_eq!(sessions(&s, "other", "mqtt"), Some(0.0));
    assert_eq!(value(&s, "fennec_retained_keys", None), Some(2.0), "two keys written");
    assert_eq!(realm(&s, "fennec_realm_retained_keys", "realm1"), Some(2.0));
    assert_eq!(realm(&s, "fennec_realm_messages_received_total", "other"), Some(2.0), "HELLO + SUBSCRIBE");
    assert_eq!(realm(&s, "fennec_realm_messages_sent_total", "other"), Some(2.0), "WELCOME + SUBSCRIBED");
    assert!(value(&s, "fennec_store_commits_total", None) >= Some(1.0));
    assert_eq!(value(&s, "fennec_store_errors_total", None), Some(0.0));
    let commits = s
        .samples
        .iter()
        .find(|x| x.metric == "fennec_op_duration_seconds" && x.labels.get("op") == Some("store_commit"));
    let timed = commits.and_then(|x| match &x.value {
        prometheus_parse::Value::Histogram(h) => h.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count),
        _ => None,
    });
    assert!(timed >= Some(1.0), "commits timed: {timed:?}");
    let per_worker: f64 =
        (0..2).map(|w| value(&s, "fennec_worker_connections", Some(("worker", &w.to_string()))).unwrap()).sum();
    assert!(per_worker >= 3.0, "two WAMP and one MQTT connection over the workers: {per_worker}");
    let received = realm(&s, "fennec_realm_messages_received_total", "realm1").unwrap();

    // The publisher leaves: realm1's counters keep its messages.
    publ.send(&Msg::Goodbye { details: vec![], reason: "wamp.close.normal".into() });
    assert!(matches!(publ.recv(), Msg::Goodbye { .. }));
    let s = scrape(&|s| sessions(s, "realm1", "wamp") == Some(0.0), "the publisher gone");
    assert!(realm(&s, "fennec_realm_messages_received_total", "realm1") >= Some(received + 1.0), "and its GOODBYE");
    r.shutdown();
}
