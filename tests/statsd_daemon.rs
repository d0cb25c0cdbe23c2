//! Fennec's metrics through the real StatsD daemon (npm `statsd`, the Etsy
//! one users run) and its graphite backend, into a stand-in Graphite
//! (carbon's plaintext protocol, which is all the backend speaks): the
//! names and types aggregate as a StatsD user sees them, and StatsD and
//! Prometheus show the same totals for the same traffic.
//!
//! Needs `node` and `tests/node/node_modules/statsd` (scripts/test installs
//! both; `tests/node.rs` installs the npm packages when missing).

#[allow(unused_imports)]
mod common;

use common::{args, join};
use fennec::value::{Dict, Value};
use fennec::wamp::message::{Msg, Serializer};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What carbon received: `path value timestamp` lines.
type Received = Arc<Mutex<Vec<(String, f64)>>>;

fn carbon() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    let mut parts = line.split_whitespace();
                    if let (Some(path), Some(v)) = (parts.next(), parts.next().and_then(|v| v.parse().ok())) {
                        sink.lock().unwrap().push((path.to_owned(), v));
                    }
                }
            });
        }
    });
    (addr, got)
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let body = all.split_once("\r\n\r\n").unwrap().1;
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| l.split_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
        .collect()
}

#[test]
fn metrics_aggregate_in_the_real_statsd_daemon() {
    let statsd_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/node_modules/statsd");
    assert!(statsd_dir.join("stats.js").exists(), "npm statsd in tests/node/node_modules (scripts/test installs it)");
    let (carbon_addr, got) = carbon();
    let dir = tempfile::tempdir().unwrap();
    // A port free a moment ago may be taken by the time the daemon binds
    // it (other tests run alongside): a daemon that exits at once is
    // started again on other ports.
    let mut started = None;
    for _ in 0..5 {
        let udp = free_port();
        let config = dir.path().join("statsd.js");
        std::fs::write(
            &config,
            format!(
                "{{ port: {udp}, address: '127.0.0.1', mgmt_port: {mgmt}, mgmt_address: '127.0.0.1',
                   graphiteHost: '127.0.0.1', graphitePort: {carbon}, backends: ['./backends/graphite'],
                   flushInterval: 300 }}",
                mgmt = free_tcp_port(),
                carbon = carbon_addr.port()
            ),
        )
        .unwrap();
        let mut daemon = Daemon(
            Command::new("node")
                .arg(statsd_dir.join("stats.js"))
                .arg(&config)
                .current_dir(&statsd_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("node"),
        );
        // The daemon listens once it has read its configuration.
        std::thread::sleep(Duration::from_millis(800));
        if daemon.0.try_wait().expect("the daemon's status").is_none() {
            started = Some((daemon, udp));
            break;
        }
    }
    let (daemon, udp) = started.expect("the statsd daemon started");

    let r = common::router(&[
        "--cores",
        "2",
        "--admin",
        "127.0.0.1:0",
        "--statsd",
        &format!("127.0.0.1:{udp}"),
        "--metrics-interval-ms",
        "200",
    ]);
    let mut sub = join(r.local_addr, Serializer::Json);
    sub.subscribe("sd.t", Dict::new());
    let mut publ = join(r.local_addr, Serializer::MsgPack);
    for i in 0..50u64 {
        publ.publish("sd.t", args(vec![Value::UInt(i)]), true);
        assert!(matches!(sub.recv(), Msg::Event { .. }));
    }

    // Counters: what the daemon flushed over all intervals adds up to the
    // Prometheus totals once traffic has stopped.
    let admin = r.admin_addr.unwrap();
    let sum = |path: &str| got.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, v)| v).sum::<f64>();
    let last = |path: &str| got.lock().unwrap().iter().rev().find(|(p, _)| p == path).map(|(_, v)| *v);
    let pairs = [
        ("stats_counts.fennec.messages.in", "fennec_messages_received_total"),
        ("stats_counts.fennec.messages.out", "fennec_messages_sent_total"),
        ("stats_counts.fennec.sessions.opened", "fennec_sessions_opened_total"),
        ("stats_counts.fennec.bytes.in", "fennec_received_bytes_total"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let prom = scrape(admin);
        let same = pairs.iter().all(|(s, p)| prom.get(*p).is_some_and(|v| *v > 0.0 && *v == sum(s)));
        if same && last("stats.gauges.fennec.sessions.active") == prom.get("fennec_sessions").copied() {
            assert!(prom["fennec_messages_received_total"] >= 53.0, "2 HELLO, SUBSCRIBE, 50 PUBLISH");
            break;
        }
        let seen: Vec<_> = pairs.iter().map(|(s, p)| (sum(s), prom.get(*p).copied())).collect();
        assert!(Instant::now() < deadline, "StatsD (via the daemon) and Prometheus agree: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last("stats.gauges.fennec.sessions.active"), Some(2.0));
    // Per-second rates next to the counts, and the latency gauges.
    assert!(got.lock().unwrap().iter().any(|(p, v)| p == "stats.fennec.messages.in" && *v > 0.0));
    for op in ["publish_deliver", "subscribe", "session_open"] {
        let p99 = last(&format!("stats.gauges.fennec.latency.{op}.p99_us"));
        assert!(p99.is_some_and(|v| v > 0.0), "{op} p99: {p99:?}");
        assert!(sum(&format!("stats_counts.fennec.latency.{op}.count")) >= 1.0, "{op} count");
    }
    assert_eq!(sum("stats_counts.fennec.latency.publish_deliver.count"), 50.0);
    r.shutdown();
    drop(daemon);
}
