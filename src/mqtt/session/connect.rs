//! CONNECT and everything a client ID's session goes through to start: the
//! claim at the registry, a take-over of the session from another
//! connection (on this worker or another), the hand-over of a persistent
//! session between workers (`pack` there, `restore` here, forwarding until
//! `HandoffDone`), and the CONNACK.

use super::authn::Authn;
use super::*;

pub(super) fn connect(w: &mut Shard, handle: usize, c: Box<Connect>) {
    let started = Instant::now();
    w.metrics.counters.mqtt_connects += 1;
    let m = mqtt(w, handle).expect("mqtt");
    m.version = Some(c.version);
    if c.auth_method.is_some() {
        return fail(w, handle, reason::BAD_AUTH_METHOD, "extended authentication is not supported");
    }
    if w.cut_off() {
        // Cut off from the cluster: the client ID may be another node's,
        // and this node could not know (3.1.1: 3, "server unavailable").
        return fail_connack(w, handle, reason::SERVER_UNAVAILABLE);
    }
    if let Some(will) = &c.will {
        if levels_by(&will.topic, b'/') > w.cfg.mqtt.max_topic_levels {
            return fail(w, handle, reason::TOPIC_NAME_INVALID, "will topic has too many levels");
        }
        if crate::router::is_reserved(&swap(&will.topic)) {
            return fail_connack(w, handle, reason::NOT_AUTHORIZED);
        }
        if will.props.payload_format == Some(1) && std::str::from_utf8(&will.payload).is_err() {
            return fail(w, handle, reason::PAYLOAD_FORMAT_INVALID, "will payload is not UTF-8 as its format says");
        }
    }
    let mut client = c.client_id.clone();
    let mut assigned_id = false;
    // MQTT 3.1 (3.1): a client identifier of 1 to 23 characters, no assigned IDs.
    if c.version == Version::V3 && !(1..=23).contains(&client.chars().count()) {
        return fail_connack(w, handle, reason::BAD_CLIENT_ID);
    }
    if client.is_empty() {
        if c.version != Version::V5 && !c.clean_start {
            return fail_connack(w, handle, reason::BAD_CLIENT_ID);
        }
        client = format!("fennec-{:016x}", rand::thread_rng().gen::<u64>());
        assigned_id = true;
    }
    // The realm: `user@realm` (fox-wamp's convention) or the configured one.
    let realm_name = match c.username.as_deref().and_then(|u| u.rsplit_once('@')) {
        Some((_, r)) if !r.is_empty() => r.to_owned(),
        _ => w.cfg.mqtt.realm.clone(),
    };
    let Some(realm_cfg) = w.cfg.realm(&realm_name) else {
        return fail_connack(w, handle, reason::NOT_AUTHORIZED);
    };
    let go = Go { c, client, assigned_id, realm_name, started };
    match super::authn::authenticate(w, handle, &realm_cfg, &go.c, &go.client) {
        Authn::Known(who) => go_on(w, handle, go, who),
        Authn::Refused => {}
        Authn::Dynamic(user) => super::authn::ask(w, handle, &realm_cfg, user, go),
    }
}

/// A CONNECT whose client is authenticated, on its way to its session.
pub(super) struct Go {
    pub c: Box<Connect>,
    pub client: String,
    pub assigned_id: bool,
    pub realm_name: String,
    pub started: Instant,
}

/// The client is `who`: its will's topic is checked, then its client ID
/// claimed.
pub(super) fn go_on(w: &mut Shard, handle: usize, go: Go, who: MqttIdentity) {
    let Go { c, client, assigned_id, realm_name, started } = go;
    if let Some(will) = &c.will {
        let allowed = who.rules.as_ref().is_none_or(|r| r.lookup(&swap(&will.topic)).publish);
        if !allowed {
            return fail_connack(w, handle, reason::NOT_AUTHORIZED);
        }
    }
    let max_ka = w.cfg.mqtt.max_keepalive;
    let keep_alive = if max_ka > 0 && c.keep_alive > max_ka { max_ka } else { c.keep_alive };
    let realm = w.shared_name(&realm_name);
    let key: Arc<str> = format!("{realm}\0{client}").into();
    let mut session = rand::thread_rng().gen_range(1..=crate::wamp::message::MAX_ID);
    while w.mqtt.by_id.contains_key(&session) {
        session = rand::thread_rng().gen_range(1..=crate::wamp::message::MAX_ID);
    }
    let owner = owner_of(&realm, &client, w.workers);
    let m = mqtt(w, handle).expect("mqtt");
    m.keep_alive = Duration::from_millis(u64::from(keep_alive) * 1500);
    m.max_out = c.max_packet_size.map_or(usize::MAX, |n| n as usize);
    let clean_start = c.clean_start;
    let pending = Pending {
        superseded: None,
        via: None,
        connect: c,
        session,
        key: key.clone(),
        client,
        realm,
        assigned_id,
        keep_alive,
        started,
        who,
    };
    m.state = ConnState::Claiming(Box::new(pending));
    w.conns[handle].paused = true;
    let serial = w.conns[handle].serial;
    let claim = Claim { key, session, worker: w.id, handle, serial, clean_start };
    w.peers.send(owner, ShardMsg::Mqtt(Msg::Claim(claim)));
}

