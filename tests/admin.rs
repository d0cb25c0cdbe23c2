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
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
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
    // Snapshots come every 50 ms: wait until the deliveries are counted.
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
        if delivered.is_some_and(|n| n >= 20.0) {
            break scrape;
        }
        assert!(Instant::now() < deadline, "deliveries counted in time: {delivered:?}\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let received = value(&scrape, "fennec_messages_received_total", None).unwrap();
    assert!(received >= 23.0, "2 HELLO + SUBSCRIBE + 20 PUBLISH: {received}");
    let sent = value(&scrape, "fennec_messages_sent_total", None).unwrap();
    assert!(sent >= 43.0, "2 WELCOME + SUBSCRIBED + 20 PUBLISHED + 20 EVENT: {sent}");
    assert!(value(&scrape, "fennec_sessions_opened_total", None).unwrap() >= 2.0);
    assert_eq!(value(&scrape, "fennec_sessions", None), Some(2.0));
    assert!(value(&scrape, "fennec_worker_sessions", Some(("worker", "1"))).is_some(), "per worker");
    assert!(value(&scrape, "fennec_sessions_closed_total", Some(("reason", "slow_consumer"))).is_some());
    // Anything else is not found.
    assert!(get(admin, "/").0.starts_with("HTTP/1.1 404"));
    r.shutdown();
}
