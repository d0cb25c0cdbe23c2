//! Latency histograms and counters.
//!
//! Each worker records into its own [`WorkerMetrics`] (no sharing, no atomics,
//! no allocation: histograms are pre-sized for 1 ns .. 60 s). Every interval it
//! sends a snapshot to the `metrics` thread, which merges the workers' data
//! and emits it to StatsD: per op `p50`, `p90`, `p99`, `max` (microseconds)
//! and `count` as gauges, and counters as StatsD counters.

use crate::config::Metrics as MetricsConfig;
use crate::router::Realm;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Timed operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// PUBLISH decoded -> EVENT bytes queued on the subscriber's connection.
    PublishDeliver,
    /// CALL decoded -> RESULT (or ERROR) queued on the caller's connection.
    CallResult,
    /// SUBSCRIBE decoded -> SUBSCRIBED queued (barrier included).
    Subscribe,
    /// REGISTER decoded -> REGISTERED queued (barrier included).
    Register,
    /// HELLO decoded -> WELCOME queued.
    SessionOpen,
    /// MQTT PUBLISH (or WAMP PUBLISH) decoded -> MQTT PUBLISH queued on a
    /// subscriber's connection, by the QoS it is delivered with.
    MqttDeliver0,
    MqttDeliver1,
    MqttDeliver2,
    /// CONNECT decoded -> CONNACK queued (session registry round trip included).
    MqttConnect,
    /// A dynamic authorizer's decision: asked -> answered (cache misses only).
    Authorize,
    /// One group commit of the store thread (writing, and fsync under
    /// `--durability sync`).
    StoreCommit,
}

pub const OPS: [Op; 11] = [
    Op::PublishDeliver,
    Op::CallResult,
    Op::Subscribe,
    Op::Register,
    Op::SessionOpen,
    Op::MqttDeliver0,
    Op::MqttDeliver1,
    Op::MqttDeliver2,
    Op::MqttConnect,
    Op::Authorize,
    Op::StoreCommit,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::PublishDeliver => "publish_deliver",
            Op::CallResult => "call_result",
            Op::Subscribe => "subscribe",
            Op::Register => "register",
            Op::SessionOpen => "session_open",
            Op::MqttDeliver0 => "mqtt.publish_deliver.qos0",
            Op::MqttDeliver1 => "mqtt.publish_deliver.qos1",
            Op::MqttDeliver2 => "mqtt.publish_deliver.qos2",
            Op::MqttConnect => "mqtt.connect",
            Op::Authorize => "authorize",
            Op::StoreCommit => "store_commit",
        }
    }
}

/// Why a session or connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// GOODBYE, or a WebSocket close from the client.
    Client,
    /// The peer vanished: EOF or a socket error without a goodbye.
    Lost,
    ProtocolViolation,
    SlowConsumer,
    Shutdown,
    /// Refused at the HTTP handshake.
    Handshake,
    /// MQTT keep-alive expired.
    KeepAlive,
    /// MQTT session taken over by a new connection with the same client ID.
    TakenOver,
    /// Ended by the WAMP meta API (`wamp.session.kill*`).
    Killed,
}

pub const CLOSE_REASONS: [CloseReason; 9] = [
    CloseReason::Client,
    CloseReason::Lost,
    CloseReason::ProtocolViolation,
    CloseReason::SlowConsumer,
    CloseReason::Shutdown,
    CloseReason::Handshake,
    CloseReason::KeepAlive,
    CloseReason::TakenOver,
    CloseReason::Killed,
];