pub(super) fn fail_connack(w: &mut Shard, handle: usize, code: u8) {
    let ver = version(w, handle);
    send(w, handle, codec::connack(ver, false, code, &Props::default()));
    close(w, handle, CloseReason::ProtocolViolation);
}

/// Registry messages arriving at this worker.
pub fn on_registry(w: &mut Shard, msg: Msg) {
    match msg {
        Msg::Claim(claim) => claim_here(w, claim, false),
        Msg::RemoteClaim(claim) => claim_here(w, claim, true),
        Msg::Owned { claim, prev, resume } => owned(w, claim, prev, resume),
        Msg::Adopt { key, left } => persist::adopt(w, key, *left),
        Msg::Restored { key, kept, will_kept } => persist::restored(w, &key, kept, will_kept),
        Msg::ClaimVia { session, node } => {
            if let Some(p) = claiming(w, session) {
                p.via = Some(node);
            }
        }
        Msg::Release { key, session } => w.mqtt.registry.release(key, session),
        Msg::Takeover { old, claim } => takeover(w, old, claim),
        Msg::Claimed { claim, state } => claimed(w, claim, state),
        Msg::Forward { session, out } => {
            let Some(&slot) = w.mqtt.by_id.get(&session) else {
                w.metrics.counters.mqtt_dropped += 1;
                return;
            };
            if first_sight(w, slot, out.msg.id) {
                offer_recorded(w, slot, *out, &mut Converted::default());
            }
        }
        Msg::HandoffDone { old, new: (to, new) } => {
            if let Some(&slot) = w.mqtt.by_id.get(&old) {
                if w.mqtt.sessions[slot].moving.is_some() {
                    end_session(w, slot, false);
                }
            }
            // Always answered, so the new copy stops deduplicating (and
            // frees its set) even if the old copy was already gone.
            w.peers.send(to, ShardMsg::Mqtt(Msg::ForwardEnd { session: new }));
        }
        Msg::ForwardEnd { session } => {
            if let Some(&slot) = w.mqtt.by_id.get(&session) {
                w.mqtt.sessions[slot].restoring = None;
            }
        }
    }
}

/// A claim at the client ID's owner (`remote`: from another node of the
/// cluster, which now holds the client ID). In a cluster, a claim for a
/// client ID that no session of this node holds is decided by the cluster
/// first (`ClusterReq::MqttClaim`, answered with `Owned`), as another node
/// may hold it; the claims that come meanwhile wait for that answer.
fn claim_here(w: &mut Shard, claim: Claim, remote: bool) {
    if let Some(waiting) = w.mqtt.registry.deciding.get_mut(&claim.key) {
        waiting.push((remote, claim));
        return;
    }
    if remote {
        return w.mqtt.registry.remote_claim(claim, &mut w.peers);
    }
    if w.cluster.is_none() || w.mqtt.registry.holds(&claim.key) {
        return w.mqtt.registry.claim(claim, &mut w.peers);
    }
    w.mqtt.registry.deciding.insert(claim.key.clone(), Vec::new());
    if let Some(link) = &mut w.cluster {
        link.send(crate::cluster::ClusterReq::MqttClaim { claim });
    }
}

