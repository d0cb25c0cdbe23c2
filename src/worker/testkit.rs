//! Shards without sockets or threads: N `Shard`s wired to each other by
//! their real bounded channels, detached connections (`Conn::detached`)
//! whose replies stay in their outbound queues, and a `settle` that hands
//! every shard message to its shard until none is left. Tests drive the
//! WAMP and MQTT session layers and the routing core through the same
//! entry points the worker loop uses, and read the bytes the clients would
//! get; time is `Shard::now`, moved by hand, and `Shard::tick`.

use super::{Shard, ShardSetup};
use crate::config::Config;
use crate::conn::{Buf, Conn, Proto};
use crate::metrics::CloseReason;
use crate::mqtt::session::MqttConn;
use crate::router::ShardMsg;
use crate::wamp::message::Serializer;
use crate::wamp::session::{Framing, WampConn};
use crossbeam_channel::{bounded, Receiver};
use mio::{Poll, Token, Waker};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most rounds `settle` runs before it calls the shards livelocked.
const MAX_ROUNDS: usize = 10_000;

pub struct Cluster {
    pub shards: Vec<Shard>,
    inboxes: Vec<Receiver<ShardMsg>>,
    /// Keeps the wakers' polls alive.
    _polls: Vec<Poll>,
    serial: u64,
}

/// A client connection: its shard and its handle there.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub shard: usize,
    pub handle: usize,
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        Cluster::with_config(n, Config::default())
    }

    pub fn with_config(n: usize, cfg: Config) -> Cluster {
        let cfg = Arc::new(cfg);
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| bounded(1024)).unzip();
        let polls: Vec<Poll> = (0..n).map(|_| Poll::new().expect("poll")).collect();
        let wakers: Vec<Arc<Waker>> =
            polls.iter().map(|p| Arc::new(Waker::new(p.registry(), Token(usize::MAX)).expect("waker"))).collect();
        let now = Instant::now();
        let shards = (0..n)
            .map(|i| {
                Shard::new(ShardSetup {
                    id: i as u16,
                    config: cfg.clone(),
                    senders: senders.clone(),
                    wakers: wakers.clone(),
                    store: None,
                    cluster: None,
                    retained: Vec::new(),
                    history: Vec::new(),
                    table_rows: Vec::new(),
                    ready: None,
                    now,
                })
            })
            .collect();
        Cluster { shards, inboxes, _polls: polls, serial: 0 }
    }

    /// N shards with the configuration a TOML file's text gives (the
    /// command line's defaults otherwise).
    pub fn from_toml(n: usize, text: &str) -> Cluster {
        let file: crate::config::File = toml::from_str(text).expect("a configuration");
        let cli = <crate::config::Cli as clap::Parser>::parse_from(["fennec"]);
        Cluster::with_config(n, Config::resolve(cli, file).expect("a valid configuration"))
    }

    /// Hands every message between shards to its shard until all are quiet.
    pub fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for (i, sh) in self.shards.iter_mut().enumerate() {
                while let Some(msg) = sh.peers.local.pop_front() {
                    moved = true;
                    sh.on_shard_msg(msg);
                }
                while let Ok(msg) = self.inboxes[i].try_recv() {
                    moved = true;
                    sh.on_shard_msg(msg);
                }
                sh.peers.flush();
                // What the worker loop would do with paused input: nothing
                // is kept here (tests feed whole packets), so just clear.
                for h in std::mem::take(&mut sh.resume) {
                    if let Some(c) = sh.conns.get_mut(h) {
                        c.resume = false;
                    }
                }
                sh.dirty.clear();
                for h in sh.conns.iter_mut().map(|(_, c)| c) {
                    h.dirty = false;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("shards still busy after {MAX_ROUNDS} rounds");
    }

    fn attach(&mut self, shard: usize, proto: Proto) -> Client {
        self.serial += 1;
        let mut conn = Conn::detached(self.serial);
        conn.proto = proto;
        let handle = self.shards[shard].conns.insert(conn);
        Client { shard, handle }
    }

    /// A WAMP client (JSON over RawSocket framing) on `shard`.
    pub fn wamp(&mut self, shard: usize) -> Client {
        self.wamp_with(shard, Serializer::Json, Framing::RawSocket { max_out: 1 << 24 })
    }

    /// A WAMP client with another serializer or framing. `take` and `send`
    /// speak JSON over RawSocket framing only; `take_frames` and
    /// `wamp::session::on_message` work for any.
    pub fn wamp_with(&mut self, shard: usize, ser: Serializer, framing: Framing) -> Client {
        self.attach(shard, Proto::Wamp(Box::new(WampConn::new(ser, framing))))
    }

    /// An MQTT-over-TCP client on `shard`.
    pub fn mqtt(&mut self, shard: usize) -> Client {
        let now = self.shards[shard].now;
        self.attach(shard, Proto::Mqtt(Box::new(MqttConn::new(false, now))))
    }

    /// Sends one WAMP message, then settles.
    pub fn send(&mut self, c: Client, msg: Json) {
        let bytes = serde_json::to_vec(&msg).expect("json");
        crate::wamp::session::on_message(&mut self.shards[c.shard], c.handle, &bytes);
        self.settle();
    }

    /// Sends MQTT packet bytes, then settles.
    pub fn send_mqtt(&mut self, c: Client, packet: &[u8]) {
        let mut buf = Buf::with_capacity(packet.len());
        buf.append(packet);
        crate::mqtt::session::on_bytes(&mut self.shards[c.shard], c.handle, &mut buf);
        assert!(buf.is_empty(), "whole packets are handled at once");
        self.settle();
    }

    /// Everything queued to the client so far, frame by frame.
    pub fn take_frames(&mut self, c: Client) -> Vec<bytes::Bytes> {
        let sh = &mut self.shards[c.shard];
        let (conn, pool) = (&mut sh.conns[c.handle], &mut sh.out_pool);
        std::iter::from_fn(|| conn.out.pop(pool)).collect()
    }

    /// Writes what is queued to the client (as the worker's flush would, to
    /// a sink); the bytes written.
    pub fn drain(&mut self, c: Client) -> usize {
        let sh = &mut self.shards[c.shard];
        let (conn, pool) = (&mut sh.conns[c.handle], &mut sh.out_pool);
        conn.out.write_to(&mut std::io::sink(), pool).expect("a sink takes everything")
    }

    /// The WAMP messages queued to the client so far.
    pub fn take(&mut self, c: Client) -> Vec<Json> {
        self.take_frames(c)
            .into_iter()
            .map(|f| {
                assert_eq!(f[0] & 0x07, 0, "a RawSocket message frame");
                serde_json::from_slice(&f[4..]).expect("the router sends JSON")
            })
            .collect()
    }

    /// The one WAMP message queued to the client.
    pub fn one(&mut self, c: Client) -> Json {
        let mut got = self.take(c);
        assert_eq!(got.len(), 1, "exactly one message: {got:?}");
        got.remove(0)
    }

    /// HELLO → WELCOME with the given roles; the session ID.
    pub fn join(&mut self, c: Client, roles: Json) -> u64 {
        self.send(c, json!([1, "realm1", {"roles": roles}]));
        let welcome = self.one(c);
        assert_eq!(welcome[0], 2, "WELCOME: {welcome}");
        welcome[1].as_u64().expect("session ID")
    }

    pub fn is_closed(&self, c: Client) -> bool {
        self.shards[c.shard].conns[c.handle].is_closed()
    }

    /// The client's connection is lost.
    pub fn drop_client(&mut self, c: Client) {
        self.shards[c.shard].close(c.handle, CloseReason::Lost, None);
        self.settle();
    }

    /// Moves every shard's clock and runs its deadlines.
    pub fn advance(&mut self, by: Duration) {
        for sh in &mut self.shards {
            sh.now += by;
            sh.tick();
        }
        self.settle();
    }
}

