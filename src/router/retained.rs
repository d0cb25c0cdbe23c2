//! Retained values: the last publication with the retain flag on each topic,
//! kept by the topic's owner shard (`owner_of(realm, topic)`), so that every
//! set and clear of one topic is applied in one order. New subscribers ask
//! the owner (exact topics) or every shard (patterns) for what matches.
//!
//! In memory for now; the durable store will sit behind this type.

use super::topics::matches;
use super::{Body, MatchPolicy, Publication, Realm};
use ahash::AHashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
pub struct RetainedStore {
    realms: AHashMap<Realm, AHashMap<String, Arc<Publication>>>,
}

/// An empty body clears a retained value (MQTT's rule, applied to WAMP too).
pub fn is_empty_body(body: &Body) -> bool {
    match body {
        Body::Mqtt(b) => b.is_empty(),
        Body::Wamp(p) => p.args.as_ref().is_none_or(|a| a.is_empty()) && p.kwargs.as_ref().is_none_or(|k| k.is_empty()),
    }
}

impl RetainedStore {
    pub fn set(&mut self, p: Arc<Publication>) {
        if is_empty_body(&p.body) {
            if let Some(topics) = self.realms.get_mut(&p.realm) {
                topics.remove(&p.topic);
                if topics.is_empty() {
                    self.realms.remove(&p.realm);
                }
            }
        } else {
            self.realms.entry(p.realm.clone()).or_default().insert(p.topic.clone(), p);
        }
    }

    /// Unexpired values whose topic matches; expired ones are dropped.
    pub fn query(&mut self, realm: &str, pattern: &str, policy: MatchPolicy, now: Instant) -> Vec<Arc<Publication>> {
        let Some(topics) = self.realms.get_mut(realm) else { return Vec::new() };
        topics.retain(|_, p| !p.expired(now));
        if policy == MatchPolicy::Exact {
            return topics.get(pattern).cloned().into_iter().collect();
        }
        let mut out: Vec<Arc<Publication>> =
            topics.iter().filter(|(t, _)| matches(policy, pattern, t)).map(|(_, p)| p.clone()).collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    pub fn len(&self) -> usize {
        self.realms.values().map(|t| t.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.realms.is_empty()
    }
}