/// The cluster made the claim this node's: its session holds the client
/// ID, taken over from the node that held it (if it is alive), else
/// resumed from the record the dead holder left in the cluster (`resume`),
/// else new.
fn owned(w: &mut Shard, claim: Claim, prev: Option<u16>, resume: Option<Box<crate::mqtt::registry::Left>>) {
    let waiting = w.mqtt.registry.deciding.remove(&claim.key).unwrap_or_default();
    if prev.is_none() && resume.is_none() && w.mqtt.registry.held_by_other(&claim.key, claim.session) {
        // This node took in a dead node's session of the client ID while
        // the claim was being decided (`Msg::Adopt`): the claim takes it
        // over, as any claim of a session held here.
        w.mqtt.registry.claim(claim, &mut w.peers);
        for (remote, c) in waiting {
            claim_here(w, c, remote);
        }
        return;
    }
    w.mqtt.registry.owned(&claim);
    let there = prev.and_then(|n| w.cluster_nodes.iter().find(|(id, _)| *id == n).copied());
    match there {
        Some((node, workers)) => {
            let (realm, client) = claim.key.split_once('\0').unwrap_or(("", &claim.key));
            let owner = owner_of(realm, client, usize::from(workers));
            let (to, session) = (claim.worker, claim.session);
            w.peers.send(crate::cluster::at_node(node, owner), ShardMsg::Mqtt(Msg::RemoteClaim(claim)));
            w.peers.send(to, ShardMsg::Mqtt(Msg::ClaimVia { session, node }));
        }
        None => {
            let state = resume.and_then(|r| persist::state_from_record(w, &claim.key, &r)).map(Box::new);
            let to = claim.worker;
            w.peers.send(to, ShardMsg::Mqtt(Msg::Claimed { claim, state }));
        }
    }
    for (remote, c) in waiting {
        claim_here(w, c, remote);
    }
}

/// The connection of this worker still claiming session `session`.
fn claiming(w: &mut Shard, session: u64) -> Option<&mut Pending> {
    w.conns.iter_mut().find_map(|(_, c)| match &mut c.proto {
        Proto::Mqtt(m) => match &mut m.state {
            ConnState::Claiming(p) if p.session == session => Some(&mut **p),
            _ => None,
        },
        _ => None,
    })
}

/// Node `node` of the cluster is lost: the connections whose claims wait
/// for its answer go ahead without it: resumed from the record it left of
/// the session (`ClusterReq::MqttResume`), else a new session (a clean
/// start: and the will of the session it ends goes out).
pub fn on_node_lost(w: &mut Shard, node: u16) {
    let me = w.id;
    let waiting: Vec<Claim> = w
        .conns
        .iter_mut()
        .filter_map(|(handle, c)| {
            let serial = c.serial;
            match &mut c.proto {
                Proto::Mqtt(m) => match &mut m.state {
                    ConnState::Claiming(p) if p.via == Some(node) => {
                        p.via = None;
                        let clean_start = p.connect.clean_start;
                        Some(Claim { key: p.key.clone(), session: p.session, worker: me, handle, serial, clean_start })
                    }
                    _ => None,
                },
                _ => None,
            }
        })
        .collect();
    // A clean start goes the same way: it resumes nothing, but ends the
    // session the dead node left, whose will then goes out at once.
    for claim in waiting {
        match &mut w.cluster {
            Some(link) => link.send(crate::cluster::ClusterReq::MqttResume { claim, node }),
            None => claimed(w, claim, None),
        }
    }
}

/// While a moved session receives both directly and forwarded: whether this
/// publication is new to it.
pub(super) fn first_sight(w: &mut Shard, slot: usize, publication: u64) -> bool {
    match &mut w.mqtt.sessions[slot].restoring {
        Some(r) => r.seen.insert(publication),
        None => true,
    }
}

/// Before a takeover of session `old` is handled: the connection whose
/// input the worker must read first. What the old connection sent before
/// the new one connected comes first: a DISCONNECT (maybe setting the
/// session expiry to 0) or an EOF still unread in its socket decides what
/// is left to take over.
pub fn read_first(w: &Shard, msg: &ShardMsg) -> Option<usize> {
    let ShardMsg::Mqtt(Msg::Takeover { old, .. }) = msg else { return None };
    w.mqtt.by_id.get(old).and_then(|&slot| w.mqtt.sessions[slot].conn)
}

