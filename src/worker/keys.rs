//! What a worker does as the owner of retained keys: plain retained writes
//! (memory, then the store), and fox-wamp's key options, decided here so
//! that they have one order: `when` (a conditional write), `watch` (a failed
//! condition waits, first come first served, one winner per change: a
//! lock), `will` (the key is tied to its publisher's session and gets the
//! will value when that session ends), expiry (`retain: N`).

use super::Shard;
use crate::router::keys::{fits, value_of};
use crate::router::owner::Outbox;
use crate::router::retained::is_empty_body;
use crate::router::{Body, KeyWrite, Publication, Realm, SessionRef, ShardMsg, WorkerId};
use crate::store::thread::StoreReq;
use crate::store::{record, Write};
use std::sync::Arc;
use std::time::Instant;

/// Publishes that may wait on one key (`watch`); more are refused.
pub const MAX_WAITERS: usize = 1024;

impl Shard {
    /// A plain retained publication at its owner.
    pub(crate) fn retain(&mut self, p: Arc<Publication>, ack: Option<(WorkerId, u64)>) {
        if let Some(why) = self.over_bound(&p) {
            return self.refuse_over(ack, why);
        }
        self.retained.set(p.clone());
        self.persist(&p, None, ack);
        self.release_waiters(&p.realm.clone(), &p.topic.clone());
    }

    /// Writes a key's value (and will) to the store; `ack` is answered once
    /// it is durable, or at once without a store.
    fn persist(&mut self, p: &Publication, will: Option<&Body>, ack: Option<(WorkerId, u64)>) {
        // `$SYS` values change every interval and are made again at start.
        let store = self.store.as_mut().filter(|_| !crate::mqtt::sys::is_sys(&p.topic));
        match store {
            Some(link) => {
                let key = record::retained_key(&p.realm, &p.topic);
                let write = if is_empty_body(&p.body) && will.is_none() {
                    Write::Delete { key }
                } else {
                    Write::Put { key, value: record::encode(p, will, self.now) }
                };
                link.send(StoreReq { write, ack });
            }
            None => {
                if let Some((worker, ticket)) = ack {
                    self.peers.send(worker, ShardMsg::Stored { tickets: vec![ticket], error: None });
                }
            }
        }
    }

    /// Why a retained write may not be kept, if it may not: its value is
    /// over `store.max_retained_value`, or it adds a key to a realm that
    /// has its share of `store.max_retained_keys` here. A write that
    /// replaces or deletes a value is never refused for the count.
    pub(super) fn over_bound(&self, p: &Publication) -> Option<String> {
        if crate::router::is_reserved(&p.topic) {
            return None; // the router's own (`$SYS`)
        }
        let cfg = &self.cfg.store;
        let size = match &p.body {
            Body::Mqtt(b) => b.len(),
            Body::Wamp(pl) => match pl.values() {
                v if v.args.is_none() && v.kwargs.is_none() => 0,
                v => rmp_serde::to_vec(&(&v.args, &v.kwargs)).map_or(usize::MAX, |v| v.len()),
            },
        };
        if size > cfg.max_retained_value {
            return Some(format!("retained value of {size} bytes over the bound of {}", cfg.max_retained_value));
        }
        let share = cfg.max_retained_keys.div_ceil(self.workers);
        if self.retained.realm_len(&p.realm) >= share && self.retained.adds_key(p) {
            return Some(format!(
                "realm '{}' has its {} retained keys (a share of {} over {} workers)",
                p.realm, share, cfg.max_retained_keys, self.workers
            ));
        }
        None
    }

    fn refuse_over(&mut self, ack: Option<(WorkerId, u64)>, why: String) {
        self.metrics.counters.retained_refused += 1;
        if let Some((worker, ticket)) = ack {
            self.peers.send(worker, ShardMsg::OverLimit { ticket, why: why.into() });
        }
    }

    /// The key's value as conditions see it.
    fn key_value(&self, realm: &str, topic: &str, now: Instant) -> Option<crate::value::Value> {
        let p = self.retained.get(realm, topic)?.value.as_ref()?;
        if p.expired(now) {
            return None;
        }
        value_of(&p.body)
    }

