//! Retained values: the last publication with the retain flag on each topic,
//! kept by the topic's owner shard (`owner_of(realm, topic)`), so that every
//! set and clear of one topic is applied in one order. New subscribers ask
//! the owner (exact topics) or every shard (patterns) for what matches.
//!
//! A key may also be tied to a session (`will`: the value it gets when that
//! session ends) and have conditional publishes waiting on it (`watch`);
//! both live here, at the owner, beside the value (see `worker/keys.rs`).

use super::topics::matches;
use super::{Body, KeyWrite, MatchPolicy, Publication, Realm, SessionRef};
use ahash::AHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// One key at its owner.
#[derive(Default)]
pub struct Entry {
    pub value: Option<Arc<Publication>>,
    /// The session the key is tied to, and the body it gets when that
    /// session ends (an empty body deletes the key).
    pub will: Option<(SessionRef, Body)>,
    /// Conditional publishes waiting for the key to meet their condition.
    pub waiters: VecDeque<Box<KeyWrite>>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.will.is_none() && self.waiters.is_empty()
    }
}

#[derive(Default)]
pub struct RetainedStore {
    realms: AHashMap<Realm, AHashMap<String, Entry>>,
    /// Keys with a value, per realm (the router's own, `$SYS`, apart).
    counts: AHashMap<Realm, usize>,
}

/// An empty body clears a retained value (MQTT's rule, applied to WAMP too).
pub fn is_empty_body(body: &Body) -> bool {
    match body {
        Body::Mqtt(b) => b.is_empty(),
        Body::Wamp(p) => p.is_empty(),
    }
}

impl RetainedStore {
    /// Sets (or, with an empty body, clears) a key's value. A publication
    /// without `will` unties the key from the session it was tied to.
    pub fn set(&mut self, p: Arc<Publication>) {
        let (realm, topic) = (p.realm.clone(), p.topic.clone());
        let entry = self.entry_mut(&realm, &topic);
        entry.will = None;
        let had = entry.value.is_some();
        entry.value = (!is_empty_body(&p.body)).then_some(p);
        let has = entry.value.is_some();
        if !super::is_reserved(&topic) {
            self.count(&realm, had, has);
        }
        self.tidy(&realm, &topic);
    }

    fn count(&mut self, realm: &Realm, had: bool, has: bool) {
        match (had, has) {
            (false, true) => *self.counts.entry(realm.clone()).or_default() += 1,
            (true, false) => {
                if let Some(n) = self.counts.get_mut(realm) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(realm);
                    }
                }
            }
            _ => {}
        }
    }

    /// Keys with a value, per realm.
    pub fn counts(&self) -> impl Iterator<Item = (&Realm, usize)> {
        self.counts.iter().map(|(r, n)| (r, *n))
    }

    /// Keys of `realm` with a value.
    pub fn realm_len(&self, realm: &str) -> usize {
        self.counts.get(realm).copied().unwrap_or(0)
    }

    /// Whether writing `p` would give its key a value it has not now.
    pub fn adds_key(&self, p: &Publication) -> bool {
        !is_empty_body(&p.body) && self.get(&p.realm, &p.topic).is_none_or(|e| e.value.is_none())
    }

    /// The key's entry, created empty.
    pub fn entry_mut(&mut self, realm: &Realm, topic: &str) -> &mut Entry {
        let topics = self.realms.entry(realm.clone()).or_default();
        if !topics.contains_key(topic) {
            topics.insert(topic.to_owned(), Entry::default());
        }
        topics.get_mut(topic).expect("present")
    }

    pub fn get(&self, realm: &str, topic: &str) -> Option<&Entry> {
        self.realms.get(realm)?.get(topic)
    }

    /// Forgets a key's entry once it holds nothing.
    pub fn tidy(&mut self, realm: &str, topic: &str) {
        let Some(topics) = self.realms.get_mut(realm) else { return };
        if topics.get(topic).is_some_and(Entry::is_empty) {
            topics.remove(topic);
        }
        if topics.is_empty() {
            self.realms.remove(realm);
        }
    }

    /// Unexpired values whose topic matches; expired ones are dropped, and
    /// returned in `expired` (so the store forgets them too).
    pub fn query(
        &mut self,
        realm: &str,
        pattern: &str,
        policy: MatchPolicy,
        now: Instant,
        expired: &mut Vec<Arc<Publication>>,
    ) -> Vec<Arc<Publication>> {
        let Some(topics) = self.realms.get_mut(realm) else { return Vec::new() };
        let before = expired.len();
        for e in topics.values_mut() {
            if e.value.as_ref().is_some_and(|p| p.expired(now)) {
                expired.extend(e.value.take());
            }
        }
        topics.retain(|_, e| !e.is_empty());
        let gone: Vec<Realm> =
            expired[before..].iter().filter(|p| !super::is_reserved(&p.topic)).map(|p| p.realm.clone()).collect();
        for realm in gone {
            self.count(&realm, true, false);
        }
        let Some(topics) = self.realms.get_mut(realm) else { return Vec::new() };
        if policy == MatchPolicy::Exact {
            return topics.get(pattern).and_then(|e| e.value.clone()).into_iter().collect();
        }
        let mut out: Vec<Arc<Publication>> =
            topics.iter().filter(|(t, _)| matches(policy, pattern, t)).filter_map(|(_, e)| e.value.clone()).collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.realms.values().map(|t| t.values().filter(|e| e.value.is_some()).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use crate::value::Value;
    use std::time::Duration;

    fn value(topic: &str, v: Option<u64>, expires: Option<Instant>) -> Arc<Publication> {
        let args = v.map(|v| vec![Value::UInt(v)]);
        let body = Body::Wamp(Payload::new(args, None));
        let p = Publication::new("r".into(), topic.into(), 1, SessionRef { worker: 0, id: 1 }, body);
        Arc::new(Publication { retain: true, expires, ..p })
    }

    #[test]
    fn keys_are_counted_per_realm_without_the_routers_own() {
        let mut s = RetainedStore::default();
        let now = Instant::now();
        s.set(value("a", Some(1), None));
        s.set(value("a", Some(2), None));
        assert_eq!(s.realm_len("r"), 1, "a replacement is not a new key");
        assert!(!s.adds_key(&value("a", Some(3), None)));
        assert!(s.adds_key(&value("b", Some(3), None)));
        assert!(!s.adds_key(&value("b", None, None)), "a delete adds nothing");
        s.set(value("$SYS.broker.uptime", Some(5), None));
        assert_eq!(s.realm_len("r"), 1, "$SYS is apart");
        s.set(value("b", Some(1), Some(now + Duration::from_millis(1))));
        assert_eq!(s.realm_len("r"), 2);
        let mut expired = Vec::new();
        s.query("r", "", MatchPolicy::Prefix, now + Duration::from_secs(1), &mut expired);
        assert_eq!(expired.len(), 1);
        assert_eq!(s.realm_len("r"), 1, "an expired value is no longer counted");
        s.set(value("a", None, None));
        assert_eq!(s.realm_len("r"), 0);
        assert_eq!(s.realm_len("other"), 0);
    }
}
