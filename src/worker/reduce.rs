//! Reducers: a registration made with `reducer: true` folds the
//! publications to the topics its URI matches into each topic's retained
//! value. A publication to a topic whose call would reach such a
//! registration (`ProcTable::reducer_for`) is not delivered as it is: it
//! goes to the key's owner (`Shard::route_ticketed`), which hands it to the
//! reducer as an INVOCATION (the event's arguments, and details `topic` and
//! `retained`: the key's current value, or null); the YIELD's arguments
//! become the key's new retained value (kept, written to the store, and
//! published to the key's subscribers). An ERROR, a timeout or a callee
//! that goes leaves the value as it was (counted).
//!
//! One key has at most one invocation in flight, the next publications
//! waiting at the owner in arrival order (at most `MAX_WAITING` per key and
//! `MAX_WAITING_ALL` per worker; more are
//! dropped and counted), so the value is a sequential fold of what arrived
//! there. Different keys reduce at the same time, on their owners, across
//! the registration's callees. A retained publication to the topic is not
//! reduced: it sets the value (a start or a reset), as for any key.
//!
//! Waiting publications live in memory only: a crash loses them, not the
//! values already reduced (those are in the store like any retained value).

use super::Shard;
use crate::payload::Payload;
use crate::router::fold::fold;
use crate::router::owner::Outbox;
use crate::router::{
    Body, CallDone, CallOutcome, Invoke, MatchPolicy, Publication, Realm, SessionRef, ShardMsg, WorkerId,
};
use crate::value::Value;
use crate::wamp::session::ROUTER_CALLER;
use ahash::AHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publications one key may hold while its reducer works; more are dropped.
pub const MAX_WAITING: usize = 10_000;
/// Publications all the keys of one worker may hold together.
pub const MAX_WAITING_ALL: usize = 100_000;
/// How long a reducer may take over one publication; then it counts as
/// failed and the next one goes.
pub const REDUCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The owner's reductions in progress.
#[derive(Default)]
pub struct Reductions {
    keys: AHashMap<(Realm, String), KeyState>,
    /// Invocations in flight: request -> key, and the call's deadline.
    calls: AHashMap<u64, ((Realm, String), Instant)>,
    /// Publications waiting, all keys (bounded by `MAX_WAITING_ALL`).
    waiting: usize,
}

#[derive(Default)]
struct KeyState {
    /// The invocation in flight: its request and callee, and who waits for
    /// its end.
    busy: Option<(u64, SessionRef, Option<Ack>)>,
    waiting: VecDeque<(Arc<Publication>, Option<Ack>)>,
}

/// A publisher's worker and ticket (`Shard::open_ticket`).
type Ack = (WorkerId, u64);

impl Reductions {
    pub fn is_call(&self, request: u64) -> bool {
        self.calls.contains_key(&request)
    }

    /// Publications waiting or in flight, all keys.
    pub fn pending(&self) -> usize {
        let n = self.keys.values().map(|k| k.waiting.len() + usize::from(k.busy.is_some())).sum();
        debug_assert_eq!(n - self.keys.values().filter(|k| k.busy.is_some()).count(), self.waiting);
        n
    }
}

impl Shard {
    /// The key's value as a reducer sees it (none if expired).
    fn current(&self, key: &(Realm, String)) -> Option<Value> {
        let v = self.retained.get(&key.0, &key.1)?.value.as_ref()?;
        if v.expired(self.now) {
            return None;
        }
        crate::router::keys::value_of(&v.body)
    }

    /// A publication to a reduced topic, at its key's owner.
    /// One that waits for it (`ack`) is told once it is reduced; over the
    /// bound it is refused (`OverLimit`, ERROR `fennec.error.limit_exceeded`),
    /// and one that does not wait is dropped and counted.
    pub(crate) fn reduce(&mut self, p: Arc<Publication>, ack: Option<Ack>) {
        let key = (p.realm.clone(), p.topic.clone());
        let cfg = self.cfg.clone();
        if let Some(rule) = cfg.reducer_rule(&p.realm, &p.topic) {
            // Built in: folded now, in arrival order.
            let event = crate::router::keys::value_of(&p.body);
            match fold(rule.kind, rule.field.as_deref(), rule.limit, self.current(&key).as_ref(), event.as_ref()) {
                Ok(v) => self.apply_reduced(&key, Payload::args(vec![v]), ack),
                Err(why) => {
                    // Checked at the publisher's worker: only a race with a
                    // configuration it did not have gets here.
                    log::debug!("worker {}: '{}': {why}", self.id, p.topic);
                    self.metrics.counters.reduce_failed += 1;
                    self.acknowledge(ack);
                }
            }
            return;
        }
        let all = self.reductions.waiting;
        let state = self.reductions.keys.entry(key.clone()).or_default();
        if state.waiting.len() >= MAX_WAITING || all >= MAX_WAITING_ALL {
            self.metrics.counters.reduce_dropped += 1;
            let why = if all >= MAX_WAITING_ALL {
                format!("this worker's reducers have {MAX_WAITING_ALL} publications waiting")
            } else {
                format!("the reducer of '{}' has {MAX_WAITING} publications waiting", p.topic)
            };
            match ack {
                Some((worker, ticket)) => self.peers.send(worker, ShardMsg::OverLimit { ticket, why: why.into() }),
                None => log::warn!("worker {}: {why}: one dropped", self.id),
            }
            return;
        }
        state.waiting.push_back((p, ack));
        self.reductions.waiting += 1;
        if state.busy.is_none() {
            self.next_reduction(key);
        }
    }

