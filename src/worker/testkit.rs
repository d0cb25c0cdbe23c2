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
                    retained: Vec::new(),
                    history: Vec::new(),
                    ready: None,
                    now,
                })
            })
            .collect();
        Cluster { shards, inboxes, _polls: polls, serial: 0 }
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
        let framing = Framing::RawSocket { max_out: 1 << 24 };
        self.attach(shard, Proto::Wamp(Box::new(WampConn::new(Serializer::Json, framing))))
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
        let conn = &mut self.shards[c.shard].conns[c.handle];
        std::iter::from_fn(|| conn.out.pop()).collect()
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

    /// Events an owner routes itself (an accepted `when` write, a `will`
    /// applied when its session ends) go into the topic's history too.
    #[test]
    fn conditional_writes_and_wills_are_kept_in_history() {
        let file: crate::config::File = toml::from_str(
            "[[realm]]\nname = \"realm1\"\n[[realm.history]]\nuri = \"hist.\"\nmatch = \"prefix\"\nlimit = 10\n",
        )
        .unwrap();
        let cfg = Config::resolve(<crate::config::Cli as clap::Parser>::parse_from(["fennec"]), file).unwrap();
        let mut cl = Cluster::with_config(2, cfg);
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
}