/// Builds an MQTT packet: fixed-header byte, then the body with its
/// remaining length.
pub fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// An MQTT string (two-octet length, then the bytes).
pub fn mqtt_str(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s), with a user
/// name and password if given.
pub fn mqtt_connect(user: Option<(&str, &str)>, id: &str) -> Vec<u8> {
    let mut b = mqtt_str("MQTT");
    let flags = 0x02 | if user.is_some() { 0xc0 } else { 0 };
    b.extend_from_slice(&[4, flags, 0, 60]);
    b.extend(mqtt_str(id));
    if let Some((u, p)) = user {
        b.extend(mqtt_str(u));
        b.extend(mqtt_str(p));
    }
    mqtt_packet(0x10, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Json {
        json!({"publisher": {}, "subscriber": {}, "caller": {"features": {"call_canceling": true}},
               "callee": {"features": {"call_canceling": true}}})
    }

    #[test]
    fn hello_gets_welcome_and_goodbye_ends_the_session() {
        let mut cl = Cluster::new(1);
        let c = cl.wamp(0);
        let session = cl.join(c, roles());
        assert!(session > 0);
        assert_eq!(cl.shards[0].sessions.get(&session), Some(&c.handle));
        cl.send(c, json!([6, {}, "wamp.close.normal"]));
        let reply = cl.one(c);
        assert_eq!(reply, json!([6, {}, "wamp.close.goodbye_and_out"]));
        assert!(cl.shards[0].sessions.is_empty());
    }

    #[test]
    fn a_message_before_hello_aborts() {
        let mut cl = Cluster::new(1);
        let c = cl.wamp(0);
        cl.send(c, json!([32, 1, {}, "a.b"]));
        let abort = cl.one(c);
        assert_eq!(abort[0], 3, "ABORT: {abort}");
        assert_eq!(abort[2], "wamp.error.protocol_violation");
        assert!(cl.is_closed(c));
    }

    /// Subscriber and publisher on different shards: SUBSCRIBED comes only
    /// after both shards have the route, so the next PUBLISH reaches it.
    #[test]
    fn a_publication_crosses_shards() {
        let mut cl = Cluster::new(2);
        let (sub, publ) = (cl.wamp(1), cl.wamp(0));
        cl.join(sub, roles());
        cl.join(publ, roles());
        cl.send(sub, json!([32, 7, {}, "com.example.topic"]));
        let subscribed = cl.one(sub);
        assert_eq!(subscribed[0], 33);
        assert_eq!(subscribed[1], 7);
        let id = subscribed[2].as_u64().unwrap();
        assert!(cl.shards.iter().all(|s| s.topics.by_id(id).is_some()), "route on every shard");
        cl.send(publ, json!([16, 8, {"acknowledge": true}, "com.example.topic", [1, "two"], {"k": 3}]));
        let published = cl.one(publ);
        assert_eq!(published[0], 17);
        assert_eq!(published[1], 8);
        let event = cl.one(sub);
        assert_eq!(event[0], 36);
        assert_eq!(event[1], id);
        assert_eq!(event[2], published[2], "the publication ID");
        assert_eq!(event[4], json!([1, "two"]));
        assert_eq!(event[5], json!({"k": 3}));
        // Unsubscribed: the route leaves every shard; nothing more arrives.
        cl.send(sub, json!([34, 9, id]));
        assert_eq!(cl.one(sub), json!([35, 9]));
        assert!(cl.shards.iter().all(|s| s.topics.by_id(id).is_none()));
        cl.send(publ, json!([16, 10, {}, "com.example.topic"]));
        assert!(cl.take(sub).is_empty());
    }

    /// A call from one shard to a callee on another, and what the caller
    /// gets when the callee's connection is lost mid-call.
    #[test]
    fn a_call_crosses_shards_and_ends_when_its_callee_goes() {
        let mut cl = Cluster::new(2);
        let (callee, caller) = (cl.wamp(0), cl.wamp(1));
        cl.join(callee, roles());
        cl.join(caller, roles());
        cl.send(callee, json!([64, 1, {}, "com.example.add"]));
        let registered = cl.one(callee);
        assert_eq!(registered[0], 65);
        cl.send(caller, json!([48, 2, {}, "com.example.add", [2, 3]]));
        let inv = cl.one(callee);
        assert_eq!(inv[0], 68, "INVOCATION: {inv}");
        assert_eq!(inv[2], registered[2]);
        assert_eq!(inv[4], json!([2, 3]));
        cl.send(callee, json!([70, inv[1], {}, [5]]));
        assert_eq!(cl.one(caller), json!([50, 2, {}, [5]]));
        // A second call; the callee is lost before it answers.
        cl.send(caller, json!([48, 3, {}, "com.example.add", [1, 1]]));
        assert_eq!(cl.one(callee)[0], 68);
        cl.drop_client(callee);
        let err = cl.one(caller);
        assert_eq!(err[0], 8);
        assert_eq!(err[1], 48);
        assert_eq!(err[2], 3);
        assert_eq!(err[4], "wamp.error.canceled");
        // Its registration went with it, on every shard.
        cl.send(caller, json!([48, 4, {}, "com.example.add", []]));
        let err = cl.one(caller);
        assert_eq!(err[4], "wamp.error.no_such_procedure");
    }

    /// Call timeouts are the shard's deadlines: moving its clock past one
    /// ends the call with `wamp.error.timeout` and interrupts the callee.
    #[test]
    fn a_call_times_out_when_the_clock_passes_its_deadline() {
        let mut cl = Cluster::new(2);
        let (callee, caller) = (cl.wamp(0), cl.wamp(1));
        cl.join(callee, roles());
        cl.join(caller, roles());
        cl.send(callee, json!([64, 1, {}, "com.example.slow"]));
        cl.one(callee);
        cl.send(caller, json!([48, 2, {"timeout": 500}, "com.example.slow", []]));
        let inv = cl.one(callee);
        cl.advance(Duration::from_millis(100));
        assert!(cl.take(caller).is_empty(), "not yet");
        cl.advance(Duration::from_millis(500));
        let err = cl.one(caller);
        assert_eq!(err[4], "wamp.error.timeout", "{err}");
        let interrupt = cl.one(callee);
        assert_eq!(interrupt[0], 69, "INTERRUPT: {interrupt}");
        assert_eq!(interrupt[1], inv[1]);
        // The callee's late answer is dropped.
        cl.send(callee, json!([70, inv[1], {}, []]));
        assert!(cl.take(caller).is_empty());
    }

    /// MQTT and WAMP share the core: a WAMP publication to `a.b` reaches an
    /// MQTT subscriber of `a/+` on another shard, as an MQTT PUBLISH.
    #[test]
    fn a_wamp_publication_reaches_an_mqtt_subscriber() {
        let mut cl = Cluster::new(2);
        let dev = cl.mqtt(1);
        let mut connect = mqtt_str("MQTT");
        connect.extend_from_slice(&[4, 0x02, 0, 60]);
        connect.extend(mqtt_str("device-1"));
        cl.send_mqtt(dev, &mqtt_packet(0x10, &connect));
        assert_eq!(cl.take_frames(dev), vec![bytes::Bytes::from_static(&[0x20, 2, 0, 0])], "CONNACK");
        let mut subscribe = vec![0, 1];
        subscribe.extend(mqtt_str("a/+"));
        subscribe.push(0);
        cl.send_mqtt(dev, &mqtt_packet(0x82, &subscribe));
        assert_eq!(cl.take_frames(dev), vec![bytes::Bytes::from_static(&[0x90, 3, 0, 1, 0])], "SUBACK");
        let publ = cl.wamp(0);
        cl.join(publ, roles());
        cl.send(publ, json!([16, 1, {}, "a.b", ["hi"]]));
        let got = cl.take_frames(dev);
        assert_eq!(got.len(), 1);
        let mut expect = mqtt_str("a/b");
        // One argument and no kwargs: the MQTT payload is that value's JSON.
        expect.extend_from_slice(br#""hi""#);
        assert_eq!(got[0], mqtt_packet(0x30, &expect), "PUBLISH QoS 0");
    }

    /// Each shared subscription takes its workers in turn, however many
    /// groups a topic has: with two groups whose members sit on two
    /// workers, every member gets half of each group's messages (one
    /// turn counter for all groups sent every message of a group to the
    /// same worker).
    #[test]
    fn shared_subscriptions_take_turns_per_group() {
        let mut cl = Cluster::new(3);
        let mut member = |shard: usize, id: &str, filter: &str| {
            let m = cl.mqtt(shard);
            cl.send_mqtt(m, &mqtt_connect(None, id));
            cl.send_mqtt(m, &mqtt_subscribe(filter));
            assert_eq!(cl.take_frames(m).len(), 2, "CONNACK, SUBACK");
            m
        };
        let members = [
            member(0, "g1-0", "$share/g1/t"),
            member(1, "g1-1", "$share/g1/t"),
            member(0, "g2-0", "$share/g2/t"),
            member(1, "g2-1", "$share/g2/t"),
        ];
        let publisher = cl.mqtt(2);
        cl.send_mqtt(publisher, &mqtt_connect(None, "pub"));
        cl.take_frames(publisher);
        let mut publish = mqtt_str("t");
        publish.push(b'x');
        for _ in 0..10 {
            cl.send_mqtt(publisher, &mqtt_packet(0x30, &publish));
        }
        let got: Vec<usize> = members.iter().map(|&m| cl.take_frames(m).len()).collect();
        assert_eq!(got, [5, 5, 5, 5], "each group's ten messages, half to each worker's member");
    }

    /// A persistent session a dead node left, taken in here (`Msg::Adopt`,
    /// as the cluster thread hands it on): offline on its client ID's
    /// owner with what the dead node had queued for it, its subscription
    /// routed, so what is published meanwhile waits too, behind it, for
    /// its client, which finds the session present.
    #[test]
    fn a_session_taken_in_from_a_dead_node_queues_for_its_client() {
        use crate::store::mqtt::{SessionRecord, SubRecord};
        let mut cl = Cluster::new(2);
        let sub = SubRecord {
            filter: "adopt/t".into(),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            id: None,
        };
        let record = SessionRecord {
            id: 77,
            created_ms: 1,
            version: 4,
            expiry: u32::MAX,
            subs: vec![sub],
            will: None,
            offline_since_ms: None,
            will_due_ms: None,
            next_pkid: 1,
            authid: "dev".into(),
            authrole: "anonymous".into(),
        };
        let realm = cl.shards[0].cfg.mqtt.realm.clone();
        let owner = usize::from(crate::router::owner_of(&realm, "dev", 2));
        let key: Arc<str> = format!("{realm}\0dev").into();
        // One message the dead node had queued for it (`Left::queued`).
        let p = crate::router::Publication::new(
            realm.as_str().into(),
            "adopt.t".into(),
            5,
            crate::router::SessionRef { worker: 0, id: 1 },
            crate::router::Body::Mqtt(bytes::Bytes::from_static(b"left")),
        );
        let message = crate::store::mqtt::MessageRecord {
            publication: crate::store::record::encode(&p, None, cl.shards[0].now),
            qos: 1,
            retain: false,
            sub_ids: Vec::new(),
            pkid: 0,
            released: false,
        };
        let left = crate::mqtt::registry::Left {
            record: crate::store::mqtt::encode(&record),
            queued: vec![(1, crate::store::mqtt::encode(&message))],
        };
        let adopt = crate::mqtt::registry::Msg::Adopt { key, left: Box::new(left) };
        cl.shards[owner].on_shard_msg(ShardMsg::Mqtt(adopt));
        cl.settle();
        let publisher = cl.mqtt(1 - owner);
        cl.send_mqtt(publisher, &mqtt_connect(None, "pub"));
        cl.take_frames(publisher);
        let mut publish = mqtt_str("adopt/t");
        publish.extend_from_slice(&[0, 9]);
        publish.extend_from_slice(b"queued");
        cl.send_mqtt(publisher, &mqtt_packet(0x32, &publish));
        assert_eq!(cl.take_frames(publisher).len(), 1, "PUBACK");
        // The client comes back (to the other worker), not clean.
        let dev = cl.mqtt(1 - owner);
        let mut connect = mqtt_str("MQTT");
        connect.extend_from_slice(&[4, 0, 0, 60]);
        connect.extend(mqtt_str("dev"));
        cl.send_mqtt(dev, &mqtt_packet(0x10, &connect));
        let frames = cl.take_frames(dev);
        assert_eq!(&frames[0][..], &[0x20, 2, 1, 0], "CONNACK, session present");
        assert_eq!(frames.len(), 3, "what the dead node had queued, then what came meanwhile: {frames:?}");
        assert!(frames[1..].iter().all(|f| f[0] & 0xf6 == 0x32), "PUBLISH QoS 1");
        assert!(frames[1].ends_with(b"left") && frames[2].ends_with(b"queued"));
    }

    /// Events an owner routes itself (an accepted `when` write, a `will`
    /// applied when its session ends) go into the topic's history too.
    #[test]
    fn conditional_writes_and_wills_are_kept_in_history() {
        let mut cl = Cluster::from_toml(
            2,
            "[[realm]]\nname = \"realm1\"\n[[realm.history]]\nuri = \"hist.\"\nmatch = \"prefix\"\nlimit = 10\n",
        );
        let (sub, publ) = (cl.wamp(1), cl.wamp(0));
        cl.join(sub, roles());
        cl.join(publ, roles());
        cl.send(sub, json!([32, 1, {}, "hist.k"]));
        let id = cl.one(sub)[2].clone();
        cl.send(publ, json!([16, 2, {"acknowledge": true, "retain": true, "when": null}, "hist.k", ["first"]]));
        assert_eq!(cl.one(publ)[0], 17);
        cl.send(publ, json!([16, 3, {"acknowledge": true, "retain": true, "will": "gone"}, "hist.k", ["second"]]));
        assert_eq!(cl.one(publ)[0], 17);
        assert_eq!(cl.take(sub).len(), 2, "both events delivered");
        cl.send(publ, json!([6, {}, "wamp.close.normal"]));
        assert_eq!(cl.take(sub).len(), 1, "the will");
        cl.send(sub, json!([48, 4, {}, "wamp.subscription.get_events", [id, 10]]));
        let result = cl.one(sub);
        assert_eq!(result[0], 50, "RESULT: {result}");
        let events = result[3][0].as_array().expect("a list of events");
        let args: Vec<&Json> = events.iter().map(|e| &e["args"][0]).collect();
        assert_eq!(args, vec![&json!("first"), &json!("second"), &json!("gone")], "{result}");
    }

    /// `after` replays: a pattern subscription's spans workers, each cut
    /// at the anchor (the worker that has it after it, the others after its
    /// time); and a node that never answers holds a replay only until its
    /// deadline, the live events held meanwhile following it, each once.
    #[test]
    fn after_replays_cut_at_the_anchor_and_wait_for_nodes_only_so_long() {
        let mut cl = Cluster::from_toml(
            2,
            "[[realm]]\nname = \"realm1\"\n[[realm.history]]\nuri = \"hist.\"\nmatch = \"prefix\"\nlimit = 10\n",
        );
        let owned_by = |w: u16| {
            (0..).map(|i| format!("hist.t{i}")).find(|t| crate::router::owner_of("realm1", t, 2) == w).unwrap()
        };
        let (ta, tb) = (owned_by(0), owned_by(1));
        let publ = cl.wamp(0);
        cl.join(publ, roles());
        let mut ids = Vec::new();
        // (Apart by a few ms: history is ordered by wall-clock time.)
        for (i, topic) in [&tb, &ta, &tb, &ta].into_iter().enumerate() {
            std::thread::sleep(Duration::from_millis(3));
            cl.send(publ, json!([16, 10 + i, {"acknowledge": true}, topic, [i.to_string()]]));
            let published = cl.one(publ);
            assert_eq!(published[0], 17, "{published}");
            ids.push(published[2].clone());
        }
        let args = |frames: Vec<Json>| frames.iter().map(|e| e[4][0].clone()).collect::<Vec<_>>();
        // After event 1 (on ta's worker): tb's event 0 is older, even
        // though ta's worker cannot place it.
        let sub = cl.wamp(1);
        cl.join(sub, roles());
        cl.send(sub, json!([32, 1, {"match": "prefix", "after": ids[1]}, "hist."]));
        let mut got = cl.take(sub);
        assert_eq!(got.remove(0)[0], 33, "SUBSCRIBED first");
        assert_eq!(args(got), [json!("2"), json!("3")]);
        // A node (1, with one worker) that never answers: nothing until
        // the deadline; then the replay, then the live event held.
        cl.shards[1].cluster_nodes.push((1, 1));
        cl.send(sub, json!([32, 2, {"after": ids[1]}, ta]));
        assert_eq!(cl.take(sub).len(), 1, "SUBSCRIBED only");
        let asked =
            cl.shards[1].peers.remote.iter().filter(|(n, _, m)| *n == 1 && matches!(m, ShardMsg::HistoryQuery { .. }));
        assert_eq!(asked.count(), 1, "the other node is asked");
        cl.send(publ, json!([16, 20, {}, ta, ["live"]]));
        let events = cl.take(sub);
        assert_eq!(events.len(), 1, "only the prefix subscription's EVENT: {events:?}");
        cl.advance(Duration::from_secs(6));
        assert_eq!(args(cl.take(sub)), [json!("3"), json!("live")], "replayed, then the held live event, once");
    }

    /// A realm with principals for every method and two roles.
    fn auth_cluster() -> (Cluster, ed25519_dalek::SigningKey) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let toml = format!(
            r#"
            [[realm]]
            name = "realm1"
            allow_anonymous = true
            anonymous_role = "reader"
            [[realm.principal]]
            authid = "tk"
            role = "user"
            ticket = "tk-secret"
            [[realm.principal]]
            authid = "cra"
            role = "user"
            cra_secret = "cra-secret"
            [[realm.principal]]
            authid = "salted"
            role = "user"
            cra_secret = "salty"
            cra_salt = "pepper"
            cra_iterations = 100
            cra_keylen = 16
            [[realm.principal]]
            authid = "signer"
            role = "user"
            cryptosign = ["{}"]
            [[realm.role]]
            name = "user"
            [[realm.role.permission]]
            uri = ""
            match = "prefix"
            call = true
            register = true
            publish = true
            subscribe = true
            disclose_publisher = true
            [[realm.role]]
            name = "reader"
            [[realm.role.permission]]
            uri = "public."
            match = "prefix"
            subscribe = true
            "#,
            hex::encode(key.verifying_key().to_bytes())
        );
        (Cluster::from_toml(2, &toml), key)
    }

    fn hello(authmethods: &[&str], authid: &str) -> Json {
        json!([1, "realm1", {"roles": roles(), "authmethods": authmethods, "authid": authid}])
    }

    #[test]
    fn ticket_and_wampcra_plain_and_salted() {
        let (mut cl, _) = auth_cluster();
        let c = cl.wamp(0);
        cl.send(c, hello(&["ticket"], "tk"));
        assert_eq!(cl.one(c), json!([4, "ticket", {}]));
        cl.send(c, json!([5, "tk-secret", {}]));
        let welcome = cl.one(c);
        assert_eq!(welcome[0], 2, "{welcome}");
        assert_eq!(welcome[2]["authid"], "tk");
        assert_eq!(welcome[2]["authrole"], "user");
        assert_eq!(welcome[2]["authmethod"], "ticket");
        assert_eq!(welcome[2]["authprovider"], "static");

        for (authid, secret) in [("cra", "cra-secret"), ("salted", "salty")] {
            let c = cl.wamp(1);
            cl.send(c, hello(&["wampcra", "ticket"], authid));
            let ch = cl.one(c);
            assert_eq!(ch[1], "wampcra", "the client's first choice: {ch}");
            let challenge = ch[2]["challenge"].as_str().unwrap().to_owned();
            let key = match ch[2]["salt"].as_str() {
                Some(salt) => {
                    assert_eq!((ch[2]["iterations"].as_u64(), ch[2]["keylen"].as_u64()), (Some(100), Some(16)));
                    crate::auth::crypto::derive_cra_key(secret, salt, 100, 16)
                }
                None => secret.to_owned(),
            };
            let signature = crate::auth::crypto::cra_signature(key.as_bytes(), &challenge);
            cl.send(c, json!([5, signature, {}]));
            let welcome = cl.one(c);
            assert_eq!(welcome[2]["authid"], authid, "{welcome}");
            assert_eq!(welcome[2]["authmethod"], "wampcra");
        }
    }

    #[test]
    fn cryptosign() {
        use ed25519_dalek::Signer;
        let (mut cl, key) = auth_cluster();
        let c = cl.wamp(0);
        let pubkey = hex::encode(key.verifying_key().to_bytes());
        cl.send(
            c,
            json!([1, "realm1", {"roles": roles(), "authmethods": ["cryptosign"], "authextra": {"pubkey": pubkey}}]),
        );
        let ch = cl.one(c);
        assert_eq!(ch[1], "cryptosign");
        let challenge = hex::decode(ch[2]["challenge"].as_str().unwrap()).unwrap();
        let mut signed = key.sign(&challenge).to_bytes().to_vec();
        signed.extend_from_slice(&challenge);
        cl.send(c, json!([5, hex::encode(signed), {}]));
        let welcome = cl.one(c);
        assert_eq!(welcome[2]["authid"], "signer", "{welcome}");
        // A signature of another challenge fails.
        let c = cl.wamp(1);
        cl.send(
            c,
            json!([1, "realm1", {"roles": roles(), "authmethods": ["cryptosign"], "authextra": {"pubkey": pubkey}}]),
        );
        cl.one(c);
        cl.send(c, json!([5, hex::encode(key.sign(&[0u8; 32]).to_bytes()), {}]));
        let abort = cl.one(c);
        assert_eq!(abort[0], 3);
        assert_eq!(abort[2], "wamp.error.authentication_failed");
    }

    #[test]
    fn failed_and_out_of_order_authentication() {
        let (mut cl, _) = auth_cluster();
        // A wrong ticket, and an unknown authid: the same answer.
        for authid in ["tk", "nobody"] {
            let c = cl.wamp(0);
            cl.send(c, hello(&["ticket"], authid));
            assert_eq!(cl.one(c)[0], 4, "a challenge either way");
            cl.send(c, json!([5, "wrong", {}]));
            let abort = cl.one(c);
            assert_eq!((abort[0].clone(), abort[2].clone()), (json!(3), json!("wamp.error.authentication_failed")));
            assert!(cl.is_closed(c));
        }
        // AUTHENTICATE without a CHALLENGE.
        let c = cl.wamp(0);
        cl.send(c, json!([5, "x", {}]));
        assert_eq!(cl.one(c)[2], "wamp.error.protocol_violation");
        // A second HELLO while challenged.
        let c = cl.wamp(0);
        cl.send(c, hello(&["ticket"], "tk"));
        cl.one(c);
        cl.send(c, hello(&["ticket"], "tk"));
        assert_eq!(cl.one(c)[2], "wamp.error.protocol_violation");
        // No method the realm offers (cryptosign without a key).
        let c = cl.wamp(0);
        cl.send(c, json!([1, "realm1", {"roles": roles(), "authmethods": ["cryptosign", "scram"]}]));
        assert_eq!(cl.one(c)[2], "wamp.error.no_auth_method");
    }

    #[test]
    fn roles_authorize_each_action() {
        let (mut cl, _) = auth_cluster();
        // Anonymous is the `reader` role: it may subscribe under public. only.
        let reader = cl.wamp(0);
        let welcome = {
            cl.send(reader, json!([1, "realm1", {"roles": roles()}]));
            cl.one(reader)
        };
        assert_eq!(welcome[2]["authrole"], "reader");
        cl.send(reader, json!([32, 1, {}, "public.news"]));
        assert_eq!(cl.one(reader)[0], 33);
        for (msg, ty) in [
            (json!([32, 2, {}, "private.x"]), 32),
            (json!([16, 3, {"acknowledge": true}, "public.news", []]), 16),
            (json!([48, 4, {}, "com.add", []]), 48),
            (json!([64, 5, {}, "com.add"]), 64),
            (json!([48, 6, {}, "wamp.session.count", []]), 48),
        ] {
            cl.send(reader, msg);
            let err = cl.one(reader);
            assert_eq!(
                (err[0].clone(), err[1].clone(), err[4].clone()),
                (json!(8), json!(ty), json!("wamp.error.not_authorized"))
            );
        }
        // Without acknowledge, a refused PUBLISH is dropped silently; the session goes on.
        cl.send(reader, json!([16, 7, {}, "public.news", []]));
        assert!(cl.take(reader).is_empty());
        // A `user` may publish, and its role discloses it to subscribers.
        let user = cl.wamp(1);
        cl.send(user, hello(&["ticket"], "tk"));
        cl.one(user);
        cl.send(user, json!([5, "tk-secret", {}]));
        cl.one(user);
        cl.send(user, json!([16, 8, {}, "public.news", ["hi"]]));
        let event = cl.one(reader);
        assert_eq!(event[0], 36);
        assert_eq!(event[3]["publisher_authid"], "tk", "{event}");
        assert_eq!(event[3]["publisher_authrole"], "user");
    }

    #[test]
    fn the_failure_budget_refuses_an_address_for_a_while() {
        use crate::wamp::session::Throttle;
        let mut t = Throttle::default();
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let other: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..crate::wamp::session::FAIL_BUDGET {
            assert!(t.allowed(ip, now));
            t.failed(ip, now);
        }
        assert!(!t.allowed(ip, now), "budget spent");
        assert!(t.allowed(other, now), "per address");
        assert!(t.allowed(ip, now + crate::wamp::session::FAIL_WINDOW), "the window passed");
    }

    fn mqtt_subscribe(filter: &str) -> Vec<u8> {
        let mut b = vec![0, 1];
        b.extend(mqtt_str(filter));
        b.push(1);
        mqtt_packet(0x82, &b)
    }

    /// MQTT joins the same principals and roles: a user name and password
    /// (the principal's ticket), or anonymous with the anonymous role.
    #[test]
    fn mqtt_users_and_roles() {
        let (mut cl, _) = auth_cluster();
        let bad = cl.mqtt(0);
        cl.send_mqtt(bad, &mqtt_connect(Some(("tk", "wrong")), "m-bad"));
        assert_eq!(cl.take_frames(bad), vec![bytes::Bytes::from_static(&[0x20, 2, 0, 4])], "bad user name or password");
        assert!(cl.is_closed(bad));
        let unknown = cl.mqtt(0);
        cl.send_mqtt(unknown, &mqtt_connect(Some(("nobody", "x")), "m-unknown"));
        assert_eq!(cl.take_frames(unknown), vec![bytes::Bytes::from_static(&[0x20, 2, 0, 4])]);

        let anon = cl.mqtt(1);
        cl.send_mqtt(anon, &mqtt_connect(None, "m-anon"));
        assert_eq!(cl.take_frames(anon)[0][..], [0x20, 2, 0, 0]);
        cl.send_mqtt(anon, &mqtt_subscribe("public/x"));
        assert_eq!(cl.take_frames(anon)[0][..], [0x90, 3, 0, 1, 1], "granted");
        cl.send_mqtt(anon, &mqtt_subscribe("private/x"));
        assert_eq!(cl.take_frames(anon)[0][..], [0x90, 3, 0, 1, 0x80], "refused");
        // Its own publication is acknowledged (3.1.1 cannot say no) and dropped.
        let mut publish = mqtt_str("public/x");
        publish.extend_from_slice(&[0, 9]);
        publish.extend_from_slice(b"anon");
        cl.send_mqtt(anon, &mqtt_packet(0x32, &publish));
        assert_eq!(cl.take_frames(anon), vec![bytes::Bytes::from_static(&[0x40, 2, 0, 9])], "PUBACK only");

        let user = cl.mqtt(0);
        cl.send_mqtt(user, &mqtt_connect(Some(("tk", "tk-secret")), "m-user"));
        assert_eq!(cl.take_frames(user)[0][..], [0x20, 2, 0, 0]);
        let mut publish = mqtt_str("public/x");
        publish.extend_from_slice(b"hello");
        cl.send_mqtt(user, &mqtt_packet(0x30, &publish));
        let got = cl.take_frames(anon);
        assert_eq!(got.len(), 1, "the user's publication reaches the anonymous subscriber");
        assert!(got[0].ends_with(b"hello"));
    }

    /// examples/auth.toml works as it is: its users join, its roles hold.
    #[test]
    fn the_auth_example_works_as_written() {
        let mut cl = Cluster::from_toml(1, include_str!("../../examples/auth.toml"));
        let anon = cl.wamp(0);
        assert!(cl.join(anon, roles()) > 0);
        let c = cl.wamp(0);
        cl.send(c, hello(&["ticket"], "ticketuser"));
        cl.one(c);
        cl.send(c, json!([5, "ticket-secret", {}]));
        assert_eq!(cl.one(c)[2]["authrole"], "user");
        let dev = cl.mqtt(0);
        cl.send_mqtt(dev, &mqtt_connect(Some(("device1", "device-secret")), "dev1"));
        assert_eq!(cl.take_frames(dev)[0][..], [0x20, 2, 0, 0]);
        cl.send_mqtt(dev, &mqtt_subscribe("private/x"));
        assert_eq!(cl.take_frames(dev)[0][..], [0x90, 3, 0, 1, 0x80], "the reader role");
    }

    /// A realm whose anonymous role is decided by a dynamic authorizer
    /// that a backend (a static role) registers.
    fn authorizer_cluster() -> Cluster {
        Cluster::from_toml(
            2,
            r#"
            [[realm]]
            name = "realm1"
            allow_anonymous = true
            anonymous_role = "dyn"
            [[realm.principal]]
            authid = "backend"
            role = "backend"
            ticket = "b"
            [[realm.role]]
            name = "backend"
            [[realm.role.permission]]
            uri = ""
            match = "prefix"
            call = true
            register = true
            publish = true
            subscribe = true
            [[realm.role]]
            name = "dyn"
            authorizer = "com.authz"
            "#,
        )
    }

    fn backend(cl: &mut Cluster, shard: usize) -> Client {
        let b = cl.wamp(shard);
        cl.send(b, hello(&["ticket"], "backend"));
        cl.one(b);
        cl.send(b, json!([5, "b", {}]));
        assert_eq!(cl.one(b)[2]["authrole"], "backend");
        cl.send(b, json!([64, 1, {}, "com.authz"]));
        assert_eq!(cl.one(b)[0], 65);
        b
    }

    #[test]
    fn a_dynamic_authorizer_decides_and_its_decisions_are_cached() {
        let mut cl = authorizer_cluster();
        let b = backend(&mut cl, 0);
        let sub = cl.wamp(1);
        cl.join(sub, roles());
        // The subscriber's SUBSCRIBE asks the authorizer: allowed, kept 60 s.
        cl.send(sub, json!([32, 1, {}, "dyn.topic"]));
        assert!(cl.take(sub).is_empty(), "waiting for the decision");
        let inv = cl.one(b);
        assert_eq!(inv[0], 68);
        assert_eq!(inv[4][1], "dyn.topic");
        assert_eq!(inv[4][2], "subscribe");
        assert_eq!(inv[4][0]["authrole"], "dyn", "the session's details: {inv}");
        cl.send(b, json!([70, inv[1], {}, [{"allow": true, "cache": 60}]]));
        assert_eq!(cl.one(sub)[0], 33, "SUBSCRIBED once allowed");
        // PUBLISH: allowed with disclosure, cached.
        let publ = cl.wamp(0);
        cl.join(publ, roles());
        cl.send(publ, json!([16, 2, {"acknowledge": true}, "dyn.topic", [1]]));
        let inv = cl.one(b);
        assert_eq!(inv[4][2], "publish");
        cl.send(b, json!([70, inv[1], {}, [{"allow": true, "disclose": true, "cache": 60}]]));
        assert_eq!(cl.one(publ)[0], 17);
        let event = cl.one(sub);
        assert!(event[3]["publisher"].is_u64(), "disclosed by the decision: {event}");
        // The same role, action and URI again: from the cache, no call.
        cl.send(publ, json!([16, 3, {"acknowledge": true}, "dyn.topic", [2]]));
        assert_eq!(cl.one(publ)[0], 17);
        assert!(cl.take(b).is_empty(), "the cache answered");
        assert_eq!(cl.one(sub)[4], json!([2]));
        // A refusal (not cached): ERROR, and the session goes on.
        cl.send(publ, json!([48, 4, {}, "com.secret", []]));
        let inv = cl.one(b);
        cl.send(b, json!([70, inv[1], {}, [false]]));
        let err = cl.one(publ);
        assert_eq!(
            (err[0].clone(), err[1].clone(), err[4].clone()),
            (json!(8), json!(48), json!("wamp.error.not_authorized"))
        );
        // An authorizer error is a refusal that says so.
        cl.send(publ, json!([48, 5, {}, "com.other", []]));
        let inv = cl.one(b);
        cl.send(b, json!([8, 68, inv[1], {}, "com.authz.broken"]));
        let err = cl.one(publ);
        assert_eq!(err[4], "wamp.error.not_authorized");
        assert!(err[5][0].as_str().unwrap().contains("com.authz.broken"), "{err}");
    }

    #[test]
    fn an_authorizer_that_does_not_answer_or_is_gone_denies() {
        let mut cl = authorizer_cluster();
        let b = backend(&mut cl, 0);
        let c = cl.wamp(1);
        cl.join(c, roles());
        cl.send(c, json!([64, 1, {}, "com.mine"]));
        assert_eq!(cl.one(b)[0], 68, "asked");
        cl.advance(Duration::from_secs(6));
        let err = cl.one(c);
        assert_eq!(err[4], "wamp.error.not_authorized");
        assert!(err[5][0].as_str().unwrap().contains("did not answer"), "{err}");
        assert_eq!(cl.take(b).iter().filter(|m| m[0] == 69).count(), 1, "the invocation is interrupted");
        // The backend goes: its authorizer with it; refused at once.
        cl.drop_client(b);
        cl.send(c, json!([64, 2, {}, "com.mine"]));
        let err = cl.one(c);
        assert!(err[5][0].as_str().unwrap().contains("not registered"), "{err}");
    }

    /// A realm with a dynamic authenticator, and its backend (a static
    /// principal) registered as it.
    fn authn_cluster() -> (Cluster, Client) {
        let mut cl = Cluster::from_toml(
            2,
            r#"
            [[realm]]
            name = "realm1"
            authenticator = "com.authn"
            [[realm.principal]]
            authid = "backend"
            role = "backend"
            ticket = "b"
            "#,
        );
        let b = cl.wamp(0);
        cl.send(b, hello(&["ticket"], "backend"));
        cl.one(b);
        cl.send(b, json!([5, "b", {}]));
        assert_eq!(cl.one(b)[2]["authprovider"], "static");
        cl.send(b, json!([64, 1, {}, "com.authn"]));
        assert_eq!(cl.one(b)[0], 65);
        (cl, b)
    }

    /// A realm's dynamic authenticator vouches for ticket and cryptosign
    /// principals the configuration does not list.
    #[test]
    fn a_dynamic_authenticator_for_ticket_and_cryptosign() {
        use ed25519_dalek::Signer;
        let (mut cl, b) = authn_cluster();

        let c = cl.wamp(1);
        cl.send(c, hello(&["ticket"], "dev7"));
        assert_eq!(cl.one(c)[1], "ticket");
        cl.send(c, json!([5, "pw7", {}]));
        let inv = cl.one(b);
        assert_eq!(inv[4], json!(["realm1", "dev7", {"ticket": "pw7", "authmethod": "ticket"}]), "{inv}");
        cl.send(b, json!([70, inv[1], {}, [{"role": "device", "authid": "device-7"}]]));
        let welcome = cl.one(c);
        assert_eq!(welcome[0], 2, "{welcome}");
        assert_eq!(
            (welcome[2]["authid"].clone(), welcome[2]["authrole"].clone()),
            (json!("device-7"), json!("device"))
        );
        assert_eq!(welcome[2]["authprovider"], "dynamic");

        // Refused: ABORT, and the reason.
        let c = cl.wamp(1);
        cl.send(c, hello(&["ticket"], "dev8"));
        cl.one(c);
        cl.send(c, json!([5, "bad", {}]));
        let inv = cl.one(b);
        cl.send(b, json!([8, 68, inv[1], {}, "com.example.no"]));
        let abort = cl.one(c);
        assert_eq!(abort[2], "wamp.error.authentication_failed");
        assert!(abort[1]["message"].as_str().unwrap().contains("com.example.no"), "{abort}");

        // Cryptosign: the authenticator says whose the key is, then the
        // challenge proves the client has it.
        let key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
        let pubkey = hex::encode(key.verifying_key().to_bytes());
        let c = cl.wamp(0);
        cl.send(
            c,
            json!([1, "realm1", {"roles": roles(), "authmethods": ["cryptosign"], "authextra": {"pubkey": pubkey}}]),
        );
        let inv = cl.one(b);
        assert_eq!(inv[4][2]["pubkey"], pubkey);
        cl.send(b, json!([70, inv[1], {}, [{"role": "signer", "authid": "key-5"}]]));
        let ch = cl.one(c);
        assert_eq!(ch[1], "cryptosign");
        let challenge = hex::decode(ch[2]["challenge"].as_str().unwrap()).unwrap();
        cl.send(c, json!([5, hex::encode(key.sign(&challenge).to_bytes()), {}]));
        let welcome = cl.one(c);
        assert_eq!(welcome[2]["authid"], "key-5", "{welcome}");
        assert_eq!(welcome[2]["authmethod"], "cryptosign");
        // No answer in time: refused, and the authenticator interrupted.
        let c = cl.wamp(1);
        cl.send(c, hello(&["ticket"], "dev9"));
        cl.one(c);
        cl.send(c, json!([5, "slow", {}]));
        assert_eq!(cl.one(b)[0], 68);
        cl.advance(Duration::from_secs(6));
        let abort = cl.one(c);
        assert!(abort[1]["message"].as_str().unwrap().contains("did not answer"), "{abort}");
        assert_eq!(cl.take(b).iter().filter(|m| m[0] == 69).count(), 1, "INTERRUPT");
        // The authenticator gone: refused at once.
        cl.drop_client(b);
        let c = cl.wamp(1);
        cl.send(c, hello(&["ticket"], "dev10"));
        cl.one(c);
        cl.send(c, json!([5, "x", {}]));
        let abort = cl.one(c);
        assert!(abort[1]["message"].as_str().unwrap().contains("not registered"), "{abort}");
    }

    /// MQTT user names the realm does not list go to its authenticator:
    /// the CONNECT waits; a role lets it in, an error is CONNACK 4 (3.1.1),
    /// no answer in time (the callee interrupted) or no authenticator 3.
    #[test]
    fn a_dynamic_authenticator_for_mqtt_passwords() {
        let (mut cl, b) = authn_cluster();
        let connack = |cl: &mut Cluster, m: Client| cl.take_frames(m).first().map(|f| f.to_vec());
        let dev = cl.mqtt(1);
        cl.send_mqtt(dev, &mqtt_connect(Some(("dev1", "pw1")), "c1"));
        assert_eq!(connack(&mut cl, dev), None, "waiting for the authenticator");
        let inv = cl.one(b);
        assert_eq!(
            inv[4],
            json!(["realm1", "dev1", {"authmethod": "ticket", "ticket": "pw1",
                   "transport": {"type": "mqtt"}, "client_id": "c1"}]),
            "{inv}"
        );
        cl.send(b, json!([70, inv[1], {}, [{"role": "device", "authid": "device-1"}]]));
        assert_eq!(connack(&mut cl, dev), Some(vec![0x20, 2, 0, 0]), "accepted");
        let (_, s) = cl.shards[1].mqtt.sessions.iter().find(|(_, s)| &*s.key == "realm1\0c1").expect("a session");
        assert_eq!((s.who.authid.as_str(), &*s.who.authrole), ("device-1", "device"));
        // Refused: 4 (bad user name or password).
        let dev = cl.mqtt(1);
        cl.send_mqtt(dev, &mqtt_connect(Some(("dev2", "bad")), "c2"));
        let inv = cl.one(b);
        cl.send(b, json!([8, 68, inv[1], {}, "com.example.no"]));
        assert_eq!(connack(&mut cl, dev), Some(vec![0x20, 2, 0, 4]));
        // No answer in time: 3 (server unavailable), the callee interrupted.
        let dev = cl.mqtt(0);
        cl.send_mqtt(dev, &mqtt_connect(Some(("dev3", "slow")), "c3"));
        assert_eq!(cl.one(b)[0], 68);
        cl.advance(Duration::from_secs(6));
        assert_eq!(connack(&mut cl, dev), Some(vec![0x20, 2, 0, 3]));
        assert_eq!(cl.take(b).iter().filter(|m| m[0] == 69).count(), 1, "INTERRUPT");
        // The authenticator gone: 3 at once.
        cl.drop_client(b);
        let dev = cl.mqtt(1);
        cl.send_mqtt(dev, &mqtt_connect(Some(("dev4", "x")), "c4"));
        assert_eq!(connack(&mut cl, dev), Some(vec![0x20, 2, 0, 3]));
    }

    /// MQTT sessions of a dynamic role ask the same authorizer, through
    /// the same cache; a SUBSCRIBE with several filters asks about each
    /// before any takes effect.
    #[test]
    fn mqtt_sessions_ask_the_dynamic_authorizer() {
        let mut cl = authorizer_cluster();
        let b = backend(&mut cl, 0);
        let dev = cl.mqtt(1);
        cl.send_mqtt(dev, &mqtt_connect(None, "m-dyn"));
        assert_eq!(cl.take_frames(dev)[0][..], [0x20, 2, 0, 0]);
        // Two filters: asked one after the other, then one SUBACK.
        let mut sub = vec![0, 1];
        for f in ["x/1", "x/2"] {
            sub.extend(mqtt_str(f));
            sub.push(1);
        }
        cl.send_mqtt(dev, &mqtt_packet(0x82, &sub));
        let inv = cl.one(b);
        assert_eq!((inv[4][1].clone(), inv[4][2].clone()), (json!("x.1"), json!("subscribe")), "{inv}");
        assert_eq!(inv[4][0]["transport"]["type"], "mqtt");
        assert!(cl.take_frames(dev).is_empty(), "nothing before every filter is decided");
        cl.send(b, json!([70, inv[1], {}, [true]]));
        let inv = cl.one(b);
        assert_eq!(inv[4][1], "x.2");
        cl.send(b, json!([70, inv[1], {}, [{"allow": false}]]));
        assert_eq!(cl.take_frames(dev)[0][..], [0x90, 4, 0, 1, 1, 0x80], "SUBACK: granted, refused");
        // A PUBLISH: allowed and cached; the second asks nobody.
        let mut publish = mqtt_str("x/1");
        publish.extend_from_slice(&[0, 7]);
        publish.extend_from_slice(b"one");
        cl.send_mqtt(dev, &mqtt_packet(0x32, &publish));
        let inv = cl.one(b);
        assert_eq!(inv[4][2], "publish");
        cl.send(b, json!([70, inv[1], {}, [{"allow": true, "cache": 60}]]));
        let got = cl.take_frames(dev);
        assert!(got.iter().any(|f| f[..] == [0x40, 2, 0, 7]), "PUBACK: {got:?}");
        assert!(got.iter().any(|f| f[0] >> 4 == 3 && f.ends_with(b"one")), "delivered to its own subscription");
        let mut publish = mqtt_str("x/1");
        publish.extend_from_slice(&[0, 8]);
        publish.extend_from_slice(b"two");
        cl.send_mqtt(dev, &mqtt_packet(0x32, &publish));
        assert!(cl.take(b).is_empty(), "from the cache");
        assert!(cl.take_frames(dev).iter().any(|f| f[..] == [0x40, 2, 0, 8]));
    }
}
