//! The admin listener (`--admin HOST:PORT`). Its own thread, off the
//! workers:
//! - `GET /metrics`, the Prometheus text format, from what the metrics
//!   thread has merged from the workers' snapshots (`Totals`, updated once
//!   per snapshot): a scrape costs the workers nothing;
//! - `GET /api/state`, JSON: each worker's sessions, subscriptions and
//!   load (`inspect::WorkerReport`), asked for with `ShardMsg::Inspect`
//!   and answered when the worker next reads its inbox (a worker whose
//!   inbox is full or that does not answer within a second is listed in
//!   `missing`);
//! - `POST /api/sessions/ID/kill`: ends that session (`ShardMsg::Kill`);
//! - `GET /` the web console (`console.html`, in the binary), which reads
//!   `GET /api/events`: server-sent events, the state and the totals once a
//!   second, each stream on its own thread (at most `MAX_CONSOLES`).
//!
//! With `[metrics] admin_token` every request needs `Authorization:
//! Bearer TOKEN` (or `?token=TOKEN`); the token is required when the
//! listener is not on a loopback address.

use crate::inspect::WorkerReport;
use crate::metrics::{RealmCounts, CLOSE_REASONS, OPS};
use crate::router::ShardMsg;
use crossbeam_channel::{bounded, Sender};
use mio::Waker;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the admin thread serves from.
pub struct Admin {
    pub totals: Arc<Mutex<Totals>>,
    /// Each worker's inbox and waker.
    pub workers: Vec<(Sender<ShardMsg>, Arc<Waker>)>,
    pub token: Option<String>,
}

/// How long `/api/*` waits for the workers' answers.
const ASK_LIMIT: Duration = Duration::from_secs(1);

/// Consoles (event streams) open at once at most; more get 503.
pub const MAX_CONSOLES: usize = 4;

/// The console page.
const CONSOLE: &str = include_str!("console.html");

