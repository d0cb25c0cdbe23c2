//! MQTT sessions in the cluster, on the cluster thread: client-ID claims
//! answered, sessions restored from the store asked about, records and
//! queued messages of persistent sessions shared, and a dead node's
//! sessions (and wills) taken in by one survivor, chosen by rendezvous
//! hashing (`chosen`).

use super::*;

impl Node {
    /// The cluster's answer to a client ID's claim, to the ID's owner
    /// worker here: the node that held it, if it is alive in that life.
    /// A holder that is gone leaves the record of its session, which the
    /// claim resumes (unless it starts clean), with the messages it had
    /// queued (`read`: its queue was read; if not, it is read first).
    pub(super) fn owned(
        &mut self,
        claim: crate::mqtt::registry::Claim,
        prev: Option<(String, u64)>,
        record: Option<crate::mqtt::registry::Left>,
        read: bool,
    ) {
        let holder = prev.clone();
        let prev = prev.and_then(|(node, incarnation)| {
            if node == self.cfg.node {
                return None;
            }
            let &id = self.by_name.get(&node)?;
            let p = &self.peers[id as usize];
            (p.alive && (p.incarnation == 0 || p.incarnation == incarnation)).then_some(id)
        });
        if let Some(holder) = holder.clone().filter(|_| prev.is_none() && record.is_some() && !read) {
            // The holder was already taken for dead when the claim was
            // decided: what it had queued for the session is read (and
            // purged) before the session resumes, as after `ClaimVia`.
            if self.queues.is_some() && holder != (self.cfg.node.clone(), self.incarnation) {
                match self.cas.try_send(bucket::Cas::Resume { claim, holder }) {
                    Ok(()) => return,
                    Err(e) => {
                        log::warn!("cluster: too many decisions queued: a session resumes without its queued messages");
                        if let bucket::Cas::Resume { claim, holder } = e.into_inner() {
                            self.owned(claim, Some(holder), record, true);
                        }
                        return;
                    }
                }
            }
        }
        let resume = if prev.is_none() && !claim.clean_start { record.map(Box::new) } else { None };
        if let (None, Some((node, incarnation))) = (prev, holder) {
            // A session of a node that is gone, resumed before its will's
            // delay passed: the will is not sent (MQTT 5, 3.1.3.2.2); one
            // that a clean start ends: sent now, not after the delay.
            if node != self.cfg.node || incarnation != self.incarnation {
                let bucket_key = bucket::will_key(&claim.key);
                self.mqtt_wills.remove(&bucket_key);
                let publish = claim.clean_start;
                let job = bucket::Cas::MqttWill { bucket_key, node, incarnation, publish };
                if self.cas.try_send(job).is_err() {
                    log::warn!("cluster: a dead node's MQTT session's will could not be decided (queue full)");
                }
            }
        }
        let (realm, client) = claim.key.split_once('\0').unwrap_or(("", &claim.key));
        let w = owner_of(realm, client, self.workers.len());
        let msg = crate::mqtt::registry::Msg::Owned { claim, prev, resume };
        self.hand_to(w as usize, ShardMsg::Mqtt(msg), false);
    }

    /// The cluster's answer for a session restored from the store, to its
    /// client ID's owner worker (`mqtt::registry::Msg::Restored`).
    pub(super) fn restored(&mut self, key: Arc<str>, kept: bool, will_kept: bool) {
        let (realm, client) = key.split_once('\0').unwrap_or(("", &key));
        let w = owner_of(realm, client, self.workers.len()) as usize;
        let msg = crate::mqtt::registry::Msg::Restored { key, kept, will_kept };
        self.hand_to(w, ShardMsg::Mqtt(msg), false);
    }