    /// Invokes the reducer for the key's next waiting publication, if any.
    fn next_reduction(&mut self, key: (Realm, String)) {
        if self.reductions.keys.get(&key).is_none_or(|s| s.waiting.is_empty()) {
            self.reductions.keys.remove(&key);
            return;
        }
        let retained = self.current(&key);
        let Some(state) = self.reductions.keys.get_mut(&key) else { return };
        debug_assert!(state.busy.is_none());
        let Some((p, ack)) = state.waiting.pop_front() else {
            self.reductions.keys.remove(&key);
            return;
        };
        self.reductions.waiting -= 1;
        let callee = self
            .procs
            .reducer_for(&key.0, &key.1)
            .and_then(|(policy, reg)| reg.pick().map(|c| (policy, reg.registration, c.session)));
        let Some((policy, registration, callee)) = callee else {
            // The reducer went: what waits cannot be reduced (and is
            // acknowledged: it was accepted, as a publication nobody
            // receives is).
            let state = self.reductions.keys.remove(&key).expect("looked up above");
            self.reductions.waiting -= state.waiting.len();
            let n = 1 + state.waiting.len() as u64;
            self.metrics.counters.reduce_dropped += n;
            log::warn!("worker {}: '{}' has no reducer any more: {n} publication(s) dropped", self.id, key.1);
            for ack in std::iter::once(ack).chain(state.waiting.into_iter().map(|(_, a)| a)) {
                self.acknowledge(ack);
            }
            return;
        };
        let details = vec![
            ("topic".to_owned(), Value::Str(key.1.clone())),
            ("retained".to_owned(), retained.unwrap_or(Value::Null)),
        ];
        let payload = match &p.body {
            Body::Wamp(pl) => pl.clone(),
            Body::Mqtt(b) => crate::mqtt::payload::to_wamp(b),
        };
        self.next_authz += 1;
        let request = self.next_authz;
        let pattern = policy != MatchPolicy::Exact;
        let details = Some(Box::new(details));
        let inv =
            Invoke::router_call(self.id, request, callee.id, registration, key.1.clone(), pattern, payload, details);
        state.busy = Some((request, callee, ack));
        let deadline = self.now + REDUCE_TIMEOUT;
        self.call_deadlines.insert((deadline, ROUTER_CALLER, request));
        self.reductions.calls.insert(request, (key, deadline));
        self.peers.send(callee.worker, ShardMsg::Invoke(Box::new(inv)));
    }

    /// The reducer's answer (a `CallDone` to the router's caller session).
    pub(crate) fn on_reduced(&mut self, done: CallDone) {
        let value = match done.outcome {
            CallOutcome::Progress(..) => return, // not the answer yet
            CallOutcome::Result(payload, _) => Some(payload),
            CallOutcome::Error { error, .. } => {
                log::debug!("worker {}: a reducer failed: {error}", self.id);
                None
            }
        };
        let Some((key, ack)) = self.end_call(done.request) else { return };
        match value {
            Some(payload) => self.apply_reduced(&key, payload, ack),
            None => {
                self.metrics.counters.reduce_failed += 1;
                self.acknowledge(ack);
            }
        }
        self.next_reduction(key);
    }