/// The session `old` is claimed by a new connection.
pub(super) fn takeover(w: &mut Shard, old: u64, claim: Claim) {
    // The worker has read what the old connection still had (`read_first`).
    let Some(&slot) = w.mqtt.by_id.get(&old) else {
        // Still claiming (its own claim's answer, maybe a session handed
        // over from another worker or node, is on its way): it passes on
        // what it gets when it comes.
        if let Some(p) = claiming(w, old) {
            p.superseded = Some(claim);
            return;
        }
        // Already gone (a race with its end): nothing to hand over.
        let to = claim.worker;
        return w.peers.send(to, ShardMsg::Mqtt(Msg::Claimed { claim, state: None }));
    };
    if let Some(h) = w.mqtt.sessions[slot].conn {
        if let Some(m) = mqtt(w, h).filter(|m| m.version == Some(Version::V5)) {
            let packet =
                codec::disconnect(reason::SESSION_TAKEN_OVER, "another connection took the client ID", m.max_out);
            send(w, h, packet);
        }
        detach_for_takeover(w, h, slot);
        close(w, h, CloseReason::TakenOver);
    } else if !claim.clean_start {
        // Offline: a new connection to the session within the will delay
        // cancels the will (MQTT 5, 3.1.3-9). A clean start is not one: it
        // ends the session, and the will goes out now (below; "or the
        // Session ends, whichever happens first", as Mosquitto does).
        let s = &mut w.mqtt.sessions[slot];
        s.will = None;
        s.will_at = None;
        sync_will(w, slot);
    }
    // A session that ends with its connection (clean session 1, or v5
    // expiry 0) has nothing to hand over: the new connection starts afresh
    // and is told so (session present 0), whatever its clean-start flag.
    // The old connection's will goes out if the session ends here ("or the
    // Session ends", MQTT 5 3.1.2.5), whatever its delay; if the session
    // goes on, the new connection, open before the old one closed, cancels
    // it ("a new Network Connection for the ClientID is opened before the
    // Will Delay Interval has elapsed"), as Mosquitto does for 3.1.1 too.
    let state = if claim.clean_start || w.mqtt.sessions[slot].expiry == 0 {
        let s = &mut w.mqtt.sessions[slot];
        if let Some(will) = s.will.take() {
            publish_will(w, slot, *will);
        }
        end_session(w, slot, false);
        None
    } else {
        Some(Box::new(pack(w, slot, claim.worker, claim.session)))
    };
    let to = claim.worker;
    w.peers.send(to, ShardMsg::Mqtt(Msg::Claimed { claim, state }));
}

/// The connection on `h` loses its session to a new connection. Its will
/// stays with the session for `takeover` to decide.
pub(super) fn detach_for_takeover(w: &mut Shard, h: usize, slot: usize) {
    if let Some(m) = mqtt(w, h) {
        m.taken_over = true;
    }
    w.mqtt.sessions[slot].conn = None;
    w.mqtt.sessions[slot].held_connack = None;
}

/// Takes a session apart for another worker: its subscriptions are released
/// here and re-made there.
///
/// Its subscriptions stay here, and what they deliver is forwarded, until
/// the new copy's subscriptions are routed (`HandoffDone`).
pub(super) fn pack(w: &mut Shard, slot: usize, to: u16, new: u64) -> SessionState {
    let me = w.id;
    let s = &mut w.mqtt.sessions[slot];
    s.moving = Some((to, new));
    s.will = None;
    s.will_at = None;
    s.expires_at = None;
    s.subacks.clear();
    sync_will(w, slot);
    let s = &mut w.mqtt.sessions[slot];
    SessionState {
        from: (me, s.id),
        realm: s.realm.clone(),
        version: s.version,
        expiry: s.expiry,
        subs: s.subs.clone(),
        inflight: s.inflight.drain(..).collect(),
        queue: s.queue.drain(..).collect(),
        qos2_in: std::mem::take(&mut s.qos2_in),
        next_pkid: s.next_pkid,
    }
}

