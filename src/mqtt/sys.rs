//! `$SYS` topics: the broker's own numbers, published as retained MQTT
//! messages every `mqtt.sys_interval` seconds under Mosquitto's topic
//! names, so dashboards and scripts written for Mosquitto read them as they
//! are (`mosquitto_sub -t '$SYS/#' -v`).
//!
//! The numbers are spread over the workers. Shard 0 collects them by
//! scatter-gather over the shard channels: every interval it sends
//! `Msg::Query` to every worker (itself included), each answers with its
//! `Report`, and once all have answered worker 0 adds them up and publishes
//! what changed through the normal routing path, in every configured realm
//! and the MQTT realm. One round at a time: a round still waiting when the
//! next interval comes delays that one, so at most `workers` reports are in
//! flight. Nobody pays more than one routing-table lookup per topic unless
//! subscribed.
//!
//! Load averages are Mosquitto's: per-minute rates smoothed exponentially
//! over 1, 5 and 15 minutes.
//!
//! Clients may subscribe to `$SYS/#`; a leading wildcard (`#`, `+/...`) does
//! not match `$SYS` topics. A client PUBLISH to a `$SYS` topic is refused
//! (`session.rs`).

use crate::metrics::Counters;
use crate::router::owner::Outbox;
use crate::router::{Body, Publication, Realm, SessionRef, ShardMsg};
use crate::worker::Shard;
use ahash::AHashMap;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Whether a core-form topic is in the broker's `$SYS` tree.
pub fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS.")
}

/// What workers say to each other about `$SYS`.
#[derive(Debug)]
pub enum Msg {
    /// From worker 0: send your `Report`.
    Query,
    /// To worker 0.
    Report(Box<Report>),
}

/// One worker's share of the numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// MQTT sessions with a connection.
    pub connected: u64,
    /// MQTT sessions, with or without a connection.
    pub sessions: u64,
    /// Subscriptions of MQTT sessions.
    pub subscriptions: u64,
    /// Retained values held (as each topic's owner).
    pub retained: u64,
    /// Everything counted since start (all protocols for messages and bytes).
    pub totals: Counters,
}

impl Report {
    fn add(&mut self, o: &Report) {
        self.connected += o.connected;
        self.sessions += o.sessions;
        self.subscriptions += o.subscriptions;
        self.retained += o.retained;
        self.totals.add(&o.totals);
    }
}

/// Reads one counter.
type Counter = fn(&Counters) -> u64;

/// The rates that get load averages: (topic part, counter).
const LOADS: [(&str, Counter); 7] = [
    ("messages/received", |c| c.messages_in),
    ("messages/sent", |c| c.messages_out),
    ("bytes/received", |c| c.bytes_in),
    ("bytes/sent", |c| c.bytes_out),
    ("publish/received", |c| c.mqtt_publish_in),
    ("publish/sent", |c| c.mqtt_publish_out),
    ("connections", |c| c.mqtt_connects),
];

/// Smoothing windows of the load averages, seconds.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// Shard 0's collector.
pub struct Collector {
    interval: Duration,
    started: Instant,
    next: Instant,
    /// Reports still awaited in the current round, and their sum so far.
    round: Option<(usize, Report)>,
    /// The previous round's totals and time, for the rates.
    last: Option<(Instant, Counters)>,
    /// Load averages, per `LOADS` entry and `WINDOWS` entry.
    loads: [[f64; 3]; LOADS.len()],
    max_connected: u64,
    /// What each topic was last published with (only changes are published).
    published: AHashMap<String, String>,
}

impl Collector {
    /// The collector for worker `id`, if it is worker 0 and `$SYS` is on.
    pub fn new(id: u16, interval_s: u32, now: Instant) -> Option<Collector> {
        (id == 0 && interval_s > 0).then(|| Collector {
            interval: Duration::from_secs(u64::from(interval_s)),
            started: now,
            // The first round at once: the static topics are there from the start.
            next: now,
            round: None,
            last: None,
            loads: [[0.0; 3]; LOADS.len()],
            max_connected: 0,
            published: AHashMap::new(),
        })
    }

    /// The topics and values of one round (MQTT form), every one of them.
    fn values(&mut self, now: Instant, r: &Report) -> Vec<(String, String)> {
        let c = &r.totals;
        self.max_connected = self.max_connected.max(r.connected);
        if let Some((then, prev)) = &self.last {
            let secs = now.saturating_duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                for (i, (_, counter)) in LOADS.iter().enumerate() {
                    let per_minute = counter(c).saturating_sub(counter(prev)) as f64 * 60.0 / secs;
                    for (j, (_, window)) in WINDOWS.iter().enumerate() {
                        let k = (-secs / window).exp();
                        self.loads[i][j] = self.loads[i][j] * k + per_minute * (1.0 - k);
                    }
                }
            }
        }
        self.last = Some((now, c.clone()));
        let uptime = now.saturating_duration_since(self.started).as_secs();
        let mut v: Vec<(String, String)> = [
            ("version", format!("fennec version {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{uptime} seconds")),
            ("clients/connected", r.connected.to_string()),
            ("clients/active", r.connected.to_string()),
            ("clients/disconnected", (r.sessions - r.connected.min(r.sessions)).to_string()),
            ("clients/inactive", (r.sessions - r.connected.min(r.sessions)).to_string()),
            ("clients/total", r.sessions.to_string()),
            ("clients/maximum", self.max_connected.to_string()),
            ("messages/received", c.messages_in.to_string()),
            ("messages/sent", c.messages_out.to_string()),
            ("publish/messages/received", c.mqtt_publish_in.to_string()),
            ("publish/messages/sent", c.mqtt_publish_out.to_string()),
            ("publish/messages/dropped", c.mqtt_dropped.to_string()),
            ("bytes/received", c.bytes_in.to_string()),
            ("bytes/sent", c.bytes_out.to_string()),
            ("subscriptions/count", r.subscriptions.to_string()),
            ("retained messages/count", r.retained.to_string()),
        ]
        .into_iter()
        .map(|(t, v)| (format!("$SYS/broker/{t}"), v))
        .collect();
        for (i, (name, _)) in LOADS.iter().enumerate() {
            for (j, (window, _)) in WINDOWS.iter().enumerate() {
                v.push((format!("$SYS/broker/load/{name}/{window}"), format!("{:.2}", self.loads[i][j])));
            }
        }
        v
    }
}