    /// The reducer did not answer within `REDUCE_TIMEOUT`: the invocation
    /// is interrupted and the value left as it was.
    pub(crate) fn on_reduce_timeout(&mut self, request: u64) {
        let callee =
            self.reductions.calls.get(&request).and_then(|(k, _)| self.reductions.keys.get(k)).and_then(|s| s.busy);
        let Some((key, ack)) = self.end_call(request) else { return };
        self.acknowledge(ack);
        if let Some((_, callee, _)) = callee {
            let caller = SessionRef { worker: self.id, id: ROUTER_CALLER };
            let why = crate::router::Interruption::Timeout;
            self.peers.send(callee.worker, ShardMsg::Interrupt { callee: callee.id, caller, request, why });
        }
        log::warn!("worker {}: the reducer of '{}' did not answer in time", self.id, key.1);
        self.metrics.counters.reduce_failed += 1;
        self.next_reduction(key);
    }

    /// Forgets a reducer call (and its deadline); its key, and who waits.
    fn end_call(&mut self, request: u64) -> Option<((Realm, String), Option<Ack>)> {
        let (key, deadline) = self.reductions.calls.remove(&request)?;
        self.call_deadlines.remove(&(deadline, ROUTER_CALLER, request));
        let state = self.reductions.keys.get_mut(&key)?;
        let (busy, _, ack) = state.busy.take()?;
        debug_assert_eq!(busy, request);
        Some((key, ack))
    }

    /// Tells a waiting publisher that its publication is done with.
    fn acknowledge(&mut self, ack: Option<Ack>) {
        if let Some((worker, ticket)) = ack {
            self.peers.send(worker, ShardMsg::Stored { tickets: vec![ticket], error: None });
        }
    }

    /// The reducer's result becomes the key's value: kept here (this is the
    /// owner: the next invocation sees it), stored, and published to the
    /// key's subscribers.
    /// A waiting publisher is told once the value is durable (`retain`).
    fn apply_reduced(&mut self, key: &(Realm, String), payload: Payload, ack: Option<Ack>) {
        let (id, body) = (self.ids.next_id(), Body::Wamp(payload));
        let p = Arc::new(Publication::router_value(key.0.clone(), key.1.clone(), id, self.id, body, self.now));
        if let Some(why) = self.over_bound(&p) {
            log::warn!("worker {}: the reduced value of '{}' is not kept: {why}", self.id, key.1);
            self.metrics.counters.reduce_failed += 1;
            return self.acknowledge(ack);
        }
        self.metrics.counters.reduce_applied += 1;
        self.retain(p.clone(), ack);
        self.publish_counted(p);
    }
}

#[cfg(test)]
mod tests {
    use crate::worker::testkit::{Client, Cluster};
    use serde_json::{json, Value as Json};