/// The registry's answer to our CONNECT.
pub(super) fn claimed(w: &mut Shard, claim: Claim, state: Option<Box<SessionState>>) {
    let alive = w.conns.get(claim.handle).is_some_and(|c| c.serial == claim.serial)
        && matches!(mqtt(w, claim.handle).map(|m| &m.state), Some(ConnState::Claiming(p)) if p.session == claim.session);
    if !alive && w.mqtt.by_id.contains_key(&claim.session) {
        // A second answer (its node was taken for lost, and answered
        // after all): the session is up already. An old copy that packed
        // itself for it is told to end.
        if let Some(s) = state {
            let (worker, old) = s.from;
            w.peers.send(worker, ShardMsg::Mqtt(Msg::HandoffDone { old, new: (w.id, claim.session) }));
        }
        return;
    }
    if !alive {
        // The connection went away while the registry answered. Keep a
        // handed-over session offline (it may still expire); else release.
        match state {
            Some(state) => {
                let (realm, version, expiry) = (state.realm.clone(), state.version, state.expiry);
                let slot = new_session(w, claim.session, claim.key.clone(), realm, version, expiry, u16::MAX, 0);
                let old = state.from.1;
                restore(w, slot, *state);
                persist::snapshot(w, slot, Some(old));
                go_offline(w, slot);
            }
            None => {
                let owner = owner_for_key(w, &claim.key);
                w.peers.send(owner, ShardMsg::Mqtt(Msg::Release { key: claim.key, session: claim.session }));
            }
        }
        return;
    }
    let handle = claim.handle;
    let m = mqtt(w, handle).expect("mqtt");
    let ConnState::Claiming(mut p) = std::mem::replace(&mut m.state, ConnState::New) else { unreachable!() };
    if let Some(later) = p.superseded.take() {
        // Taken over before it started: the later connection gets the
        // session (unless it starts clean: then the old copy just ends).
        close(w, handle, CloseReason::TakenOver);
        let state = match state {
            Some(s) if later.clean_start => {
                let (worker, old) = s.from;
                w.peers.send(worker, ShardMsg::Mqtt(Msg::HandoffDone { old, new: (later.worker, later.session) }));
                None
            }
            s => s,
        };
        let to = later.worker;
        return w.peers.send(to, ShardMsg::Mqtt(Msg::Claimed { claim: later, state }));
    }
    let c = p.connect;
    let cfg = &w.cfg.mqtt;
    let expiry = cap_expiry(c.session_expiry, cfg.max_session_expiry);
    let (receive_maximum, alias_max, max_packet) = (cfg.receive_maximum, cfg.topic_alias_maximum, cfg.max_packet_size);
    let slot = new_session(w, p.session, p.key, p.realm, c.version, expiry, c.receive_max, c.topic_alias_max);
    let s = &mut w.mqtt.sessions[slot];
    s.conn = Some(handle);
    s.will = c.will.map(Box::new);
    s.who = p.who;
    let present = state.is_some();
    let old = state.as_ref().map(|s| s.from.1);
    if let Some(state) = state {
        restore(w, slot, *state);
    }
    persist::snapshot(w, slot, old);
    sync_will(w, slot);
    let m = mqtt(w, handle).expect("mqtt");
    m.state = ConnState::Open(slot);
    m.alias_in = Vec::new();
    m.alias_max = alias_max;
    let mut props = Props::default();
    if c.version == Version::V5 {
        if expiry != c.session_expiry {
            props.u32(prop::SESSION_EXPIRY, expiry);
        }
        props.u16(prop::RECEIVE_MAXIMUM, receive_maximum);
        props.u32(prop::MAXIMUM_PACKET_SIZE, max_packet.min(268_435_460) as u32);
        props.u16(prop::TOPIC_ALIAS_MAXIMUM, alias_max);
        if p.assigned_id {
            props.str(prop::ASSIGNED_CLIENT_ID, &p.client);
        }
        if p.keep_alive != c.keep_alive {
            props.u16(prop::SERVER_KEEP_ALIVE, p.keep_alive);
        }
    }
    let packet = codec::connack(c.version, present, reason::SUCCESS, &props);
    if log::log_enabled!(log::Level::Debug) {
        let peer = crate::wamp::session::conn_peer(w, handle);
        let s = &w.mqtt.sessions[slot];
        log::debug!("worker {}: MQTT session {} of '{}' connected (present: {present}, {peer})", w.id, s.id, p.client);
    }
    let s = &mut w.mqtt.sessions[slot];
    if s.restoring.as_ref().is_some_and(|r| r.from.0 == crate::cluster::REMOTE && r.waiting > 0) {
        // Resumed from a dead node's record: "present" promises its
        // subscriptions, so the CONNACK waits until they are routed
        // cluster-wide (`handoff_done`).
        s.held_connack = Some(Box::new(HeldConnack { handle, packet, started: p.started }));
        return;
    }
    open(w, slot, handle, packet, p.started);
}