impl CloseReason {
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Lost => "lost",
            CloseReason::ProtocolViolation => "protocol_violation",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Handshake => "handshake",
            CloseReason::KeepAlive => "keep_alive",
            CloseReason::TakenOver => "taken_over",
            CloseReason::Killed => "killed",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub events_dropped: u64,
    pub sessions_opened: u64,
    /// MQTT messages not delivered: a persistent session's queue full, QoS 0
    /// for an offline session, expired, or over the client's maximum packet size.
    pub mqtt_dropped: u64,
    pub mqtt_connects: u64,
    /// MQTT PUBLISH packets from clients, and to them.
    pub mqtt_publish_in: u64,
    pub mqtt_publish_out: u64,
    /// Client PUBLISHes refused (`$SYS` topics).
    pub mqtt_denied: u64,
    /// Failed authentications (WAMP and MQTT).
    pub auth_failed: u64,
    /// Retained writes refused at their owner (`store.max_retained_*`).
    pub retained_refused: u64,
    /// History events pushed out by a rule's `limit` or `max_age_s`.
    pub history_dropped: u64,
    /// The store thread's group commits, the writes in them, and the
    /// commits that failed.
    pub store_commits: u64,
    pub store_writes: u64,
    pub store_errors: u64,
    /// Reducers (`worker::reduce`): values a reducer returned and the key
    /// took; publications it failed (ERROR, timeout, callee gone);
    /// publications dropped (over the key's bound, or no reducer left).
    pub reduce_applied: u64,
    pub reduce_failed: u64,
    pub reduce_dropped: u64,
    /// Aggregate rows a change could not be applied to (a sum that does
    /// not fit).
    pub table_errors: u64,
    /// The cluster thread (`--cluster`): messages sent to other nodes
    /// (publications, once per node, and worker messages), messages taken
    /// from them, and what it dropped (a node not alive, NATS gone, a full
    /// worker inbox, an undecodable message).
    pub cluster_out: u64,
    pub cluster_in: u64,
    pub cluster_drops: u64,
    pub closed: [u64; CLOSE_REASONS.len()],
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.events_dropped += o.events_dropped;
        self.sessions_opened += o.sessions_opened;
        self.mqtt_dropped += o.mqtt_dropped;
        self.mqtt_connects += o.mqtt_connects;
        self.mqtt_publish_in += o.mqtt_publish_in;
        self.mqtt_publish_out += o.mqtt_publish_out;
        self.mqtt_denied += o.mqtt_denied;
        self.retained_refused += o.retained_refused;
        self.auth_failed += o.auth_failed;
        self.history_dropped += o.history_dropped;
        self.store_commits += o.store_commits;
        self.store_writes += o.store_writes;
        self.store_errors += o.store_errors;
        self.reduce_applied += o.reduce_applied;
        self.reduce_failed += o.reduce_failed;
        self.reduce_dropped += o.reduce_dropped;
        self.table_errors += o.table_errors;
        self.cluster_out += o.cluster_out;
        self.cluster_in += o.cluster_in;
        self.cluster_drops += o.cluster_drops;
        for (a, b) in self.closed.iter_mut().zip(o.closed) {
            *a += b;
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits: ~180 KiB per histogram, once per worker.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

pub struct WorkerMetrics {
    hist: Vec<Histogram<u64>>,
    pub counters: Counters,
    /// Sessions currently open on this worker.
    pub sessions: u64,
    /// The counters of every snapshot taken so far (for `$SYS`).
    taken: Counters,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            hist: OPS.iter().map(|_| histogram()).collect(),
            counters: Counters::default(),
            sessions: 0,
            taken: Counters::default(),
        }
    }
}

impl WorkerMetrics {
    /// Records one latency. No allocation, no syscall.
    #[inline]
    pub fn record(&mut self, op: Op, since: Instant, now: Instant) {
        let ns = now.saturating_duration_since(since).as_nanos() as u64;
        self.hist[op as usize].saturating_record(ns.max(1));
    }

    /// Records `count` deliveries that share one latency.
    #[inline]
    pub fn record_n(&mut self, op: Op, since: Instant, now: Instant, count: u64) {
        let ns = now.saturating_duration_since(since).as_nanos() as u64;
        // In range by construction (clamped to the histogram's bounds).
        let _ = self.hist[op as usize].record_n(ns.clamp(1, 60_000_000_000), count);
    }

    /// Everything counted since start.
    pub fn totals(&self) -> Counters {
        let mut t = self.taken.clone();
        t.add(&self.counters);
        t
    }

