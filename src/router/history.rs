//! Event history: the newest events of each topic that keeps them, held by
//! the topic's owner shard (like its retained value), in arrival order.
//! Each event has the owner's sequence number (its store key's suffix) and
//! the wall-clock time it was recorded.

use super::topics::matches;
use super::{MatchPolicy, Publication, Realm};
use ahash::AHashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// One recorded event.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub p: Arc<Publication>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Recorded>,
}

#[derive(Default)]
pub struct History {
    realms: AHashMap<Realm, AHashMap<String, Ring>>,
    next_seq: u64,
}

impl History {
    /// Records an event; returns its sequence number and those of the
    /// events it pushed out (over `limit`, or older than `max_age_ms`).
    pub fn record(&mut self, p: Arc<Publication>, at: u64, limit: usize, max_age_ms: Option<u64>) -> (u64, Vec<u64>) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let ring = self.realms.entry(p.realm.clone()).or_default().entry(p.topic.clone()).or_default();
        ring.events.push_back(Recorded { seq, at, p });
        let mut gone = Vec::new();
        while ring.events.len() > limit.max(1)
            || max_age_ms.is_some_and(|age| ring.events.front().is_some_and(|e| e.at + age < at))
        {
            gone.extend(ring.events.pop_front().map(|e| e.seq));
        }
        (seq, gone)
    }

    /// Puts back an event read from the store (at start, in key order).
    pub fn restore(&mut self, e: Recorded) {
        self.next_seq = self.next_seq.max(e.seq);
        let ring = self.realms.entry(e.p.realm.clone()).or_default().entry(e.p.topic.clone()).or_default();
        ring.events.push_back(e);
    }

    /// The events of the topics matching `pattern` after publication
    /// `after`, oldest first: after it in its topic, and after its time in
    /// the others; if this worker does not have it (it is older than what
    /// is kept, or unknown), every event it has.
    pub fn after(&self, realm: &str, pattern: &str, policy: MatchPolicy, after: u64) -> Vec<Recorded> {
        let Some(topics) = self.realms.get(realm) else { return Vec::new() };
        let rings: Vec<&Ring> = if policy == MatchPolicy::Exact {
            topics.get(pattern).into_iter().collect()
        } else {
            topics.iter().filter(|(t, _)| matches(policy, pattern, t)).map(|(_, r)| r).collect()
        };
        let anchor = rings.iter().flat_map(|r| r.events.iter()).find(|e| e.p.id == after).map(|e| (e.at, e.seq));
        let mut out: Vec<Recorded> = rings
            .iter()
            .flat_map(|r| r.events.iter())
            .filter(|e| anchor.is_none_or(|a| (e.at, e.seq) > a))
            .cloned()
            .collect();
        out.sort_by_key(|e| (e.at, e.seq));
        out
    }

    /// The newest `limit` events of the topics matching `pattern`, oldest
    /// first (across topics: by time, then sequence).
    pub fn newest(&self, realm: &str, pattern: &str, policy: MatchPolicy, limit: usize) -> Vec<Recorded> {
        let Some(topics) = self.realms.get(realm) else { return Vec::new() };
        let mut out: Vec<Recorded> = if policy == MatchPolicy::Exact {
            topics.get(pattern).map(|r| r.events.iter().rev().take(limit).cloned().collect()).unwrap_or_default()
        } else {
            topics
                .iter()
                .filter(|(t, _)| matches(policy, pattern, t))
                .flat_map(|(_, r)| r.events.iter().rev().take(limit).cloned())
                .collect()
        };
        out.sort_by_key(|e| (e.at, e.seq));
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use crate::router::{Body, SessionRef};

    fn p(topic: &str) -> Arc<Publication> {
        pid(topic, 1)
    }

    fn pid(topic: &str, id: u64) -> Arc<Publication> {
        Arc::new(Publication::new(
            "r".into(),
            topic.into(),
            id,
            SessionRef { worker: 0, id: 1 },
            Body::Wamp(Payload::default()),
        ))
    }

    #[test]
    fn bounded_by_count_and_age() {
        let mut h = History::default();
        for i in 0..5 {
            let (seq, gone) = h.record(p("a"), 1000 + i, 3, None);
            assert_eq!(seq, i + 1);
            assert_eq!(gone, if i >= 3 { vec![i - 2] } else { vec![] });
        }
        assert_eq!(h.newest("r", "a", MatchPolicy::Exact, 10).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(h.newest("r", "a", MatchPolicy::Exact, 2).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        // Age: an event older than max_age goes when the next comes.
        let (_, gone) = h.record(p("a"), 5000, 10, Some(1000));
        assert_eq!(gone, vec![3, 4, 5]);
        h.record(p("b"), 5001, 10, None);
        // `after`: from the anchor on, or everything if it is not kept.
        let mut q = History::default();
        for (i, t) in ["x", "y", "x"].iter().enumerate() {
            q.record(pid(t, 10 + i as u64), 100 + i as u64, 10, None);
        }
        let ids = |v: Vec<Recorded>| v.iter().map(|e| e.p.id).collect::<Vec<_>>();
        assert_eq!(ids(q.after("r", "x", MatchPolicy::Exact, 10)), vec![12]);
        assert_eq!(ids(q.after("r", "", MatchPolicy::Prefix, 10)), vec![11, 12]);
        assert_eq!(ids(q.after("r", "x", MatchPolicy::Exact, 99)), vec![10, 12]);
        let both = h.newest("r", "", MatchPolicy::Prefix, 10);
        assert_eq!(both.iter().map(|e| e.p.topic.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
