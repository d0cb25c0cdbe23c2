//! Pub/sub and RPC across nodes on the cluster thread: publications
//! batched per node and subject, arrivals handed to their topic's owner
//! worker, other nodes' interest (the interest bucket's watch) and
//! registrations, dealer messages to and from other nodes.

use super::*;

impl Node {
    /// Encoded once, appended to the batch of each interested node's
    /// subject (`send_batches` publishes them): publications of one batch
    /// turn go out as one NATS message per node and topic, in order.
    pub(super) async fn forward(&mut self, p: &Publication, nodes: &[NodeId], shares: &[(NodeId, u64)]) {
        if !self.connected.load(Ordering::Relaxed) {
            self.drops += nodes.len() as u64;
            return;
        }
        let named =
            shares.iter().filter_map(|&(n, hash)| Some((hash, self.peers.get(usize::from(n))?.name.clone()))).collect();
        let Some(bytes) = wire::encode_shared(p, self.incarnation, Instant::now(), named) else { return };
        for &n in nodes {
            let Some(peer) = self.peers.get(n as usize) else { continue };
            if !peer.alive {
                continue;
            }
            let subject = wire::event_subject(&self.cfg.prefix, &peer.name, &p.realm, &p.topic);
            self.batch(subject, &bytes).await;
        }
    }

    /// Appends one message to this turn's batch for `subject`; a batch
    /// that is full goes at once.
    pub(super) async fn batch(&mut self, subject: String, bytes: &[u8]) {
        let at = match self.batch_at.get(&subject) {
            Some(&at) => at,
            None => {
                self.batches.push((subject.clone(), Vec::new(), 0));
                self.batch_at.insert(subject, self.batches.len() - 1);
                self.batches.len() - 1
            }
        };
        wire::batch_push(&mut self.batches[at].1, bytes);
        self.sent += 1;
        self.batches[at].2 += 1;
        if self.batches[at].1.len() >= BATCH_BYTES {
            self.send_batches().await;
        }
    }

    /// Publishes the batches gathered so far, one NATS message each.
    pub(super) async fn send_batches(&mut self) {
        self.batch_at.clear();
        for (subject, batch, n) in std::mem::take(&mut self.batches) {
            if self.client.publish(subject, Bytes::from(batch)).await.is_err() {
                self.drops += n;
            }
        }
    }

    /// What arrives on the node's subscription: a sync request on its
    /// `ctl` subject, else a publication.
    pub(super) fn on_inbox(&mut self, msg: async_nats::Message, ctl_subject: &str) {
        if let Some(from) = msg.subject.as_str().strip_prefix(self.rpc_inbox.as_str()) {
            let from = from.to_owned();
            return self.on_rpc(&from, &msg.payload);
        }
        if msg.subject.as_str() == self.ping_subject {
            // Another node asks whether this one is still here (`probe`).
            if let Some(reply) = msg.reply {
                let client = self.client.clone();
                tokio::spawn(async move { client.publish(reply, Bytes::new()).await });
            }
            return;
        }
        if msg.subject.as_str() != ctl_subject {
            return self.on_event(&msg.payload);
        }
        let (Some(reply), Ok(b)) = (msg.reply, <[u8; 8]>::try_from(&msg.payload[..])) else { return };
        let revision = u64::from_be_bytes(b);
        if revision <= self.seen_revision || self.parked.len() >= SYNCS {
            self.sync_workers(reply);
        } else {
            self.parked.push((revision, reply));
        }
    }