    pub fn closed(&mut self, reason: CloseReason) {
        let i = CLOSE_REASONS.iter().position(|r| *r == reason).expect("listed");
        self.counters.closed[i] += 1;
    }

    /// Takes the data recorded since the last snapshot (off the hot path:
    /// called once per interval; clones the histograms). The caller adds
    /// what only the shard knows (`load`, `realms`).
    pub fn snapshot(&mut self) -> Snapshot {
        self.taken.add(&self.counters);
        let snap = Snapshot {
            hist: self.hist.clone(),
            counters: std::mem::take(&mut self.counters),
            sessions: self.sessions,
            load: Load::default(),
            realms: Vec::new(),
        };
        for h in &mut self.hist {
            h.reset();
        }
        snap
    }
}

/// One worker's (or the store thread's) data for one interval.
pub struct Snapshot {
    pub hist: Vec<Histogram<u64>>,
    /// Counted since the previous snapshot.
    pub counters: Counters,
    pub sessions: u64,
    /// The worker's load now.
    pub load: Load,
    /// Each realm's figures on this worker: sessions now, counters since
    /// start (`RealmTotals` plus the live sessions'), at most
    /// `MAX_REALM_SERIES` + 1 entries.
    pub realms: Vec<(Realm, RealmCounts)>,
}

/// Who sent a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Worker(usize),
    Store,
    Cluster,
}

/// A worker's load at a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub connections: u64,
    /// Bytes queued to clients, over all its connections.
    pub queued_bytes: u64,
}

/// One realm's figures (on one worker, or summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RealmCounts {
    /// Sessions now.
    pub wamp_sessions: u64,
    pub mqtt_online: u64,
    pub mqtt_offline: u64,
    /// Retained keys with a value now, on the worker that owns them.
    pub retained_keys: u64,
    /// Since start.
    pub messages_in: u64,
    pub messages_out: u64,
    pub dropped: u64,
    pub slow_consumer_closes: u64,
}

impl RealmCounts {
    pub fn add(&mut self, o: &RealmCounts) {
        self.wamp_sessions += o.wamp_sessions;
        self.mqtt_online += o.mqtt_online;
        self.mqtt_offline += o.mqtt_offline;
        self.retained_keys += o.retained_keys;
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.dropped += o.dropped;
        self.slow_consumer_closes += o.slow_consumer_closes;
    }
}

/// Realms that get series of their own, per worker (the first seen); the
/// figures of any later one (possible with `--any-realm`) are summed under
/// `OTHER_REALM`, so a client making up realm names cannot grow the
/// metrics without bound.
pub const MAX_REALM_SERIES: usize = 256;
pub const OTHER_REALM: &str = "_other";

/// What the sessions that ended on a worker counted, per realm (a live
/// session's counts are added at each snapshot, and folded in here when it
/// ends, so the sum only grows).
#[derive(Debug, Default)]
pub struct RealmTotals {
    map: ahash::AHashMap<Realm, RealmCounts>,
}

impl RealmTotals {
    /// The entry `realm` counts under.
    pub fn entry(&mut self, realm: &Realm) -> &mut RealmCounts {
        if !self.map.contains_key(realm) {
            let key = if self.map.len() < MAX_REALM_SERIES { realm.clone() } else { Realm::from(OTHER_REALM) };
            return self.map.entry(key).or_default();
        }
        self.map.get_mut(realm).expect("present")
    }

    /// The ended sessions' figures, for a snapshot to add the live ones to.
    pub fn start_report(&self) -> RealmReport {
        let list: Vec<(Realm, RealmCounts)> = self.map.iter().map(|(r, c)| (r.clone(), *c)).collect();
        let index = list.iter().enumerate().map(|(i, (r, _))| (r.clone(), i)).collect();
        RealmReport { list, index, last: 0 }
    }
}

/// A snapshot's realm figures while they are gathered: one pass adds
/// every live session, mostly of the realm the one before was of (the
/// last entry is tried first, by pointer, before the name is hashed).
pub struct RealmReport {
    list: Vec<(Realm, RealmCounts)>,
    index: ahash::AHashMap<Realm, usize>,
    last: usize,
}