    fn roles() -> Json {
        json!({"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}})
    }

    /// A cluster of `shards`, a reducer callee on shard 0 registered for
    /// `uri` with `options`, a publisher on the last shard.
    fn setup(shards: usize, uri: &str, options: Json) -> (Cluster, Client, Client) {
        let mut cl = Cluster::new(shards);
        let (callee, publisher) = (cl.wamp(0), cl.wamp(shards - 1));
        cl.join(callee, roles());
        cl.join(publisher, roles());
        cl.send(callee, json!([64, 1, options, uri]));
        let registered = cl.one(callee);
        assert_eq!(registered[0], 65, "REGISTERED, not SUBSCRIBED: {registered}");
        (cl, callee, publisher)
    }

    /// The callee answers every INVOCATION it has with `answer(args, details)`
    /// until none is left; the invocations it got.
    fn serve(cl: &mut Cluster, callee: Client, answer: impl Fn(&Json, &Json) -> Json) -> Vec<Json> {
        let mut seen = Vec::new();
        loop {
            let got = cl.take(callee);
            if got.is_empty() {
                return seen;
            }
            for inv in got {
                assert_eq!(inv[0], 68, "INVOCATION: {inv}");
                let result = answer(&inv[4], &inv[3]);
                cl.send(callee, json!([70, inv[1], {}, [result]]));
                seen.push(inv);
            }
        }
    }

    fn retained(cl: &mut Cluster, shard: usize, topic: &str) -> Json {
        let c = cl.wamp(shard);
        cl.join(c, roles());
        cl.send(c, json!([32, 1, {"get_retained": true}, topic]));
        let got = cl.take(c);
        assert_eq!(got[0][0], 33, "SUBSCRIBED: {got:?}");
        assert_eq!(got.len(), 2, "one retained EVENT: {got:?}");
        got[1][4][0].clone()
    }

    #[test]
    fn publications_are_folded_into_the_retained_value_in_order() {
        let (mut cl, callee, publisher) = setup(2, "sum.a", json!({"reducer": true}));
        let live = cl.wamp(1);
        cl.join(live, roles());
        cl.send(live, json!([32, 1, {}, "sum.a"]));
        assert_eq!(cl.one(live)[0], 33);
        for i in 1..=5 {
            cl.send(publisher, json!([16, i, {"acknowledge": true}, "sum.a", [i]]));
        }
        assert!(cl.take(publisher).is_empty(), "PUBLISHED waits for the reducer");
        // One invocation at a time: the second comes once the first is answered.
        let seen = serve(&mut cl, callee, |args, details| {
            let before = details["retained"].as_i64().unwrap_or(0);
            json!(before + args[0].as_i64().unwrap())
        });
        assert_eq!(seen.len(), 5);
        let acks: Vec<Json> = cl.take(publisher).into_iter().map(|m| json!([m[0], m[1]])).collect();
        assert_eq!(acks, (1..=5).map(|i| json!([17, i])).collect::<Vec<_>>());
        let before: Vec<Json> = seen.iter().map(|inv| inv[3]["retained"].clone()).collect();
        assert_eq!(before, vec![Json::Null, json!(1), json!(3), json!(6), json!(10)]);
        assert!(seen.iter().all(|inv| inv[3]["topic"] == "sum.a"));
        // The subscriber sees each new value, not the raw publications.
        let events: Vec<Json> = cl.take(live).into_iter().map(|e| e[4][0].clone()).collect();
        assert_eq!(events, vec![json!(1), json!(3), json!(6), json!(10), json!(15)]);
        assert_eq!(retained(&mut cl, 0, "sum.a"), json!(15));
        let applied: u64 = cl.shards.iter().map(|s| s.metrics.counters.reduce_applied).sum();
        assert_eq!(applied, 5);
    }

    #[test]
    fn a_pattern_reducer_keeps_one_value_per_topic_and_calls_still_work() {
        let (mut cl, callee, publisher) =
            setup(2, "count", json!({"reducer": true, "match": "prefix", "invoke": "roundrobin"}));
        for topic in ["count.a", "count.b", "count.a"] {
            cl.send(publisher, json!([16, 1, {}, topic, ["x"]]));
        }
        let seen = serve(&mut cl, callee, |_, details| json!(details["retained"].as_i64().unwrap_or(0) + 1));
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|inv| inv[3]["procedure"] == inv[3]["topic"]), "{seen:?}");
        assert_eq!(retained(&mut cl, 1, "count.a"), json!(2));
        assert_eq!(retained(&mut cl, 1, "count.b"), json!(1));
        // A CALL reaches the registration as any call does.
        let caller = cl.wamp(1);
        cl.join(caller, roles());
        cl.send(caller, json!([48, 9, {}, "count.z", [1]]));
        let inv = cl.one(callee);
        assert_eq!(inv[0], 68);
        assert!(inv[3].get("retained").is_none(), "a plain call: {inv}");
        cl.send(callee, json!([70, inv[1], {}, ["called"]]));
        assert_eq!(cl.one(caller), json!([50, 9, {}, ["called"]]));
    }

    #[test]
    fn an_error_or_a_callee_that_leaves_keeps_the_value() {
        let (mut cl, callee, publisher) = setup(2, "k.v", json!({"reducer": true}));
        cl.send(publisher, json!([16, 1, {"retain": true}, "k.v", [100]]));
        assert_eq!(retained(&mut cl, 1, "k.v"), json!(100), "a retained publication sets the value");
        cl.send(publisher, json!([16, 2, {}, "k.v", [1]]));
        let inv = cl.one(callee);
        assert_eq!(inv[3]["retained"], json!(100));
        cl.send(callee, json!([8, 68, inv[1], {}, "app.error.no"]));
        assert_eq!(retained(&mut cl, 1, "k.v"), json!(100));
        cl.send(publisher, json!([16, 3, {}, "k.v", [1]]));
        assert_eq!(cl.one(callee)[0], 68);
        cl.drop_client(callee);
        assert_eq!(retained(&mut cl, 1, "k.v"), json!(100));
        let counts: u64 = cl.shards.iter().map(|s| s.metrics.counters.reduce_failed).sum();
        assert_eq!(counts, 2);
        // No reducer any more: publications are delivered as they are.
        let live = cl.wamp(0);
        cl.join(live, roles());
        cl.send(live, json!([32, 1, {}, "k.v"]));
        assert_eq!(cl.one(live)[0], 33);
        cl.send(publisher, json!([16, 4, {}, "k.v", [7]]));
        assert_eq!(cl.one(live)[4], json!([7]));
        assert!(cl.shards.iter().all(|s| s.reductions.pending() == 0));
    }

