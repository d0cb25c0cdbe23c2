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
    /// the others. If this worker has that publication, its time comes
    /// with them; if not (another worker or node has it, or it is older
    /// than what is kept), every event it has, for the asker to cut
    /// (`Replayed`).
    pub fn after(&self, realm: &str, pattern: &str, policy: MatchPolicy, after: u64) -> (Option<u64>, Vec<Recorded>) {
        let Some(topics) = self.realms.get(realm) else { return (None, Vec::new()) };
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
        (anchor.map(|(at, _)| at), out)
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

/// The answers of the workers (of this node and others) asked for one
/// replay, merged. The worker that has the anchor publication cuts its own
/// events after it (in its order); the others cannot place it, and send
/// all they keep, which are cut here at the anchor's time. Events of the
/// anchor's very millisecond on other workers count as after it: their
/// order is unknown, and one event too many is better than one lost. If
/// no worker has the anchor (older than anything kept, or unknown), the
/// replay is everything kept.
#[derive(Default)]
pub struct Replayed {
    anchor: Option<u64>,
    /// Cut by the worker that has the anchor.
    cut: Vec<Recorded>,
    /// From the others, uncut.
    rest: Vec<Recorded>,
}

impl Replayed {
    /// Adds one worker's answer.
    pub fn add(&mut self, anchor: Option<u64>, events: Vec<Recorded>) {
        match anchor {
            Some(at) if self.anchor.is_none() => {
                self.anchor = Some(at);
                self.cut = events;
            }
            // A second worker claiming the anchor (a publication ID seen
            // twice): its events count as uncut.
            _ => self.rest.extend(events),
        }
    }

    /// The replay, oldest first (by time, then each worker's sequence).
    pub fn events(self) -> Vec<Recorded> {
        let Replayed { anchor, mut cut, rest } = self;
        cut.extend(rest.into_iter().filter(|e| anchor.is_none_or(|at| e.at >= at)));
        cut.sort_by_key(|e| (e.at, e.seq));
        cut
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
        let ids = |(_, v): (Option<u64>, Vec<Recorded>)| v.iter().map(|e| e.p.id).collect::<Vec<_>>();
        assert_eq!(ids(q.after("r", "x", MatchPolicy::Exact, 10)), vec![12]);
        assert_eq!(ids(q.after("r", "", MatchPolicy::Prefix, 10)), vec![11, 12]);
        assert_eq!(ids(q.after("r", "x", MatchPolicy::Exact, 99)), vec![10, 12]);
        assert_eq!(q.after("r", "", MatchPolicy::Prefix, 11).0, Some(101));
        assert_eq!(q.after("r", "", MatchPolicy::Prefix, 99).0, None);
        let both = h.newest("r", "", MatchPolicy::Prefix, 10);
        assert_eq!(both.iter().map(|e| e.p.topic.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn replays_merge_at_the_anchor() {
        let e = |id: u64, at: u64, seq: u64| Recorded { seq, at, p: pid("t", id) };
        let ids = |r: Replayed| r.events().iter().map(|e| e.p.id).collect::<Vec<_>>();
        // Another worker (or node) has the anchor (at 100): the uncut
        // answers keep what is not older than it, the same millisecond
        // included; all in time order.
        let mut r = Replayed::default();
        r.add(None, vec![e(1, 90, 1), e(2, 100, 2), e(3, 120, 3)]);
        r.add(Some(100), vec![e(11, 110, 7), e(12, 130, 8)]);
        r.add(None, vec![]);
        assert_eq!(ids(r), vec![2, 11, 3, 12]);
        // No one has it: everything.
        let mut r = Replayed::default();
        r.add(None, vec![e(3, 120, 3)]);
        r.add(None, vec![e(1, 90, 1)]);
        assert_eq!(ids(r), vec![1, 3]);
    }
}