impl RealmReport {
    /// The entry `realm` counts under (the same bound as `RealmTotals`).
    pub fn get(&mut self, realm: &Realm) -> &mut RealmCounts {
        let hit = self.list.get(self.last).is_some_and(|(r, _)| std::sync::Arc::ptr_eq(r, realm));
        if !hit {
            self.last = match self.index.get(realm) {
                Some(&i) => i,
                None => {
                    let key = if self.list.len() < MAX_REALM_SERIES { realm.clone() } else { Realm::from(OTHER_REALM) };
                    match self.index.get(&key) {
                        Some(&i) => i,
                        None => {
                            self.index.insert(key.clone(), self.list.len());
                            self.list.push((key, RealmCounts::default()));
                            self.list.len() - 1
                        }
                    }
                }
            };
        }
        &mut self.list[self.last].1
    }

    pub fn finish(self) -> Vec<(Realm, RealmCounts)> {
        self.list
    }
}

/// One empty histogram per op.
pub fn histograms() -> Vec<Histogram<u64>> {
    OPS.iter().map(|_| histogram()).collect()
}

/// Everything since start, merged over the workers, and each worker's
/// latest gauges (the metrics thread keeps one for StatsD's gauges and
/// writes the admin listener's; scrapes read that one).
pub struct Totals {
    pub counters: Counters,
    pub hist: Vec<Histogram<u64>>,
    /// Sessions per worker, as of its last snapshot.
    pub sessions: Vec<u64>,
    /// Per worker: what it counted since start.
    pub worker_counters: Vec<Counters>,
    /// Per worker: its load at its last snapshot.
    pub load: Vec<Load>,
    /// Per worker: its realms' figures at its last snapshot.
    pub realms: Vec<Vec<(Realm, RealmCounts)>>,
}

impl Totals {
    pub fn new(workers: usize) -> Totals {
        Totals {
            counters: Counters::default(),
            hist: histograms(),
            sessions: vec![0; workers],
            worker_counters: vec![Counters::default(); workers],
            load: vec![Load::default(); workers],
            realms: vec![Vec::new(); workers],
        }
    }

    /// Takes in one snapshot.
    pub fn absorb(&mut self, source: Source, snap: &Snapshot) {
        for (m, h) in self.hist.iter_mut().zip(&snap.hist) {
            // Same bounds on both sides: cannot fail.
            m.add(h).expect("same bounds");
        }
        self.counters.add(&snap.counters);
        if let Source::Worker(w) = source {
            self.sessions[w] = snap.sessions;
            self.worker_counters[w].add(&snap.counters);
            self.load[w] = snap.load;
            self.realms[w] = snap.realms.clone();
        }
    }

    /// Each realm's figures, summed over the workers, by name.
    pub fn realm_sums(&self) -> std::collections::BTreeMap<Realm, RealmCounts> {
        let mut sums = std::collections::BTreeMap::<Realm, RealmCounts>::new();
        for (realm, c) in self.realms.iter().flatten() {
            sums.entry(realm.clone()).or_default().add(c);
        }
        sums
    }
}

