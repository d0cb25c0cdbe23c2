//! Latency histograms and counters.
//!
//! Each worker records into its own [`WorkerMetrics`] (no sharing, no atomics,
//! no allocation: histograms are pre-sized for 1 ns .. 60 s). Every interval it
//! sends a snapshot to the `metrics` thread, which merges the workers' data
//! and emits it to StatsD: per op `p50`, `p90`, `p99`, `max` (microseconds)
//! and `count` as gauges, and counters as StatsD counters.

use crate::config::Metrics as MetricsConfig;
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
}

pub const OPS: [Op; 10] = [
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
    /// called once per interval; clones the histograms).
    pub fn snapshot(&mut self) -> Snapshot {
        self.taken.add(&self.counters);
        let snap =
            Snapshot { hist: self.hist.clone(), counters: std::mem::take(&mut self.counters), sessions: self.sessions };
        for h in &mut self.hist {
            h.reset();
        }
        snap
    }
}

/// One worker's data for one interval.
pub struct Snapshot {
    pub hist: Vec<Histogram<u64>>,
    pub counters: Counters,
    pub sessions: u64,
}

/// One empty histogram per op.
pub fn histograms() -> Vec<Histogram<u64>> {
    OPS.iter().map(|_| histogram()).collect()
}

/// Runs the metrics thread until every worker has dropped its sender;
/// `totals` (the admin listener's) gets every snapshot too.
pub fn run(
    rx: Receiver<(usize, Snapshot)>,
    workers: usize,
    cfg: MetricsConfig,
    totals: Option<std::sync::Arc<std::sync::Mutex<crate::admin::Totals>>>,
) {
    let client = cfg.statsd.as_deref().and_then(|addr| match statsd::Client::new(addr, &cfg.prefix) {
        Ok(c) => Some(c),
        Err(e) => {
            log::error!("StatsD disabled, cannot use {addr}: {e}");
            None
        }
    });
    let mut merged: Vec<Histogram<u64>> = OPS.iter().map(|_| histogram()).collect();
    let mut counters = Counters::default();
    let mut sessions = vec![0u64; workers];
    let mut next = Instant::now() + cfg.interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((worker, snap)) => {
                for (m, h) in merged.iter_mut().zip(&snap.hist) {
                    // Same bounds on both sides: cannot fail.
                    m.add(h).expect("same bounds");
                }
                counters.add(&snap.counters);
                sessions[worker] = snap.sessions;
                if let Some(t) = &totals {
                    let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                    for (m, h) in t.hist.iter_mut().zip(&snap.hist) {
                        m.add(h).expect("same bounds");
                    }
                    t.counters.add(&snap.counters);
                    t.sessions[worker] = snap.sessions;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(c) = &client {
                    emit(c, &merged, &counters, sessions.iter().sum());
                }
                return;
            }
        }
        if Instant::now() >= next {
            if let Some(c) = &client {
                emit(c, &merged, &counters, sessions.iter().sum());
            }
            for h in &mut merged {
                h.reset();
            }
            counters = Counters::default();
            next += cfg.interval;
        }
    }
}

fn emit(client: &statsd::Client, hist: &[Histogram<u64>], c: &Counters, sessions: u64) {
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
    // Every reason, zeros too, like the other counters (a dashboard's
    // series stays continuous, and matches Prometheus's).
    for (reason, n) in CLOSE_REASONS.iter().zip(c.closed) {
        p.count(&format!("sessions.closed.{}", reason.name()), n as f64);
    }
    p.gauge("sessions.active", sessions as f64);
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
}