/// Shard 0, every tick: starts a round when one is due.
pub fn tick(w: &mut Shard) {
    let Some(c) = &mut w.mqtt.sys else { return };
    if c.round.is_some() || w.now < c.next {
        return;
    }
    c.next = w.now + c.interval;
    c.round = Some((w.workers, Report::default()));
    for to in 0..w.workers as u16 {
        w.peers.send(to, ShardMsg::Sys(Msg::Query));
    }
}

pub fn on_msg(w: &mut Shard, msg: Msg) {
    match msg {
        Msg::Query => {
            let report = report(w);
            w.peers.send(0, ShardMsg::Sys(Msg::Report(Box::new(report))));
        }
        Msg::Report(r) => {
            let Some(c) = &mut w.mqtt.sys else { return };
            let Some((waiting, sum)) = &mut c.round else { return };
            sum.add(&r);
            *waiting -= 1;
            if *waiting == 0 {
                let (_, sum) = c.round.take().expect("a round");
                publish(w, &sum);
            }
        }
    }
}

/// This worker's numbers.
fn report(w: &Shard) -> Report {
    let s = &w.mqtt.sessions;
    Report {
        connected: s.iter().filter(|(_, s)| s.conn.is_some()).count() as u64,
        sessions: s.len() as u64,
        subscriptions: s.iter().map(|(_, s)| s.subs.len() as u64).sum(),
        retained: w.retained.len() as u64,
        totals: w.metrics.totals(),
    }
}

/// Publishes the values that changed since the last round, retained.
fn publish(w: &mut Shard, sum: &Report) {
    let now = w.now;
    let Some(c) = &mut w.mqtt.sys else { return };
    let changed: Vec<(String, String)> =
        c.values(now, sum).into_iter().filter(|(t, v)| c.published.get(t) != Some(v)).collect();
    for (t, v) in &changed {
        c.published.insert(t.clone(), v.clone());
    }
    let mut realms: Vec<Realm> = w.cfg.realms.iter().map(|r| Realm::from(r.name.as_str())).collect();
    if !realms.iter().any(|r| **r == *w.cfg.mqtt.realm) {
        realms.push(w.cfg.mqtt.realm.as_str().into());
    }
    for realm in &realms {
        for (topic, value) in &changed {
            // The router itself: no session has ID 0.
            let publisher = SessionRef { worker: w.id, id: 0 };
            let body = Body::Mqtt(Bytes::from(value.clone().into_bytes()));
            let p = Publication::new(realm.clone(), super::topic::swap(topic), w.ids.next_id(), publisher, body);
            w.route(Publication { retain: true, ..p });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_topics() {
        assert!(is_sys("$SYS") && is_sys("$SYS.broker.uptime"));
        assert!(!is_sys("$SYSTEM.x") && !is_sys("a.$SYS") && !is_sys("$sys.x"));
    }

    #[test]
    fn values_and_loads() {
        let t0 = Instant::now();
        let mut c = Collector::new(0, 10, t0).unwrap();
        assert!(Collector::new(1, 10, t0).is_none() && Collector::new(0, 0, t0).is_none());
        let mut r = Report { connected: 2, sessions: 5, subscriptions: 3, retained: 4, ..Default::default() };
        let first = c.values(t0, &r);
        let get = |v: &[(String, String)], t: &str| v.iter().find(|(k, _)| k == t).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get(&first, "$SYS/broker/clients/disconnected"), "3");
        assert_eq!(get(&first, "$SYS/broker/retained messages/count"), "4");
        assert_eq!(get(&first, "$SYS/broker/load/messages/received/1min"), "0.00");
        // 600 messages in 60 s: 600 per minute, smoothed.
        r.totals.messages_in = 600;
        let later = c.values(t0 + Duration::from_secs(60), &r);
        let one: f64 = get(&later, "$SYS/broker/load/messages/received/1min").parse().unwrap();
        let fifteen: f64 = get(&later, "$SYS/broker/load/messages/received/15min").parse().unwrap();
        assert!((one - 600.0 * (1.0 - (-1.0f64).exp())).abs() < 0.01, "{one}");
        assert!(fifteen > 0.0 && fifteen < one);
        assert_eq!(get(&later, "$SYS/broker/uptime"), "60 seconds");
        assert_eq!(get(&later, "$SYS/broker/clients/maximum"), "2");
    }
}