/// Runs the metrics thread until every worker (and the store thread) has
/// dropped its sender; `shared` (the admin listener's) gets every snapshot
/// too.
pub fn run(
    rx: Receiver<(Source, Snapshot)>,
    workers: usize,
    cfg: MetricsConfig,
    shared: Option<std::sync::Arc<std::sync::Mutex<Totals>>>,
) {
    let client = cfg.statsd.as_deref().and_then(|addr| match statsd::Client::new(addr, &cfg.prefix) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("StatsD disabled, cannot use {addr}: {e}");
            None
        }
    });
    // This interval's histograms and counters (StatsD gets deltas).
    let mut merged: Vec<Histogram<u64>> = histograms();
    let mut counters = Counters::default();
    // The workers' latest gauges and realms.
    let mut latest = Totals::new(workers);
    // Each realm's counters as of the last emit.
    let mut emitted = std::collections::BTreeMap::<Realm, RealmCounts>::new();
    let mut next = Instant::now() + cfg.interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((source, snap)) => {
                for (m, h) in merged.iter_mut().zip(&snap.hist) {
                    m.add(h).expect("same bounds");
                }
                counters.add(&snap.counters);
                if let Source::Worker(w) = source {
                    latest.sessions[w] = snap.sessions;
                    latest.load[w] = snap.load;
                    latest.realms[w] = snap.realms.clone();
                }
                if let Some(t) = &shared {
                    t.lock().unwrap_or_else(|e| e.into_inner()).absorb(source, &snap);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(c) = &client {
                    emit(c, &merged, &counters, &latest, &mut emitted);
                }
                return;
            }
        }
        if Instant::now() >= next {
            if let Some(c) = &client {
                emit(c, &merged, &counters, &latest, &mut emitted);
            }
            for h in &mut merged {
                h.reset();
            }
            counters = Counters::default();
            next += cfg.interval;
        }
    }
}

