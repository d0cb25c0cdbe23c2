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

/// A key's writes between this worker and the cluster's keys bucket
/// (`Shard::retained_from_cluster`).
#[derive(Default)]
pub struct KeySync {
    /// This worker's writes without the bucket's answer yet.
    in_flight: u32,
    /// The latest revision the bucket gave one of them.
    own: u64,
    /// The newest other node's write that came while some were in flight.
    deferred: Option<(u64, Arc<Publication>)>,
    /// The latest revision of its own the watch showed meanwhile.
    seen: u64,
    /// The conditional write the keys bucket is deciding (it counts as a
    /// write in flight); while it is, the key's other conditional writes
    /// wait in `queue`, in order, and its waiters are not released.
    cas: Option<Box<KeyWrite>>,
    queue: std::collections::VecDeque<Box<KeyWrite>>,
}

impl KeySync {
    /// Nothing of this worker's is on its way for the key, and the watch
    /// is past all of it: the state can go.
    fn settled(&self) -> bool {
        self.in_flight == 0 && self.cas.is_none() && self.queue.is_empty() && self.deferred.is_none()
    }
}
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
        self.share(&p, None);
        self.persist(&p, None, ack);
        self.release_waiters(&p.realm.clone(), &p.topic.clone());
    }

    /// In a cluster, the key's new value goes to the keys bucket, so every
    /// node's copy of it follows (`docs/CLUSTER.md`, "Retained values").
    /// `will`: the key is tied to its publisher's session, so another node
    /// applies the will if this node dies.
    fn share(&mut self, p: &Arc<Publication>, will: Option<&Body>) {
        let Some(link) = &mut self.cluster else { return };
        if crate::router::is_reserved(&p.topic) {
            return;
        }
        link.send(crate::cluster::ClusterReq::Retained { p: p.clone(), will: will.cloned() });
        self.key_sync.entry((p.realm.clone(), p.topic.clone())).or_default().in_flight += 1;
    }

    /// The keys bucket's answer to one of this worker's writes of a key.
    pub(crate) fn retained_ack(&mut self, realm: Realm, topic: String, revision: Option<u64>) {
        let key = (realm, topic);
        let Some(sync) = self.key_sync.get_mut(&key) else { return };
        sync.in_flight = sync.in_flight.saturating_sub(1);
        sync.own = sync.own.max(revision.unwrap_or(0));
        self.settle(&key);
    }

    /// Once every write of ours has its place: a write of another node's
    /// that came meanwhile and is later than all of them is the value; the
    /// state goes when nothing of ours is left for the watch to show.
    fn settle(&mut self, key: &(Realm, String)) {
        let Some(sync) = self.key_sync.get_mut(key) else { return };
        if sync.in_flight > 0 {
            return;
        }
        match sync.deferred.take() {
            Some((r, p)) if r > sync.own => {
                if sync.settled() {
                    self.key_sync.remove(key);
                }
                self.apply_from_cluster(p);
            }
            _ if sync.seen >= sync.own && sync.settled() => drop(self.key_sync.remove(key)),
            _ => {}
        }
    }

    /// A write of a key this worker owns, as the keys bucket's watch shows
    /// it (in the bucket's order). Every node ends on the bucket's last
    /// write: this worker applied its own writes at once, so another
    /// node's is applied only if it is later in the bucket than all of
    /// them; while one of them has no revision yet (in flight), the newest
    /// such write waits for it (`retained_ack`). Its own writes coming
    /// back change nothing; once the watch has passed the last of them,
    /// the key's state here goes.
    pub(crate) fn retained_from_cluster(&mut self, p: Arc<Publication>, revision: u64, own: bool) {
        let key = (p.realm.clone(), p.topic.clone());
        let Some(sync) = self.key_sync.get_mut(&key) else {
            if !own {
                self.apply_from_cluster(p);
            }
            return;
        };
        if sync.in_flight > 0 {
            if own {
                sync.seen = sync.seen.max(revision);
            } else if sync.deferred.as_ref().is_none_or(|(r, _)| *r < revision) {
                sync.deferred = Some((revision, p));
            }
            return;
        }
        if revision >= sync.own {
            self.key_sync.remove(&key);
            if !own && revision > 0 {
                self.apply_from_cluster(p);
            }
        }
    }

    /// The will of a key whose session's node is gone, applied in the keys
    /// bucket by this node: the value (in the bucket's order, like another
    /// node's write), and its event, routed from here to every node, as the
    /// session's node would have.
    pub(crate) fn dead_will(&mut self, will: &Publication, revision: u64) {
        let me = SessionRef { worker: self.id, id: crate::router::ROUTER_SESSION };
        let p = Publication::new(will.realm.clone(), will.topic.clone(), self.ids.next_id(), me, will.body.clone());
        let p = Arc::new(Publication { retain: true, ..p });
        self.retained_from_cluster(p.clone(), revision, false);
        self.record_here(&p, false);
        self.publish_arc(p);
    }

    /// Another node's write of a key: its value here too (and in the
    /// store), and the writes waiting on the key see it.
    fn apply_from_cluster(&mut self, p: Arc<Publication>) {
        if let Some(why) = self.over_bound(&p) {
            log::debug!("cluster: a retained value from another node is not kept: {why}");
            return self.refuse_over(None, why);
        }
        self.retained.set(p.clone());
        self.persist(&p, None, None);
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
    /// In a cluster a conditional write is decided by the keys bucket
    /// (`ask_bucket`) once it holds on this node's copy, one at a time per
    /// key.
    pub(crate) fn key_write(&mut self, kw: Box<KeyWrite>) {
        let (realm, topic) = (kw.p.realm.clone(), kw.p.topic.clone());
        let by_bucket = self.by_bucket(&kw);
        if by_bucket {
            if let Some(sync) = self.key_sync.get_mut(&(realm.clone(), topic.clone())) {
                if sync.cas.is_some() {
                    if sync.queue.len() < MAX_WAITERS {
                        sync.queue.push_back(kw);
                    } else {
                        self.refuse(&kw);
                    }
                    return;
                }
            }
        }
        let current = self.key_value(&realm, &topic, self.now);
        if kw.when.as_ref().is_none_or(|c| fits(c, current.as_ref())) {
            if by_bucket {
                return self.ask_bucket(kw);
            }
            self.apply(*kw, true);
            return self.release_waiters(&realm, &topic);
        }
        self.wait_or_refuse(kw);
    }

    /// A write whose condition does not hold: with `watch` it waits for
    /// the key to change, else it is refused.
    fn wait_or_refuse(&mut self, kw: Box<KeyWrite>) {
        let (realm, topic) = (kw.p.realm.clone(), kw.p.topic.clone());
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

    /// Whether the keys bucket decides this write (a cluster, a condition).
    fn by_bucket(&self, kw: &KeyWrite) -> bool {
        self.cluster.is_some() && kw.when.is_some() && !crate::router::is_reserved(&kw.p.topic)
    }

    /// A conditional write that holds here, to the keys bucket, which
    /// checks it again on its own value and writes it only if nobody wrote
    /// the key meanwhile (`cluster::bucket::decide`).
    fn ask_bucket(&mut self, kw: Box<KeyWrite>) {
        if let Some(why) = self.over_bound(&kw.p) {
            return self.refuse_over(kw.reply, why);
        }
        let Some(link) = &mut self.cluster else { return self.refuse(&kw) };
        let when = kw.when.clone().expect("a conditional write");
        link.send(crate::cluster::ClusterReq::CasWrite { p: kw.p.clone(), when, will: kw.will.clone() });
        let sync = self.key_sync.entry((kw.p.realm.clone(), kw.p.topic.clone())).or_default();
        sync.in_flight += 1;
        sync.cas = Some(kw);
    }

    /// The keys bucket decided a conditional write: won, it is applied
    /// here (the bucket has it already); else it waits (`watch`) or is
    /// refused. Then the key's next conditional writes and its waiters.
    pub(crate) fn cas_done(&mut self, realm: Realm, topic: String, outcome: crate::cluster::CasOutcome) {
        let key = (realm, topic);
        let Some(sync) = self.key_sync.get_mut(&key) else { return };
        let Some(kw) = sync.cas.take() else { return };
        sync.in_flight = sync.in_flight.saturating_sub(1);
        match outcome {
            crate::cluster::CasOutcome::Won(r) => {
                sync.own = sync.own.max(r);
                self.apply(*kw, false);
            }
            crate::cluster::CasOutcome::Refused | crate::cluster::CasOutcome::Failed => self.wait_or_refuse(kw),
        }
        self.settle(&key);
        let (realm, topic) = key;
        let key = (realm.clone(), topic.clone());
        while let Some(next) = self.key_sync.get_mut(&key).filter(|s| s.cas.is_none()).and_then(|s| s.queue.pop_front())
        {
            self.key_write(next);
        }
        if self.key_sync.get(&key).is_some_and(|s| s.settled() && s.seen >= s.own) {
            self.key_sync.remove(&key);
        }
        self.release_waiters(&realm, &topic);
    }

    fn refuse(&mut self, kw: &KeyWrite) {
        if let Some((worker, ticket)) = kw.reply {
            self.peers.send(worker, ShardMsg::KeyReply { ticket, accepted: false });
        }
    }

    /// An accepted key write: the value, the will, the store, the event.
    /// `share`: it goes to the cluster's keys bucket too (`false`: the
    /// bucket decided it, so it is there already, and its bound was
    /// checked before it went).
    fn apply(&mut self, kw: KeyWrite, share: bool) {
        let KeyWrite { p, will, reply, trace, .. } = kw;
        if share {
            if let Some(why) = self.over_bound(&p) {
                // Refused whole: decided here, before anything was routed.
                return self.refuse_over(reply, why);
            }
        }
        self.retained.set(p.clone());
        if share {
            self.share(&p, will.as_ref());
        }
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
    /// in arrival order). In a cluster it goes to the keys bucket, and the
    /// next waiter is looked at once the bucket has decided.
    fn release_waiters(&mut self, realm: &Realm, topic: &str) {
        loop {
            let key = (realm.clone(), topic.to_owned());
            if self.key_sync.get(&key).is_some_and(|s| s.cas.is_some()) {
                return;
            }
            let current = self.key_value(realm, topic, self.now);
            let Some(entry) = self.retained.get(realm, topic) else { return };
            let Some(i) =
                entry.waiters.iter().position(|kw| kw.when.as_ref().is_none_or(|c| fits(c, current.as_ref())))
            else {
                return;
            };
            let kw = self.retained.entry_mut(realm, topic).waiters.remove(i).expect("found");
            if self.by_bucket(&kw) {
                return self.ask_bucket(kw);
            }
            self.apply(*kw, true);
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
        self.share(&p, None);
        self.persist(&p, None, None);
        self.record_here(&p, false);
        self.publish_arc(p);
        self.release_waiters(realm, topic);
    }
}

#[cfg(test)]
mod tests {
    use crate::router::{Body, Publication, SessionRef};
    use crate::worker::testkit::Cluster;
    use bytes::Bytes;
    use std::sync::Arc;

    fn value(v: &'static str) -> Arc<Publication> {
        let body = Body::Mqtt(Bytes::from_static(v.as_bytes()));
        let p = Publication::new("r".into(), "k".into(), 1, SessionRef { worker: 0, id: 1 }, body);
        Arc::new(Publication { retain: true, ..p })
    }

    fn current(c: &Cluster) -> Option<Bytes> {
        match &c.shards[0].retained.get("r", "k")?.value.as_ref()?.body {
            Body::Mqtt(b) => Some(b.clone()),
            Body::Wamp(_) => None,
        }
    }

    /// What `share` does in a cluster: the value here, one write in flight.
    fn local_write(c: &mut Cluster, v: &'static str) {
        let sh = &mut c.shards[0];
        sh.retained.set(value(v));
        sh.key_sync.entry(("r".into(), "k".into())).or_default().in_flight += 1;
    }

    #[test]
    fn every_node_ends_on_the_buckets_last_write() {
        let mut c = Cluster::new(1);
        // No writes of ours: another node's write is the value.
        c.shards[0].retained_from_cluster(value("b1"), 3, false);
        assert_eq!(current(&c).as_deref(), Some(&b"b1"[..]));

        // Ours in flight; another node's comes and is later in the bucket
        // (ours is acknowledged at an earlier revision): it is the value.
        local_write(&mut c, "a1");
        c.shards[0].retained_from_cluster(value("b2"), 6, false);
        assert_eq!(current(&c).as_deref(), Some(&b"a1"[..]), "not before ours has its place");
        c.shards[0].retained_ack("r".into(), "k".into(), Some(5));
        assert_eq!(current(&c).as_deref(), Some(&b"b2"[..]));
        assert!(c.shards[0].key_sync.is_empty());

        // Ours later than theirs: ours stays, and an older write of
        // theirs arriving after the acknowledgement changes nothing.
        local_write(&mut c, "a2");
        c.shards[0].retained_from_cluster(value("b3"), 7, false);
        c.shards[0].retained_ack("r".into(), "k".into(), Some(8));
        assert_eq!(current(&c).as_deref(), Some(&b"a2"[..]));
        c.shards[0].retained_from_cluster(value("b4"), 7, false);
        assert_eq!(current(&c).as_deref(), Some(&b"a2"[..]));
        // The watch passing our last write forgets the key's state...
        c.shards[0].retained_from_cluster(value("a2"), 8, true);
        assert!(c.shards[0].key_sync.is_empty());
        // ...and so does an acknowledgement after the watch showed it.
        local_write(&mut c, "a3");
        c.shards[0].retained_from_cluster(value("a3"), 9, true);
        c.shards[0].retained_ack("r".into(), "k".into(), Some(9));
        assert!(c.shards[0].key_sync.is_empty());
        // A failed write (no revision) leaves the next write of theirs free.
        local_write(&mut c, "a4");
        c.shards[0].retained_ack("r".into(), "k".into(), None);
        c.shards[0].retained_from_cluster(value("b5"), 10, false);
        assert_eq!(current(&c).as_deref(), Some(&b"b5"[..]));
    }
}