pub use crate::metrics::Totals;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 18] = [
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The Prometheus text exposition of `t`.
pub fn render(t: &Totals) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let c = &t.counters;
    let counter = |out: &mut String, name: &str, help: &str, v: u64| one(out, name, "counter", help, v);
    counter(
        &mut out,
        "fennec_messages_received_total",
        "Messages received from clients (WAMP and MQTT).",
        c.messages_in,
    );
    counter(&mut out, "fennec_messages_sent_total", "Messages queued to clients.", c.messages_out);
    counter(&mut out, "fennec_received_bytes_total", "Bytes read from client sockets.", c.bytes_in);
    counter(&mut out, "fennec_sent_bytes_total", "Bytes written to client sockets.", c.bytes_out);
    counter(&mut out, "fennec_events_dropped_total", "Events dropped for a full outbound queue.", c.events_dropped);
    counter(&mut out, "fennec_sessions_opened_total", "Sessions opened.", c.sessions_opened);
    counter(
        &mut out,
        "fennec_mqtt_dropped_total",
        "MQTT messages not delivered (queue full, offline QoS 0, expired, too large).",
        c.mqtt_dropped,
    );
    counter(&mut out, "fennec_mqtt_connects_total", "MQTT CONNECT packets.", c.mqtt_connects);
    counter(&mut out, "fennec_mqtt_publish_received_total", "MQTT PUBLISH packets from clients.", c.mqtt_publish_in);
    counter(&mut out, "fennec_mqtt_publish_sent_total", "MQTT PUBLISH packets to clients.", c.mqtt_publish_out);
    counter(&mut out, "fennec_mqtt_denied_total", "MQTT PUBLISHes refused.", c.mqtt_denied);
    counter(
        &mut out,
        "fennec_retained_refused_total",
        "Retained writes over a bound of the store.",
        c.retained_refused,
    );
    counter(&mut out, "fennec_auth_failed_total", "Failed authentications.", c.auth_failed);
    counter(
        &mut out,
        "fennec_history_dropped_total",
        "History events pushed out by a limit or age.",
        c.history_dropped,
    );
    counter(
        &mut out,
        "fennec_log_lines_dropped_total",
        "Log lines dropped because the log thread's queue was full.",
        crate::logging::dropped(),
    );
    out.push_str("# HELP fennec_sessions_closed_total Sessions closed, by reason.\n");
    out.push_str("# TYPE fennec_sessions_closed_total counter\n");
    for (reason, n) in CLOSE_REASONS.iter().zip(c.closed) {
        out.push_str(&format!("fennec_sessions_closed_total{{reason=\"{}\"}} {n}\n", reason.name()));
    }
    counter(&mut out, "fennec_store_commits_total", "Group commits of the store thread.", c.store_commits);
    counter(&mut out, "fennec_store_writes_total", "Writes in the store's group commits.", c.store_writes);
    counter(&mut out, "fennec_store_errors_total", "Group commits that failed.", c.store_errors);
    counter(
        &mut out,
        "fennec_cluster_out_total",
        "Messages this node sent to other nodes of its cluster.",
        c.cluster_out,
    );
    counter(
        &mut out,
        "fennec_cluster_in_total",
        "Messages this node took from other nodes of its cluster.",
        c.cluster_in,
    );
    counter(
        &mut out,
        "fennec_cluster_drops_total",
        "Cross-node messages dropped (node not alive, NATS gone, a full worker, undecodable).",
        c.cluster_drops,
    );
    out.push_str("# HELP fennec_reductions_total Publications to reduced topics, by outcome: applied (the reducer's value kept), failed (ERROR, timeout, callee gone), dropped (over the key's bound, or no reducer left).\n");
    out.push_str("# TYPE fennec_reductions_total counter\n");
    for (outcome, n) in [("applied", c.reduce_applied), ("failed", c.reduce_failed), ("dropped", c.reduce_dropped)] {
        out.push_str(&format!("fennec_reductions_total{{outcome=\"{outcome}\"}} {n}\n"));
    }
    counter(
        &mut out,
        "fennec_table_errors_total",
        "Aggregate table rows a change could not be applied to (a sum that does not fit).",
        c.table_errors,
    );
    let gauge = |out: &mut String, name: &str, help: &str, v: u64| one(out, name, "gauge", help, v);
    gauge(
        &mut out,
        "fennec_sessions",
        "Sessions open (WAMP and MQTT, offline persistent ones included).",
        t.sessions.iter().sum(),
    );
    let realms = t.realm_sums();
    let all = realms.values().fold(RealmCounts::default(), |mut a, c| {
        a.add(c);
        a
    });
    gauge(&mut out, "fennec_retained_keys", "Retained keys with a value.", all.retained_keys);
    out.push_str("# HELP fennec_mqtt_sessions MQTT sessions, online (connected) or offline (persistent, waiting).\n");
    out.push_str("# TYPE fennec_mqtt_sessions gauge\n");
    out.push_str(&format!("fennec_mqtt_sessions{{state=\"online\"}} {}\n", all.mqtt_online));
    out.push_str(&format!("fennec_mqtt_sessions{{state=\"offline\"}} {}\n", all.mqtt_offline));
    // Per worker.
    let per_worker = |out: &mut String, name: &str, kind: &str, help: &str, v: &dyn Fn(usize) -> u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for w in 0..t.sessions.len() {
            out.push_str(&format!("{name}{{worker=\"{w}\"}} {}\n", v(w)));
        }
    };
    per_worker(&mut out, "fennec_worker_sessions", "gauge", "Sessions open, per worker.", &|w| t.sessions[w]);
    per_worker(&mut out, "fennec_worker_connections", "gauge", "Connections, per worker.", &|w| t.load[w].connections);
    per_worker(&mut out, "fennec_worker_queued_bytes", "gauge", "Bytes queued to clients, per worker.", &|w| {
        t.load[w].queued_bytes
    });
    per_worker(&mut out, "fennec_worker_messages_received_total", "counter", "Messages received, per worker.", &|w| {
        t.worker_counters[w].messages_in
    });
    per_worker(
        &mut out,
        "fennec_worker_messages_sent_total",
        "counter",
        "Messages queued to clients, per worker.",
        &|w| t.worker_counters[w].messages_out,
    );
    // Per realm.
    let per_realm = |out: &mut String, name: &str, kind: &str, help: &str, v: &dyn Fn(&RealmCounts) -> u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (realm, c) in &realms {
            out.push_str(&format!("{name}{{realm=\"{}\"}} {}\n", label(realm), v(c)));
        }
    };
    out.push_str("# HELP fennec_realm_sessions Sessions open, per realm and protocol (MQTT: online and offline).\n");
    out.push_str("# TYPE fennec_realm_sessions gauge\n");
    for (realm, c) in &realms {
        let realm = label(realm);
        out.push_str(&format!("fennec_realm_sessions{{realm=\"{realm}\",protocol=\"wamp\"}} {}\n", c.wamp_sessions));
        out.push_str(&format!(
            "fennec_realm_sessions{{realm=\"{realm}\",protocol=\"mqtt\"}} {}\n",
            c.mqtt_online + c.mqtt_offline
        ));
    }
    per_realm(
        &mut out,
        "fennec_realm_messages_received_total",
        "counter",
        "Messages from the realm's clients.",
        &|c| c.messages_in,
    );
    per_realm(
        &mut out,
        "fennec_realm_messages_sent_total",
        "counter",
        "Messages queued to the realm's clients.",
        &|c| c.messages_out,
    );
    per_realm(&mut out, "fennec_realm_dropped_total", "counter", "Messages dropped for the realm's clients.", &|c| {
        c.dropped
    });
    per_realm(
        &mut out,
        "fennec_realm_slow_consumer_closes_total",
        "counter",
        "Sessions of the realm closed as slow consumers.",
        &|c| c.slow_consumer_closes,
    );
    per_realm(&mut out, "fennec_realm_retained_keys", "gauge", "Retained keys with a value, per realm.", &|c| {
        c.retained_keys
    });
    out.push_str("# HELP fennec_op_duration_seconds Latency of each operation (see the README's metrics list).\n");
    out.push_str("# TYPE fennec_op_duration_seconds histogram\n");
    for (op, h) in OPS.iter().zip(&t.hist) {
        let name = op.name();
        for b in BUCKETS {
            let n = h.count_between(0, (b * 1e9) as u64);
            out.push_str(&format!("fennec_op_duration_seconds_bucket{{op=\"{name}\",le=\"{b}\"}} {n}\n"));
        }
        let count = h.len();
        out.push_str(&format!("fennec_op_duration_seconds_bucket{{op=\"{name}\",le=\"+Inf\"}} {count}\n"));
        // The sum from the recorded values (hdrhistogram keeps no exact sum).
        let sum = h.mean() * count as f64 / 1e9;
        out.push_str(&format!("fennec_op_duration_seconds_sum{{op=\"{name}\"}} {sum}\n"));
        out.push_str(&format!("fennec_op_duration_seconds_count{{op=\"{name}\"}} {count}\n"));
    }
    out
}

