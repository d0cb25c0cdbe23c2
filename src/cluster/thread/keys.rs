//! Retained values and the wills of keys on the keys bucket, on the
//! cluster thread: written, followed in the watch, and a dead node's wills
//! applied by one survivor.

use super::*;

impl Node {
    /// A key's new retained value, to the keys bucket (a KV put: a
    /// JetStream publish on its subject, its acknowledgement awaited
    /// aside so writes stream). Each write is answered to the key's owner
    /// once, `RetainedAck`, with its revision in the bucket or none when it
    /// failed (NATS gone: the other nodes keep their copy; counted as a
    /// drop).
    pub(super) async fn write_retained(&mut self, p: &crate::router::Publication, will: Option<&crate::router::Body>) {
        let now = Instant::now();
        let will = will.map(|b| (self.cfg.node.as_str(), b));
        let value = wire::encode_retained(p, self.incarnation, now, crate::router::unix_millis(), will);
        let Some(value) = value.filter(|_| self.connected.load(Ordering::Relaxed)) else {
            // Expired meanwhile, or no NATS.
            self.drops += 1;
            return self.written(p.realm.clone(), p.topic.clone(), None);
        };
        let subject = format!("{}{}", self.keys_subject, wire::retained_key(&p.realm, &p.topic));
        match self.js.publish(subject, Bytes::from(value)).await {
            Ok(ack) => {
                let acked = self.acked_tx.clone();
                let (realm, topic) = (p.realm.clone(), p.topic.clone());
                tokio::spawn(async move {
                    let revision = match ack.await {
                        Ok(a) => Some(a.sequence),
                        Err(e) => {
                            log::warn!("cluster: a retained value was not written to the keys bucket: {e}");
                            None
                        }
                    };
                    let _ = acked.send((realm, topic, revision)).await;
                });
            }
            Err(e) => {
                self.drops += 1;
                log::warn!("cluster: a retained value was not written to the keys bucket: {e}");
                self.written(p.realm.clone(), p.topic.clone(), None);
            }
        }
    }

    pub(super) fn written(&mut self, realm: crate::router::Realm, topic: String, revision: Option<u64>) {
        let w = owner_of(&realm, &topic, self.workers.len());
        self.hand_to(w as usize, ShardMsg::RetainedAck { realm, topic, revision }, false);
    }

    /// A write in the keys bucket, in the bucket's order, to the key's
    /// owner worker (`Shard::retained_from_cluster` decides).
    pub(super) fn on_key(&mut self, entry: kv::Entry) {
        if entry.key.starts_with("mw=") {
            return self.on_mqtt_will(entry);
        }
        if entry.key.starts_with("ms=") {
            return self.on_mqtt_session(entry);
        }
        // (`mq=` entries, the holders of MQTT client IDs, are read when claimed.)
        if entry.operation != kv::Operation::Put || !entry.key.starts_with("ret=") {
            return;
        }
        let e = match wire::decode_retained(&entry.value, Instant::now(), crate::router::unix_millis()) {
            Ok(e) => e,
            Err(e) => {
                log::debug!("cluster: a retained entry {} does not read: {e}", entry.key);
                return;
            }
        };
        match &e.will {
            Some((node, _)) => {
                if *node != self.cfg.node {
                    self.peer(node);
                }
                self.wills.insert(entry.key.clone(), (node.clone(), e.incarnation));
                if self.will_due(node, e.incarnation) {
                    self.ask_will(&entry.key);
                }
            }
            None => drop(self.wills.remove(&entry.key)),
        }
        let own = e.incarnation == self.incarnation;
        let w = owner_of(&e.p.realm, &e.p.topic, self.workers.len());
        let msg = ShardMsg::RetainedFromCluster { p: Arc::new(e.p), revision: entry.revision, own };
        self.hand_to(w as usize, msg, false);
    }

    /// Whether a session of `node` in its life `incarnation` is over: the
    /// node is taken for dead, or has another life now.
    pub(super) fn will_due(&self, node: &str, incarnation: u64) -> bool {
        if node == self.cfg.node {
            return incarnation != self.incarnation;
        }
        self.by_name.get(node).is_some_and(|&id| {
            let p = &self.peers[id as usize];
            !p.alive || (p.incarnation != 0 && p.incarnation != incarnation)
        })
    }

    /// Asks the deciding task to apply a will whose session's life is over
    /// (every node that sees it asks; the compare-and-set lets one do it).
    pub(super) fn ask_will(&mut self, key: &str) {
        let Some((node, incarnation)) = self.wills.get(key).cloned() else { return };
        let job = bucket::Cas::Will { key: key.to_owned(), node, incarnation };
        if self.cas.try_send(job).is_err() {
            log::warn!("cluster: the will on {key} could not be asked for (queue full); another node may apply it");
        }
    }

    /// The wills of node `id`'s sessions that are now due.
    pub(super) fn wills_of(&mut self, id: NodeId) {
        let name = self.peers[id as usize].name.clone();
        let mqtt: Vec<String> = self
            .mqtt_wills
            .iter()
            .filter(|(_, (node, incarnation, _))| *node == name && self.will_due(node, *incarnation))
            .map(|(k, _)| k.clone())
            .collect();
        for key in mqtt {
            self.ask_mqtt_will(&key);
        }
        let due: Vec<String> = self
            .wills
            .iter()
            .filter(|(_, (node, incarnation))| *node == name && self.will_due(node, *incarnation))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.ask_will(&key);
        }
    }
}
