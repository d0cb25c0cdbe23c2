//! The Grafana dashboards in contrib/grafana use only metrics Fennec sends:
//! every metric name in the Prometheus dashboard's queries is in a scrape
//! of `/metrics`, and every Graphite path in the StatsD dashboard matches a
//! name Fennec sent over StatsD, after WAMP and MQTT traffic and a store
//! commit.

#[allow(unused_imports)]
mod common;

use common::raw::{publish_packet, subscribe_packet, Raw};
use common::{args, join, statsd_lines};
use fennec::value::Value;
use fennec::wamp::message::{Msg, Serializer};
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn dashboard(name: &str) -> Json {
    let path = format!("{}/contrib/grafana/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let d: Json = serde_json::from_str(&text).expect("JSON");
    assert!(d["panels"].as_array().is_some_and(|p| p.len() >= 8), "{name}: panels");
    d
}

/// Every target's `field` (`expr` or `target`), over all panels.
fn queries(d: &Json, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().expect("targets") {
            out.push(t[field].as_str().unwrap_or_else(|| panic!("{field} in {t}")).to_owned());
        }
    }
    assert!(!out.is_empty());
    out
}

fn scrape(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    all.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// `fennec_...` words in a PromQL expression.
fn prom_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("fennec_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// A Graphite path with `*` globs matches a dotted name.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), name.split('.').collect());
    p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| *p == "*" || p == n)
}

/// The metric path of a Graphite target: `stats.$prefix.X` (a counter)
/// or `stats.gauges.$prefix.X` (a gauge), inside its function calls.
fn graphite_path(target: &str) -> String {
    let start = target.find("stats.").expect("a stats. path");
    let path = &target[start..];
    let end = path.find([',', ')']).unwrap_or(path.len());
    let path = &path[..end];
    path.strip_prefix("stats.gauges.$prefix.")
        .or_else(|| path.strip_prefix("stats.$prefix."))
        .unwrap_or_else(|| panic!("{path}: not under stats.$prefix or stats.gauges.$prefix"))
        .to_owned()
}

#[test]
fn dashboards_use_only_metrics_fennec_sends() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let target = statsd.local_addr().unwrap().to_string();
    // With a store (in memory), so that the store's metrics are sent too.
    let flags = ["--admin", "127.0.0.1:0", "--statsd", &target, "--metrics-interval-ms", "100"];
    let r = common::router_with_store(&flags, Default::default(), Box::new(fennec::store::MemStore::default()));
    // WAMP pub/sub, and a WAMP event to an MQTT subscriber (an MQTT delivery).
    let mqtt = r.mqtt_addr.expect("MQTT listener");
    let (mut m, _) = Raw::connected(mqtt, 4, "grafana-sub", true, 60);
    m.send(&subscribe_packet(b"g/t"));
    m.expect(0x90, "SUBACK");
    let mut sub = join(r.local_addr, Serializer::Json);
    sub.subscribe("g.t", vec![]);
    let mut publ = join(r.local_addr, Serializer::Json);
    for i in 0..5u64 {
        publ.publish("g.t", args(vec![Value::UInt(i)]), true);
        assert!(matches!(sub.recv(), Msg::Event { .. }));
        m.expect(0x30, "PUBLISH");
    }
    m.send(&publish_packet(4, b"g/t", 0, 0, false, b"1"));
    assert!(matches!(sub.recv(), Msg::Event { .. }));
    // A retained write: a store commit.
    let request = publ.request();
    let options = common::opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true))]);
    publ.send(&Msg::Publish { request, options, topic: "g.kept".into(), payload: args(vec![Value::UInt(1)]) });
    assert!(matches!(publ.recv(), Msg::Published { .. }));

    // StatsD: the names sent, prefix taken off.
    // One whole interval with the MQTT delivery in it: each realm's
    // `slow_consumer_closes` comes last in an interval's datagrams (the
    // gauges and the realms follow `sessions.active`, and where a datagram
    // ends depends on how long the values are).
    let whole = |l: &str| {
        let after = |what: &str| l.find(what).is_some_and(|i| l[i..].contains("realm1.slow_consumer_closes"));
        after("qos0.p99_us") && after("store_commit.p99_us")
    };
    let lines = statsd_lines(&statsd, whole, Duration::from_secs(10));
    let sent: BTreeSet<String> =
        lines.lines().filter_map(|l| l.split(':').next()?.strip_prefix("fennec.").map(str::to_owned)).collect();
    for t in queries(&dashboard("fennec-statsd.json"), "target") {
        let path = graphite_path(&t);
        assert!(sent.iter().any(|n| glob(&path, n)), "StatsD dashboard: {path} matches nothing sent: {sent:?}");
    }

    // Prometheus: every name in the queries is in a scrape.
    let body = scrape(r.admin_addr.expect("admin listener"));
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("the text format");
    let present: BTreeSet<&str> = parsed.samples.iter().map(|s| s.metric.as_str()).collect();
    for expr in queries(&dashboard("fennec-prometheus.json"), "expr") {
        for name in prom_names(&expr) {
            // A histogram's series are parsed into its base name.
            let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
            assert!(present.contains(base), "Prometheus dashboard: {name} (in {expr}) is not in /metrics");
        }
    }
    // The op and reason label values the queries pick are ones Fennec uses.
    assert!(body.contains("op=\"mqtt.publish_deliver.qos0\""), "MQTT delivery op");
    assert!(body.contains("reason=\"slow_consumer\""));
    r.shutdown();
}