/// A realm's name as one Graphite path component (`.` and anything but
/// letters, digits, `-` and `_` become `_`).
pub fn graphite_name(realm: &str) -> String {
    realm.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

fn emit(
    client: &statsd::Client,
    hist: &[Histogram<u64>],
    c: &Counters,
    latest: &Totals,
    emitted: &mut std::collections::BTreeMap<Realm, RealmCounts>,
) {
    let mut p = client.pipeline();
    // Keep datagrams well under a typical MTU.
    p.set_max_udp_size(1400);
    let us = |ns: u64| ns as f64 / 1000.0;
    for (op, h) in OPS.iter().zip(hist) {
        if h.is_empty() {
            continue;
        }
        let name = op.name();
        p.gauge(&format!("latency.{name}.p50_us"), us(h.value_at_quantile(0.50)));
        p.gauge(&format!("latency.{name}.p90_us"), us(h.value_at_quantile(0.90)));
        p.gauge(&format!("latency.{name}.p99_us"), us(h.value_at_quantile(0.99)));
        p.gauge(&format!("latency.{name}.max_us"), us(h.max()));
        p.count(&format!("latency.{name}.count"), h.len() as f64);
    }
    p.count("messages.in", c.messages_in as f64);
    p.count("messages.out", c.messages_out as f64);
    p.count("bytes.in", c.bytes_in as f64);
    p.count("bytes.out", c.bytes_out as f64);
    p.count("events.dropped", c.events_dropped as f64);
    p.count("sessions.opened", c.sessions_opened as f64);
    p.count("mqtt.dropped", c.mqtt_dropped as f64);
    p.count("mqtt.connects", c.mqtt_connects as f64);
    p.count("mqtt.publish.in", c.mqtt_publish_in as f64);
    p.count("mqtt.publish.out", c.mqtt_publish_out as f64);
    p.count("mqtt.denied", c.mqtt_denied as f64);
    p.count("retained.refused", c.retained_refused as f64);
    p.count("auth.failed", c.auth_failed as f64);
    p.count("history.dropped", c.history_dropped as f64);
    p.count("store.commits", c.store_commits as f64);
    p.count("store.writes", c.store_writes as f64);
    p.count("store.errors", c.store_errors as f64);
    p.count("reduce.applied", c.reduce_applied as f64);
    p.count("reduce.failed", c.reduce_failed as f64);
    p.count("reduce.dropped", c.reduce_dropped as f64);
    p.count("tables.errors", c.table_errors as f64);
    p.count("cluster.out", c.cluster_out as f64);
    p.count("cluster.in", c.cluster_in as f64);
    p.count("cluster.drops", c.cluster_drops as f64);
    // Every reason, zeros too, like the other counters (a dashboard's
    // series stays continuous, and matches Prometheus's).
    for (reason, n) in CLOSE_REASONS.iter().zip(c.closed) {
        p.count(&format!("sessions.closed.{}", reason.name()), n as f64);
    }
    p.gauge("sessions.active", latest.sessions.iter().sum::<u64>() as f64);
    for (w, (n, load)) in latest.sessions.iter().zip(&latest.load).enumerate() {
        p.gauge(&format!("worker.{w}.sessions"), *n as f64);
        p.gauge(&format!("worker.{w}.connections"), load.connections as f64);
        p.gauge(&format!("worker.{w}.queued_bytes"), load.queued_bytes as f64);
    }
    let realms = latest.realm_sums();
    let all = realms.values().fold(RealmCounts::default(), |mut a, c| {
        a.add(c);
        a
    });
    p.gauge("mqtt.sessions.online", all.mqtt_online as f64);
    p.gauge("mqtt.sessions.offline", all.mqtt_offline as f64);
    p.gauge("retained.keys", all.retained_keys as f64);
    for (realm, now) in &realms {
        let was = emitted.get(realm).copied().unwrap_or_default();
        let name = graphite_name(realm);
        let delta = |a: u64, b: u64| a.saturating_sub(b) as f64;
        p.gauge(&format!("realm.{name}.sessions.wamp"), now.wamp_sessions as f64);
        p.gauge(&format!("realm.{name}.sessions.mqtt_online"), now.mqtt_online as f64);
        p.gauge(&format!("realm.{name}.sessions.mqtt_offline"), now.mqtt_offline as f64);
        p.gauge(&format!("realm.{name}.retained_keys"), now.retained_keys as f64);
        p.count(&format!("realm.{name}.messages.in"), delta(now.messages_in, was.messages_in));
        p.count(&format!("realm.{name}.messages.out"), delta(now.messages_out, was.messages_out));
        p.count(&format!("realm.{name}.dropped"), delta(now.dropped, was.dropped));
        p.count(
            &format!("realm.{name}.slow_consumer_closes"),
            delta(now.slow_consumer_closes, was.slow_consumer_closes),
        );
    }
    *emitted = realms;
    p.send(client);
}

/// Interval at which workers send snapshots: when StatsD or the admin
/// listener is on.
pub fn interval(cfg: &MetricsConfig) -> Option<Duration> {
    (cfg.statsd.is_some() || cfg.admin.is_some()).then_some(cfg.interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_resets() {
        let mut m = WorkerMetrics::default();
        let t = Instant::now();
        m.record(Op::CallResult, t, t + Duration::from_micros(5));
        m.counters.messages_in = 3;
        m.closed(CloseReason::SlowConsumer);
        let s = m.snapshot();
        assert_eq!(s.hist[Op::CallResult as usize].len(), 1);
        assert_eq!(s.counters.closed[3], 1);
        assert_eq!(m.counters, Counters::default());
        assert!(m.hist.iter().all(|h| h.is_empty()));
    }

    #[test]
    fn realms_past_the_bound_share_one_series() {
        let mut t = RealmTotals::default();
        for i in 0..MAX_REALM_SERIES {
            t.entry(&Realm::from(format!("r{i}"))).messages_in += 1;
        }
        t.entry(&Realm::from("late")).messages_in += 5;
        t.entry(&Realm::from("later")).messages_in += 7;
        t.entry(&Realm::from("r0")).messages_in += 1;
        let mut report = t.start_report();
        // A snapshot's live sessions follow the same rule.
        report.get(&Realm::from("r1")).messages_in += 1;
        report.get(&Realm::from("new")).messages_in += 1;
        let report: ahash::AHashMap<Realm, RealmCounts> = report.finish().into_iter().collect();
        assert_eq!(report.len(), MAX_REALM_SERIES + 1);
        assert_eq!(report[OTHER_REALM].messages_in, 13);
        assert_eq!(report["r0"].messages_in, 2);
        assert_eq!(report["r1"].messages_in, 2);
    }

    #[test]
    fn graphite_names_are_one_component() {
        assert_eq!(graphite_name("com.example.app-1"), "com_example_app-1");
        assert_eq!(graphite_name("a b/c"), "a_b_c");
    }
}