    /// At a topic's owner: an event for the topic's history (memory, store).
    pub(crate) fn record(&mut self, p: Arc<Publication>, limit: usize, max_age_ms: Option<u64>) {
        let at = crate::router::unix_millis();
        let (seq, gone) = self.history.record(p.clone(), at, limit, max_age_ms);
        self.metrics.counters.history_dropped += gone.len() as u64;
        let Some(link) = &mut self.store else { return };
        let key = record::history_key(&p.realm, &p.topic, seq);
        link.send(StoreReq { write: Write::Put { key, value: record::encode_at(&p, None, at, self.now) }, ack: None });
        for old in gone {
            let key = record::history_key(&p.realm, &p.topic, old);
            link.send(StoreReq { write: Write::Delete { key }, ack: None });
        }
    }

    /// A conditional or session-bound retained publish arrives at the owner.
    pub(crate) fn key_write(&mut self, kw: Box<KeyWrite>) {
        let (realm, topic) = (kw.p.realm.clone(), kw.p.topic.clone());
        let current = self.key_value(&realm, &topic, self.now);
        if kw.when.as_ref().is_none_or(|c| fits(c, current.as_ref())) {
            self.apply(*kw);
            return self.release_waiters(&realm, &topic);
        }
        if kw.watch {
            let entry = self.retained.entry_mut(&realm, &topic);
            if entry.waiters.len() < MAX_WAITERS {
                entry.waiters.push_back(kw);
                return;
            }
            self.retained.tidy(&realm, &topic);
        }
        self.refuse(&kw);
    }

    fn refuse(&mut self, kw: &KeyWrite) {
        if let Some((worker, ticket)) = kw.reply {
            self.peers.send(worker, ShardMsg::KeyReply { ticket, accepted: false });
        }
    }

    /// An accepted key write: the value, the will, the store, the event.
    fn apply(&mut self, kw: KeyWrite) {
        let KeyWrite { p, will, reply, trace, .. } = kw;
        if let Some(why) = self.over_bound(&p) {
            // Refused whole: decided here, before anything was routed.
            return self.refuse_over(reply, why);
        }
        self.retained.set(p.clone());
        if let Some(body) = &will {
            self.retained.entry_mut(&p.realm, &p.topic).will = Some((p.publisher, body.clone()));
        }
        self.persist(&p, will.as_ref(), reply);
        self.record_here(&p, trace);
        self.publish_arc(p);
    }

    /// An event this owner routes itself (an accepted conditional write, a
    /// will): into the topic's history if it belongs there (this shard is
    /// the topic's owner, so it records it directly).
    fn record_here(&mut self, p: &Arc<Publication>, trace: bool) {
        if let Some((limit, max_age_ms)) = self.history_bounds(p, trace) {
            self.record(p.clone(), limit, max_age_ms);
        }
    }

    /// After a change of the key: the first waiting publish whose condition
    /// now holds is applied, and so on while one does (one winner per change,
    /// in arrival order).
    fn release_waiters(&mut self, realm: &Realm, topic: &str) {
        loop {
            let current = self.key_value(realm, topic, self.now);
            let Some(entry) = self.retained.get(realm, topic) else { return };
            let Some(i) =
                entry.waiters.iter().position(|kw| kw.when.as_ref().is_none_or(|c| fits(c, current.as_ref())))
            else {
                return;
            };
            let kw = self.retained.entry_mut(realm, topic).waiters.remove(i).expect("found");
            self.apply(*kw);
        }
    }

    /// A session ended: its waiting publishes on the key go, and the key, if
    /// tied to it, gets the will value (published like any retained write,
    /// from the departed session).
    pub(crate) fn key_session_gone(&mut self, realm: &Realm, topic: &str, session: SessionRef) {
        let Some(entry) = self.retained.get(realm, topic) else { return };
        let tied = entry.will.as_ref().is_some_and(|(s, _)| *s == session);
        // (Its publishes that still wait need no answer: it is gone.)
        let entry = self.retained.entry_mut(realm, topic);
        entry.waiters.retain(|kw| kw.p.publisher != session);
        if !tied {
            return self.retained.tidy(realm, topic);
        }
        let (_, body) = entry.will.take().expect("tied");
        let p = Publication::new(realm.clone(), topic.to_owned(), self.ids.next_id(), session, body);
        let p = Publication { retain: true, ..p };
        let p = Arc::new(p);
        self.retained.set(p.clone());
        self.persist(&p, None, None);
        self.record_here(&p, false);
        self.publish_arc(p);
        self.release_waiters(realm, topic);
    }
}