    /// Every worker is asked to answer once it has applied what this thread
    /// sent it so far; the last answer replies to the other node.
    pub(super) fn sync_workers(&mut self, reply: async_nats::Subject) {
        if self.syncing.len() >= SYNCS {
            // Degraded: answered at once rather than held without bound.
            let client = self.client.clone();
            tokio::spawn(async move { client.publish(reply, Bytes::new()).await });
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        self.syncing.insert(token, (reply, self.workers.len()));
        for w in 0..self.workers.len() {
            self.hand_to(w, ShardMsg::ClusterSync { token }, false);
        }
    }

    /// A publication from another node: to its topic's owner worker here,
    /// so every publication to one topic takes the same path.
    pub(super) fn on_event(&mut self, payload: &[u8]) {
        let (me, workers) = (self.incarnation, self.workers.len());
        let mut arrived = std::mem::take(&mut self.arrived);
        let name = &self.cfg.node;
        wire::decode_batch(payload, Instant::now(), |one| match one {
            Ok((incarnation, p, shares)) if incarnation != me => {
                let serve = shares.into_iter().filter(|(_, n)| n == name).map(|(hash, _)| hash).collect();
                arrived.push((p, serve))
            }
            Ok(_) => {}
            Err(e) => {
                self.drops += 1;
                log::debug!("cluster: a publication from NATS is refused: {e}");
            }
        });
        self.received += arrived.len() as u64;
        for (p, serve) in arrived.drain(..) {
            let w = owner_of(&p.realm, &p.topic, workers);
            self.hand_to(w as usize, ShardMsg::FromCluster(Arc::new(p), serve), true);
        }
        self.arrived = arrived;
    }

    pub(super) fn on_interest(&mut self, entry: kv::Entry) {
        self.seen_revision = self.seen_revision.max(entry.revision);
        self.apply_interest(&entry);
        // Syncs that waited for this revision.
        let seen = self.seen_revision;
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].0 <= seen {
                let (_, reply) = self.parked.swap_remove(i);
                self.sync_workers(reply);
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn apply_interest(&mut self, entry: &kv::Entry) {
        if entry.key.starts_with(procs::REG_KEY) {
            return self.apply_reg(entry);
        }
        let Some((name, _)) = entry.key.split_once('.') else { return };
        if name == self.cfg.node {
            return;
        }
        let id = self.peer(name);
        let alive = self.peers[id as usize].alive;
        match entry.operation {
            kv::Operation::Put => {
                let Some(key) = serde_json::from_slice::<InterestEntry>(&entry.value).ok().and_then(|e| e.key()) else {
                    log::debug!("cluster: an interest entry {} does not read", entry.key);
                    return;
                };
                let old = self.peers[id as usize].entries.insert(entry.key.clone(), key.clone());
                if old.is_none() && alive {
                    self.route(id, &key, true);
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                if let Some(key) = self.peers[id as usize].entries.remove(&entry.key) {
                    if alive {
                        self.route(id, &key, false);
                    }
                }
            }
        }
    }

    /// Tells every worker that node `id` has (or no longer has) interest in `key`.
    pub(super) fn route(&mut self, node: NodeId, key: &SubKey, add: bool) {
        let id = if add {
            let next = &mut self.next_id;
            let e = self.remote_ids.entry(key.clone()).or_insert_with(|| {
                *next += 1;
                (*next, 0)
            });
            e.1 += 1;
            e.0
        } else {
            let Some(e) = self.remote_ids.get_mut(key) else { return };
            e.1 -= 1;
            let id = e.0;
            if e.1 == 0 {
                self.remote_ids.remove(key);
            }
            id
        };
        for w in 0..self.workers.len() {
            let msg = ShardMsg::RemoteRoute { key: key.clone(), subscription: id, node, add };
            self.hand_to(w, msg, false);
        }
    }

    /// A registration entry changed (or went): every worker learns the
    /// other live nodes' callees of it.
    pub(super) fn apply_reg(&mut self, entry: &kv::Entry) {
        let key = entry.key.clone();
        match entry.operation {
            kv::Operation::Put => {
                let Ok(reg) = serde_json::from_slice::<RegEntry>(&entry.value) else {
                    log::debug!("cluster: a registration entry {key} does not read");
                    return;
                };
                for part in &reg.parts {
                    if part.node != self.cfg.node {
                        self.peer(&part.node);
                    }
                }
                self.regs.insert(key.clone(), reg);
                self.announce_reg(&key);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                let Some(mut reg) = self.regs.remove(&key) else { return };
                reg.parts.clear();
                self.announce(&reg);
            }
        }
    }

    /// Announces again the registrations node `id` has a part of (it came
    /// or went).
    pub(super) fn announce_node(&mut self, id: NodeId) {
        let name = &self.peers[id as usize].name;
        let keys: Vec<String> =
            self.regs.iter().filter(|(_, r)| r.parts.iter().any(|p| &p.node == name)).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.announce_reg(&key);
        }
    }

    pub(super) fn announce_reg(&mut self, key: &str) {
        if let Some(reg) = self.regs.get(key).cloned() {
            self.announce(&reg);
        }
    }

    /// Tells every worker the live callees other nodes have for `reg`.
    pub(super) fn announce(&mut self, reg: &RegEntry) {
        let (Some(policy), Some(invoke)) = (MatchPolicy::parse(&reg.policy), InvokePolicy::parse(&reg.invoke)) else {
            log::debug!("cluster: registration {} has an unknown policy", reg.uri);
            return;
        };
        let mut callees = Vec::new();
        for part in &reg.parts {
            let Some(&id) = self.by_name.get(&part.node) else { continue };
            let peer = &self.peers[id as usize];
            let current = peer.incarnation == 0 || peer.incarnation == part.incarnation;
            if !peer.alive || !current || id as usize >= MAX_NODES {
                continue;
            }
            for c in &part.callees {
                if c.worker as usize >= crate::cluster::MAX_WORKERS {
                    continue;
                }
                callees.push(RemoteCallee {
                    session: SessionRef { worker: at_node(id, c.worker), id: c.session },
                    registration: part.registration,
                    disclose_caller: c.disclose_caller,
                    since: c.since,
                });
            }
        }
        let realm: crate::router::Realm = reg.realm.as_str().into();
        let remote = RemoteReg { uri: reg.uri.clone(), invoke, callees: Arc::new(callees) };
        for w in 0..self.workers.len() {
            let msg = ShardMsg::RemoteProcs { realm: realm.clone(), policy, reg: remote.clone() };
            self.hand_to(w, msg, false);
        }
    }

    /// A dealer message for another node's worker. One that cannot go (the
    /// node is not alive, NATS is gone) is dropped, and an INVOCATION's
    /// caller gets ERROR `wamp.error.no_available_callee` at once.
    pub(super) async fn forward_rpc(&mut self, node: NodeId, worker: WorkerId, msg: ShardMsg) {
        let to = self.peers.get(node as usize).filter(|p| p.alive).map(|p| p.name.clone());
        let bytes = match (to, self.connected.load(Ordering::Relaxed)) {
            (Some(to), true) => rpc::encode(node, worker, &msg).map(|b| (to, b)),
            _ => None,
        };
        if let Some((to, bytes)) = bytes {
            // Batched like publications: one NATS message per node and turn.
            let subject = rpc::subject(&self.cfg.prefix, &to, &self.cfg.node);
            return self.batch(subject, &bytes).await;
        }
        self.drops += 1;
        if let ShardMsg::Invoke(inv) = msg {
            if inv.continuation {
                return;
            }
            let text = format!("the callee of '{}' is on a node that cannot be reached", inv.procedure);
            let outcome = CallOutcome::Error {
                error: "wamp.error.no_available_callee".into(),
                details: Vec::new(),
                payload: crate::payload::Payload::args(vec![crate::value::Value::Str(text)]),
            };
            let done = CallDone { caller: inv.caller.id, request: inv.request, outcome };
            let w = inv.caller.worker as usize;
            if w < self.workers.len() {
                self.hand_to(w, ShardMsg::CallDone(Box::new(done)), false);
            }
        }
    }

    /// Another node's dealer message, to the worker it names.
    pub(super) fn on_rpc(&mut self, from: &str, payload: &[u8]) {
        if from == self.cfg.node || from.is_empty() {
            return;
        }
        let id = self.peer(from);
        if id as usize >= MAX_NODES {
            self.drops += 1;
            return;
        }
        let mut decoded = Vec::new();
        wire::split_batch(payload, |one| decoded.push(one.and_then(|b| rpc::decode(b, id))));
        for one in decoded {
            match one {
                Ok((worker, msg)) if (worker as usize) < self.workers.len() => {
                    self.received += 1;
                    // A claim of a client ID this node is taking in waits
                    // for the session to be here.
                    if let ShardMsg::Mqtt(crate::mqtt::registry::Msg::RemoteClaim(c)) = &msg {
                        if let Some(parked) = self.adopting.get_mut(&c.key) {
                            parked.push(msg);
                            continue;
                        }
                    }
                    self.hand_to(worker as usize, msg, false)
                }
                Ok(_) => self.drops += 1,
                Err(e) => {
                    self.drops += 1;
                    log::debug!("cluster: a message from {from} is refused: {e}");
                }
            }
        }
    }
}