    #[test]
    fn a_key_holds_a_bounded_number_of_waiting_publications() {
        let (mut cl, callee, publisher) = setup(1, "slow", json!({"reducer": true}));
        for i in 0..super::MAX_WAITING as u64 + 3 {
            let msg = serde_json::to_vec(&json!([16, i + 1, {"acknowledge": i % 2 == 0}, "slow", [i]])).unwrap();
            crate::wamp::session::on_message(&mut cl.shards[0], publisher.handle, &msg);
        }
        cl.settle();
        // One in flight, MAX_WAITING waiting, the two last refused (one
        // with an ERROR, the other dropped without a word).
        assert_eq!(cl.shards[0].reductions.pending(), super::MAX_WAITING + 1);
        let refused = cl.one(publisher);
        assert_eq!(refused[0], 8, "ERROR: {refused}");
        assert_eq!(refused[2], super::MAX_WAITING as u64 + 3);
        assert_eq!(refused[4], "fennec.error.limit_exceeded");
        assert_eq!(cl.shards[0].metrics.counters.reduce_dropped, 2);
        assert_eq!(cl.take(callee).len(), 1, "one invocation in flight");
    }

    const BUILT_IN: &str = r#"
        [[realm]]
        name = "realm1"
        [[realm.reducer]]
        uri = "shop.total"
        kind = "sum"
        field = "amount"
        [[realm.reducer]]
        uri = "shop.seen"
        match = "prefix"
        kind = "count"
        [[realm.reducer]]
        uri = "shop.last"
        kind = "append"
        limit = 2
    "#;

    #[test]
    fn built_in_reducers_need_no_callee_and_check_values_where_published() {
        let mut cl = Cluster::from_toml(2, BUILT_IN);
        let (publisher, watcher) = (cl.wamp(1), cl.wamp(0));
        cl.join(publisher, roles());
        cl.join(watcher, roles());
        cl.send(watcher, json!([32, 1, {}, "shop.total"]));
        assert_eq!(cl.one(watcher)[0], 33);
        for (i, amount) in [json!(5), json!(2.5), json!(-10)].into_iter().enumerate() {
            cl.send(publisher, json!([16, i + 1, {"acknowledge": true}, "shop.total", [], {"amount": amount}]));
            assert_eq!(cl.one(publisher)[0], 17, "PUBLISHED");
        }
        let totals: Vec<Json> = cl.take(watcher).into_iter().map(|e| e[4][0].clone()).collect();
        assert_eq!(totals, vec![json!(5), json!(7.5), json!(-2.5)]);
        // A value the reducer cannot take: ERROR at once, the total unchanged.
        cl.send(publisher, json!([16, 9, {"acknowledge": true}, "shop.total", [], {"amount": "lots"}]));
        let refused = cl.one(publisher);
        assert_eq!((refused[0].clone(), refused[4].clone()), (json!(8), json!("wamp.error.invalid_argument")));
        assert!(refused[5][0].as_str().unwrap().contains("not a number"), "{refused}");
        assert_eq!(retained(&mut cl, 1, "shop.total"), json!(-2.5));
        for topic in ["shop.seen.a", "shop.seen.a", "shop.seen.b"] {
            cl.send(publisher, json!([16, 1, {}, topic]));
        }
        assert_eq!(retained(&mut cl, 0, "shop.seen.a"), json!(2));
        assert_eq!(retained(&mut cl, 0, "shop.seen.b"), json!(1));
        for v in ["x", "y", "z"] {
            cl.send(publisher, json!([16, 1, {}, "shop.last", [v]]));
        }
        assert_eq!(retained(&mut cl, 0, "shop.last"), json!(["y", "z"]));
    }

    #[test]
    fn mqtt_publications_are_reduced_too() {
        use crate::worker::testkit::{mqtt_connect, mqtt_packet, mqtt_str};
        let (mut cl, callee, _) = setup(2, "dev.temp", json!({"reducer": true}));
        let dev = cl.mqtt(1);
        cl.send_mqtt(dev, &mqtt_connect(None, "d1"));
        assert_eq!(cl.take_frames(dev)[0][..], [0x20, 2, 0, 0], "CONNACK");
        let mut publish = mqtt_str("dev/temp");
        publish.extend_from_slice(b"21.5");
        cl.send_mqtt(dev, &mqtt_packet(0x30, &publish));
        let inv = cl.one(callee);
        assert_eq!(inv[4], json!([21.5]), "the MQTT payload read as JSON: {inv}");
        cl.send(callee, json!([70, inv[1], {}, [{"max": 21.5}]]));
        assert_eq!(retained(&mut cl, 0, "dev.temp"), json!({"max": 21.5}));
    }
}