    /// A persistent session's record to the keys bucket (an empty one: it
    /// ended), streamed like retained values.
    pub(super) async fn write_session(&mut self, key: &str, record: Option<Vec<u8>>) {
        if !self.connected.load(Ordering::Relaxed) {
            self.drops += 1;
            return;
        }
        let shared = bucket::SharedSession {
            node: self.cfg.node.clone(),
            incarnation: self.incarnation,
            record: Bytes::from(record.unwrap_or_default()),
            key: key.to_owned(),
        };
        let Ok(value) = rmp_serde::to_vec(&shared) else { return };
        let subject = format!("{}{}", self.keys_subject, bucket::session_key(key));
        match self.js.publish(subject, Bytes::from(value)).await {
            Ok(ack) => {
                tokio::spawn(async move {
                    if let Err(e) = ack.await {
                        log::warn!("cluster: an MQTT session's record was not written: {e}");
                    }
                });
            }
            Err(e) => {
                self.drops += 1;
                log::warn!("cluster: an MQTT session's record was not written: {e}");
            }
        }
    }

    /// Messages queued for an offline persistent session of this node, to
    /// the queues stream, through its writer task (in order with the
    /// purges). A full writer drops them (counted): the messages are still
    /// in the session's queue, only their copy for a survivor is missing.
    pub(super) fn write_queued(&mut self, key: &str, messages: Vec<(u64, Vec<u8>)>) {
        let Some((q, tx)) = &self.queues else { return };
        let subject = q.subject(&self.cfg.node, key);
        for (seq, message) in messages {
            let Ok(payload) = rmp_serde::to_vec(&(seq, Bytes::from(message))) else { continue };
            let op = bucket::QueueOp::Write { subject: subject.clone(), payload: Bytes::from(payload) };
            if tx.try_send(op).is_err() {
                self.drops += 1;
            }
        }
    }

    /// A session's queued messages are no longer this node's to keep: the
    /// purge waits for room (a dropped one would leave messages to be
    /// delivered again).
    pub(super) async fn clear_queued(&mut self, key: &str) {
        let Some((q, tx)) = &self.queues else { return };
        let op = bucket::QueueOp::Purge { subject: q.subject(&self.cfg.node, key) };
        let _ = tx.send(op).await;
    }