/// The CONNACK goes out: what the session holds follows, then the input
/// that arrived after CONNECT is read.
fn open(w: &mut Shard, slot: usize, handle: usize, connack: Bytes, started: Instant) {
    send(w, handle, connack);
    w.metrics.record(Op::MqttConnect, started, Instant::now());
    resend_inflight(w, slot);
    pump(w, slot);
    if w.conns.contains(handle) {
        unpause(w, handle);
    }
}

pub(super) fn owner_for_key(w: &Shard, key: &str) -> u16 {
    let (realm, client) = key.split_once('\0').unwrap_or(("", key));
    owner_of(realm, client, w.workers)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_session(
    w: &mut Shard,
    id: u64,
    key: Arc<str>,
    realm: Realm,
    version: Version,
    expiry: u32,
    receive_max: u16,
    alias_max: u16,
) -> usize {
    let slot = w.mqtt.sessions.insert(Session {
        id,
        key,
        realm,
        version,
        conn: None,
        subs: Vec::new(),
        next_pkid: 0,
        inflight: VecDeque::new(),
        queue: VecDeque::new(),
        qos2_in: Vec::new(),
        receive_max,
        expiry,
        will: None,
        will_at: None,
        expires_at: None,
        alias_out: AHashMap::new(),
        alias_max,
        subacks: Vec::new(),
        moving: None,
        restoring: None,
        held_connack: None,
        will_shared: false,
        queue_shared: false,
        reclaiming: false,
        who: MqttIdentity::default(),
        decisions: Vec::new(),
        stored: false,
        shared: false,
        created_ms: crate::router::unix_millis(),
        next_seq: 0,
        offline_since_ms: None,
        dropped: 0,
    });
    w.mqtt.by_id.insert(id, slot);
    w.metrics.sessions += 1;
    w.metrics.counters.sessions_opened += 1;
    slot
}

/// Re-creates a handed-over session here: subscriptions are made again
/// (without SUBACK), flows and queue carried over.
pub(super) fn restore(w: &mut Shard, slot: usize, state: SessionState) {
    let sid = w.mqtt.sessions[slot].id;
    w.mqtt.sessions[slot].restoring =
        Some(Box::new(Restoring { from: state.from, waiting: 0, done_sent: false, seen: Default::default() }));
    let mut waiting = 0;
    for mut sub in state.subs {
        sub.subscription = 0;
        let key = sub.key.clone();
        w.mqtt.sessions[slot].subs.push(sub);
        match w.subscribe(Member::Mqtt(slot), sid, key.clone(), RESTORE, Instant::now()) {
            Subscribed::Now(id) => {
                set_subscription(w, slot, &key, id);
            }
            Subscribed::Later => waiting += 1,
        }
    }
    if let Some(r) = &mut w.mqtt.sessions[slot].restoring {
        r.waiting = waiting;
    }
    if waiting == 0 {
        handoff_done(w, slot);
    }
    let s = &mut w.mqtt.sessions[slot];
    s.inflight = state.inflight.into();
    s.queue = state.queue.into();
    s.qos2_in = state.qos2_in;
    s.next_pkid = state.next_pkid;
}

/// Tells the old copy of a moved session that it can go.
pub(super) fn handoff_done(w: &mut Shard, slot: usize) {
    let new = (w.id, w.mqtt.sessions[slot].id);
    let Some(r) = &mut w.mqtt.sessions[slot].restoring else { return };
    if r.from.0 == crate::cluster::REMOTE {
        // Resumed from the cluster's record: no old copy to tell; a held
        // CONNACK goes out.
        let s = &mut w.mqtt.sessions[slot];
        s.restoring = None;
        if let Some(held) = s.held_connack.take().filter(|h| s.conn == Some(h.handle)) {
            open(w, slot, held.handle, held.packet, held.started);
        }
        return;
    }
    if !r.done_sent {
        r.done_sent = true;
        let (worker, old) = r.from;
        w.peers.send(worker, ShardMsg::Mqtt(Msg::HandoffDone { old, new }));
    }
}

pub(super) fn set_subscription(w: &mut Shard, slot: usize, key: &SubKey, id: u64) -> bool {
    match w.mqtt.sessions[slot].subs.iter_mut().find(|s| s.key == *key && s.subscription == 0) {
        Some(sub) => {
            sub.subscription = id;
            true
        }
        None => false,
    }
}