/// One metric without labels.
fn one(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
}

/// A label value in the text format: `\\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves the admin listener until `stop`.
/// The accept blocks (an idle admin listener costs nothing); `stop` is
/// seen at the next connection, which `Running::shutdown` makes itself.
pub fn serve(listener: TcpListener, admin: Admin, stop: Arc<AtomicBool>) {
    let admin = Arc::new(admin);
    let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok(_) if stop.load(Ordering::Relaxed) => break,
            Ok((s, _)) => answer(s, &admin, &streams, &stop),
            // Out of descriptors, say: do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(mut s: TcpStream, admin: &Arc<Admin>, streams: &Arc<std::sync::atomic::AtomicUsize>, stop: &Arc<AtomicBool>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut req = [0u8; 4096];
    let mut n = 0;
    while n < req.len() {
        match s.read(&mut req[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&req[..n]);
    let (status, kind, body) = respond(&text, admin);
    if status == "200 OK" && kind == EVENTS {
        return open_stream(s, admin, streams, stop);
    }
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes()));
}

/// The answer to one request (its head's text): status, type, body.
fn respond(request: &str, admin: &Admin) -> (&'static str, &'static str, String) {
    let first = request.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(token) = &admin.token {
        let bearer = request.lines().filter_map(|l| l.split_once(':')).find_map(|(k, v)| {
            k.trim().eq_ignore_ascii_case("authorization").then(|| v.trim().strip_prefix("Bearer ").map(str::trim))?
        });
        let in_query = query.split('&').find_map(|kv| kv.strip_prefix("token="));
        let given = bearer.or(in_query).unwrap_or("");
        let same =
            given.len() == token.len() && subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into();
        if !same {
            return (
                "401 Unauthorized",
                "text/plain",
                "an admin token is needed: Authorization: Bearer TOKEN\n".into(),
            );
        }
    }
    let json = "application/json";
    match (method, path) {
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", CONSOLE.to_owned()),
        ("GET", "/api/events") => ("200 OK", EVENTS, String::new()),
        ("GET", "/api/totals") => ("200 OK", json, totals_json(admin)),
        ("GET", "/metrics") => {
            let body = render(&admin.totals.lock().unwrap_or_else(|e| e.into_inner()));
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        ("GET", "/api/state") => ("200 OK", json, state(admin)),
        ("POST", p) if p.starts_with("/api/sessions/") && p.ends_with("/kill") => {
            match p["/api/sessions/".len()..p.len() - "/kill".len()].parse::<u64>() {
                Ok(id) if kill(admin, id) => ("200 OK", json, format!("{{\"session\":{id},\"killed\":true}}")),
                Ok(id) => ("404 Not Found", json, format!("{{\"session\":{id},\"killed\":false}}")),
                Err(_) => ("400 Bad Request", "text/plain", "a session ID is a number\n".into()),
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics or /api/state\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET, or POST /api/sessions/ID/kill\n".into()),
    }
}

const EVENTS: &str = "text/event-stream";

/// A console's event stream: the state and the totals once a second on its
/// own thread, until the console goes or the router stops.
fn open_stream(
    mut s: TcpStream,
    admin: &Arc<Admin>,
    streams: &Arc<std::sync::atomic::AtomicUsize>,
    stop: &Arc<AtomicBool>,
) {
    if streams.fetch_add(1, Ordering::AcqRel) >= MAX_CONSOLES {
        streams.fetch_sub(1, Ordering::AcqRel);
        let body = format!("at most {MAX_CONSOLES} consoles at once\n");
        let head = format!("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes()));
        return;
    }
    let (admin, open, stop) = (admin.clone(), streams.clone(), stop.clone());
    let spawned = std::thread::Builder::new().name("admin-console".into()).spawn(move || {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
        let mut ok = s.write_all(head.as_bytes()).is_ok();
        while ok && !stop.load(Ordering::Relaxed) {
            let event = format!("data: {{\"state\":{},\"totals\":{}}}\n\n", state(&admin), totals_json(&admin));
            ok = s.write_all(event.as_bytes()).is_ok();
            std::thread::sleep(Duration::from_secs(1));
        }
        open.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The totals since start as JSON: counters, sessions, each op's count and
/// p50/p99 in microseconds, closes by reason.
fn totals_json(admin: &Admin) -> String {
    let t = admin.totals.lock().unwrap_or_else(|e| e.into_inner());
    let c = &t.counters;
    let ops: serde_json::Map<String, serde_json::Value> = OPS
        .iter()
        .zip(&t.hist)
        .map(|(op, h)| {
            let us = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 };
            (op.name().to_owned(), serde_json::json!({"count": h.len(), "p50_us": us(0.5), "p99_us": us(0.99)}))
        })
        .collect();
    let closed: serde_json::Map<String, serde_json::Value> =
        CLOSE_REASONS.iter().zip(c.closed).map(|(r, n)| (r.name().to_owned(), n.into())).collect();
    let workers: Vec<serde_json::Value> = (0..t.sessions.len())
        .map(|w| {
            serde_json::json!({
                "sessions": t.sessions[w],
                "connections": t.load[w].connections,
                "queued_bytes": t.load[w].queued_bytes,
                "messages_in": t.worker_counters[w].messages_in,
                "messages_out": t.worker_counters[w].messages_out,
            })
        })
        .collect();
    serde_json::json!({
        "messages_in": c.messages_in,
        "messages_out": c.messages_out,
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "events_dropped": c.events_dropped,
        "mqtt_dropped": c.mqtt_dropped,
        "mqtt_publish_in": c.mqtt_publish_in,
        "mqtt_publish_out": c.mqtt_publish_out,
        "auth_failed": c.auth_failed,
        "sessions_opened": c.sessions_opened,
        "sessions": t.sessions.iter().sum::<u64>(),
        "worker_sessions": t.sessions,
        "workers": workers,
        "realms": t.realm_sums().into_iter().map(|(r, c)| (r.to_string(), c)).collect::<std::collections::BTreeMap<_, _>>(),
        "store_commits": c.store_commits,
        "store_writes": c.store_writes,
        "store_errors": c.store_errors,
        "cluster_out": c.cluster_out,
        "cluster_in": c.cluster_in,
        "cluster_drops": c.cluster_drops,
        "reduce_applied": c.reduce_applied,
        "reduce_failed": c.reduce_failed,
        "reduce_dropped": c.reduce_dropped,
        "table_errors": c.table_errors,
        "closed": closed,
        "ops": ops,
        "log_lines_dropped": crate::logging::dropped(),
    })
    .to_string()
}

/// Every worker's report, as JSON.
fn state(admin: &Admin) -> String {
    #[derive(serde::Serialize)]
    struct State {
        workers: Vec<WorkerReport>,
        /// Workers that did not answer in time (or whose inbox was full).
        missing: Vec<usize>,
    }
    let mut workers = ask(admin, ShardMsg::Inspect);
    workers.sort_by_key(|r| r.worker);
    let missing = (0..admin.workers.len()).filter(|i| !workers.iter().any(|r| r.worker as usize == *i)).collect();
    serde_json::to_string(&State { workers, missing }).unwrap_or_else(|_| "{}".into())
}

/// Asks every worker to end session `id`; whether one had it.
fn kill(admin: &Admin, id: u64) -> bool {
    ask(admin, |reply| ShardMsg::Kill { session: id, reply }).into_iter().any(|had| had)
}

/// Sends every worker `msg` (with a reply channel; a worker whose inbox
/// is full is skipped) and returns the answers that come within
/// `ASK_LIMIT`.
fn ask<T>(admin: &Admin, msg: impl Fn(Sender<T>) -> ShardMsg) -> Vec<T> {
    let (tx, rx) = bounded(admin.workers.len());
    let mut asked = 0;
    for (inbox, waker) in &admin.workers {
        if inbox.try_send(msg(tx.clone())).is_ok() {
            asked += 1;
            let _ = waker.wake();
        }
    }
    drop(tx);
    let until = Instant::now() + ASK_LIMIT;
    (0..asked).map_while(|_| rx.recv_deadline(until).ok()).collect()
}

/// Binds the admin listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}