    /// An MQTT session's will entry (or its end): kept while its node's
    /// life lasts, asked for once it is over.
    pub(super) fn on_mqtt_will(&mut self, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            self.mqtt_wills.remove(&entry.key);
            return;
        }
        let Ok(will) = rmp_serde::from_slice::<bucket::SharedWill>(&entry.value) else {
            return log::debug!("cluster: an MQTT will entry {} does not read", entry.key);
        };
        if will.node != self.cfg.node {
            self.peer(&will.node);
        }
        let due = self.will_due(&will.node, will.incarnation);
        self.mqtt_wills.insert(entry.key.clone(), (will.node, will.incarnation, will.delay));
        if due {
            self.ask_mqtt_will(&entry.key);
        }
    }

    /// A persistent MQTT session's record (or its end), kept by key so that
    /// a survivor can take the session in when its node dies.
    pub(super) fn on_mqtt_session(&mut self, entry: kv::Entry) {
        let shared = (entry.operation == kv::Operation::Put)
            .then(|| rmp_serde::from_slice::<bucket::SharedSession>(&entry.value).ok())
            .flatten()
            .filter(|s| !s.record.is_empty() && !s.key.is_empty());
        match shared {
            Some(s) => {
                self.mqtt_sessions.insert(entry.key, (s.node, s.incarnation, Arc::from(s.key)));
            }
            None => drop(self.mqtt_sessions.remove(&entry.key)),
        }
    }

    /// Node `id` is taken for dead: of its persistent MQTT sessions, this
    /// node takes in those it is the chosen one for (rendezvous hashing of
    /// the client ID over the live nodes' names, so the survivors share
    /// them out without talking, and each is asked for once). A session
    /// taken in is offline here, its subscriptions made again, so what is
    /// published for it from then on waits for its client, wherever that
    /// comes back (a claim then takes it over from here, with its queue).
    /// A restart (a new life seen before the verdict) is not a death: its
    /// node may have the sessions back from its store.
    pub(super) fn adopt_sessions_of(&mut self, id: NodeId) {
        let name = self.peers[id as usize].name.clone();
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        let mut live: Vec<&str> =
            self.peers.iter().filter(|p| p.alive && p.workers > 0).map(|p| p.name.as_str()).collect();
        live.push(&self.cfg.node);
        let mine: Vec<(Arc<str>, (String, u64))> = self
            .mqtt_sessions
            .values()
            .filter(|(node, incarnation, _)| *node == name && self.will_due(node, *incarnation))
            .filter(|(_, _, key)| chosen(key, &live) == self.cfg.node)
            .map(|(node, incarnation, key)| (key.clone(), (node.clone(), *incarnation)))
            .collect();
        if !mine.is_empty() {
            log::info!("cluster: node {name} is gone: taking in {} of its persistent MQTT sessions", mine.len());
        }
        for (key, holder) in mine {
            if self.adopting.contains_key(&key) {
                continue;
            }
            match self.cas.try_send(bucket::Cas::Adopt { key: key.clone(), holder }) {
                Ok(()) => drop(self.adopting.insert(key, Vec::new())),
                Err(_) => log::warn!(
                    "cluster: too many decisions queued: a persistent MQTT session of {name} is not taken in \
                     (its client resumes it from its record)"
                ),
            }
        }
    }

    /// The deciding task's answer to a session taken in: to the client
    /// ID's owner worker, then the claims that waited for it.
    pub(super) fn adopted(&mut self, key: Arc<str>, left: Option<crate::mqtt::registry::Left>) {
        let (realm, client) = key.split_once('\0').unwrap_or(("", &key));
        let w = owner_of(realm, client, self.workers.len()) as usize;
        if let Some(left) = left {
            let msg = crate::mqtt::registry::Msg::Adopt { key: key.clone(), left: Box::new(left) };
            self.hand_to(w, ShardMsg::Mqtt(msg), false);
        }
        for msg in self.adopting.remove(&key).unwrap_or_default() {
            self.hand_to(w, msg, false);
        }
    }

    /// Asks for the MQTT will under `bucket_key`, whose session's node is
    /// gone, once its delay has passed (every node asks; one wins). A
    /// client that resumes the session elsewhere meanwhile takes the entry
    /// out first (`owned`), and the will is not sent.
    pub(super) fn ask_mqtt_will(&mut self, bucket_key: &str) {
        let Some((node, incarnation, delay)) = self.mqtt_wills.remove(bucket_key) else { return };
        let job = bucket::Cas::MqttWill { bucket_key: bucket_key.to_owned(), node, incarnation, publish: true };
        if delay == 0 {
            if self.cas.try_send(job).is_err() {
                log::warn!(
                    "cluster: the MQTT will {bucket_key} could not be asked for (queue full); another node may send it"
                );
            }
            return;
        }
        let cas = self.cas.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let _ = cas.send(job).await;
        });
    }
}

/// The live node that takes in a dead node's session of client ID `key`:
/// the highest hash of (key, node name), the same answer on every node
/// that sees the same live nodes.
fn chosen<'a>(key: &str, live: &[&'a str]) -> &'a str {
    let score = |node: &str| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes().chain([0]).chain(node.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    };
    live.iter().copied().max_by_key(|n| (score(n), *n)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::chosen;

    #[test]
    pub(super) fn the_adopter_is_one_answer_whatever_the_order_and_sessions_spread() {
        let live = ["a", "b", "c"];
        let mut per = std::collections::HashMap::new();
        for i in 0..300 {
            let key = format!("realm1\0client-{i}");
            let one = chosen(&key, &live);
            assert_eq!(one, chosen(&key, &["c", "a", "b"]), "order does not matter");
            *per.entry(one).or_insert(0) += 1;
            // A node leaving moves only its own sessions.
            if one != "c" {
                assert_eq!(chosen(&key, &["a", "b"]), one);
            }
        }
        assert!(live.iter().all(|n| per.get(n).copied().unwrap_or(0) > 60), "spread: {per:?}");
        assert_eq!(chosen("k", &[]), "");
    }
}
