//! Delivery to the client: one copy per message and session at the highest
//! matching QoS, the in-flight window and the queue behind it, encoding
//! (shared QoS 0 packets, topic aliases, the client's maximum packet size),
//! redelivery on reconnect, and the client's acknowledgements.

use super::*;

/// A publication for this session, which holds the matching core
/// subscriptions `subs` (one copy per message, at the highest QoS of the
/// matching subscriptions, with all their subscription identifiers).
///
/// Returns the QoS it went out with if it was queued on the connection now
/// (the caller records the latency, once per QoS for a whole delivery).
pub fn deliver(w: &mut Shard, slot: usize, p: &Arc<Publication>, subs: &[u64], conv: &mut Converted) -> Option<u8> {
    let s = w.mqtt.sessions.get(slot)?;
    // A WAMP publisher's black- and whitelists: an MQTT session is its
    // session ID, its authid (its principal, or its client ID) and role.
    if let Some(r) = &p.receivers {
        if !r.admits(s.id, &s.who.authid, &s.who.authrole) {
            return None;
        }
    }
    let mine = p.publisher.worker == w.id && p.publisher.id == s.id;
    let mut qos = None;
    let mut retain = false;
    let mut sub_ids = Vec::new();
    for sub in s.subs.iter().filter(|x| x.subscription != 0 && subs.contains(&x.subscription)) {
        if mine && sub.opts.no_local {
            continue;
        }
        let q = p.qos.min(sub.opts.qos);
        qos = Some(qos.map_or(q, |x: u8| x.max(q)));
        retain |= sub.opts.retain_as_published && p.retain;
        if let Some(id) = sub.id {
            sub_ids.push(id);
        }
    }
    let qos = qos?;
    if p.expired(w.now) {
        count_drop(w, slot);
        return None;
    }
    let out = Outgoing { msg: p.clone(), qos, retain, sub_ids, seq: 0 };
    if let Some((to, session)) = s.moving {
        w.peers.send(to, ShardMsg::Mqtt(Msg::Forward { session, out: Box::new(out) }));
        return None;
    }
    if first_sight(w, slot, p.id) {
        return offer(w, slot, out, conv).then_some(qos);
    }
    None
}

/// The publish->deliver histogram of a QoS.
pub fn deliver_op(qos: u8) -> Op {
    match qos {
        0 => Op::MqttDeliver0,
        1 => Op::MqttDeliver1,
        _ => Op::MqttDeliver2,
    }
}

/// `offer`, recording the latency of a message sent now.
pub(super) fn offer_recorded(w: &mut Shard, slot: usize, out: Outgoing, conv: &mut Converted) {
    let (op, started) = (deliver_op(out.qos), out.msg.started);
    if offer(w, slot, out, conv) {
        w.metrics.record(op, started, w.now);
    }
}

/// Sends a message now (true), or queues it (QoS 1/2) behind the window,
/// or drops it (QoS 0 offline or over the queue, a full queue).
pub(super) fn offer(w: &mut Shard, slot: usize, mut out: Outgoing, conv: &mut Converted) -> bool {
    let s = &mut w.mqtt.sessions[slot];
    if out.qos == 0 {
        let Some(h) = s.online() else {
            count_drop(w, slot);
            return false;
        };
        return transmit(w, slot, h, 0, &out, false, conv);
    }
    let window = usize::from(s.receive_max.min(w.cfg.mqtt.max_inflight));
    match s.online() {
        Some(h) if s.inflight.len() < window && s.queue.is_empty() => {
            let pkid = next_pkid(s);
            // One too large for the client was dropped as if delivered: it
            // takes no place in the window (MQTT 5, 3.1.2.25).
            if !transmit(w, slot, h, pkid, &out, false, conv) {
                return false;
            }
            persist::save_out(w, slot, &mut out, pkid, false);
            w.mqtt.sessions[slot].inflight.push_back(InFlight { pkid, out, released: false });
            true
        }
        _ => {
            if s.queue.len() >= w.cfg.mqtt.max_queued_messages {
                count_drop(w, slot);
                return false;
            }
            persist::save_out(w, slot, &mut out, 0, false);
            persist::share_queued(w, slot, &mut out);
            w.mqtt.sessions[slot].queue.push_back(out);
            false
        }
    }
}

pub(super) fn next_pkid(s: &mut Session) -> u16 {
    loop {
        s.next_pkid = s.next_pkid.wrapping_add(1);
        if s.next_pkid != 0 && !s.inflight.iter().any(|f| f.pkid == s.next_pkid) {
            return s.next_pkid;
        }
    }
}

/// Encodes and queues one PUBLISH; false if it was dropped.
pub(super) fn transmit(
    w: &mut Shard,
    slot: usize,
    h: usize,
    pkid: u16,
    out: &Outgoing,
    dup: bool,
    conv: &mut Converted,
) -> bool {
    let now = w.now;
    let Some(m) = mqtt(w, h) else { return false };
    let max_out = m.max_out;
    let s = &mut w.mqtt.sessions[slot];
    let ver = s.version;
    let p = &out.msg;
    let body = conv.mqtt_payload(&p.body);
    let topic: &str = conv.topic.get_or_insert_with(|| swap(&p.topic));
    // Topic alias toward a client that accepts them.
    let (alias, send_topic) = if ver == Version::V5 && s.alias_max > 0 {
        match s.alias_out.get(topic) {
            Some(&a) => (Some(a), false),
            None if s.alias_out.len() < usize::from(s.alias_max) => {
                let a = s.alias_out.len() as u16 + 1;
                s.alias_out.insert(topic.to_owned(), a);
                (Some(a), true)
            }
            None => (None, true),
        }
    } else {
        (None, true)
    };
    // Whole seconds left, rounded up: a message that has waited 0.2 s of its
    // 4 goes out with 4, as it has not waited one second yet.
    let expiry = p.expires.map(|t| {
        let left = t.saturating_duration_since(now);
        (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1) as u32
    });
    // A QoS 0 packet with nothing subscriber-specific is the same for every
    // subscriber of this version: encode it once per delivery.
    let shared = out.qos == 0 && alias.is_none() && out.sub_ids.is_empty() && expiry.is_none();
    let slot_of = usize::from(ver == Version::V5) * 2 + usize::from(out.retain);
    let packet = match &conv.qos0[slot_of] {
        Some(b) if shared => b.clone(),
        _ => {
            let o = PubOut {
                qos: out.qos,
                retain: out.retain,
                dup,
                pkid,
                alias,
                send_topic,
                sub_ids: &out.sub_ids,
                props: p.props.as_deref(),
                expiry,
            };
            let packet = codec::publish(ver, topic, &body, &o);
            if shared {
                conv.qos0[slot_of] = Some(packet.clone());
            }
            packet
        }
    };
    if packet.len() > max_out {
        // MQTT 5: a message over the client's maximum is discarded, and an
        // alias it would have set is not set.
        if send_topic && alias.is_some() {
            w.mqtt.sessions[slot].alias_out.remove(topic);
        }
        count_drop(w, slot);
        return false;
    }
    let sent = if out.qos == 0 {
        send_droppable(w, h, packet)
    } else {
        send(w, h, packet);
        true
    };
    w.metrics.counters.mqtt_publish_out += u64::from(sent);
    sent
}

/// On reconnect: unacknowledged PUBLISHes again with DUP, PUBRELs again.
/// One now over the new connection's maximum packet size is dropped as if
/// delivered, and frees its slot.
pub(super) fn resend_inflight(w: &mut Shard, slot: usize) {
    let Some(h) = w.mqtt.sessions[slot].online() else { return };
    let flights: Vec<InFlight> = w.mqtt.sessions[slot].inflight.iter().cloned().collect();
    let ver = w.mqtt.sessions[slot].version;
    let mut dropped = Vec::new();
    for f in flights {
        if f.released {
            send(w, h, codec::ack_packet(ver, codec::PUBREL, f.pkid, 0));
        } else if !transmit(w, slot, h, f.pkid, &f.out, true, &mut Converted::default()) {
            dropped.push(f.pkid);
        }
    }
    if !dropped.is_empty() {
        let s = &mut w.mqtt.sessions[slot];
        let gone: Vec<u64> = s.inflight.iter().filter(|f| dropped.contains(&f.pkid)).map(|f| f.out.seq).collect();
        s.inflight.retain(|f| !dropped.contains(&f.pkid));
        for seq in gone {
            persist::forget_out(w, slot, seq);
        }
    }
}

/// Moves queued messages into the window.
pub(super) fn pump(w: &mut Shard, slot: usize) {
    loop {
        let s = &mut w.mqtt.sessions[slot];
        let Some(h) = s.online() else { return };
        let window = usize::from(s.receive_max.min(w.cfg.mqtt.max_inflight));
        if s.inflight.len() >= window {
            return;
        }
        let Some(mut out) = s.queue.pop_front() else { return };
        if out.msg.expired(w.now) {
            count_drop(w, slot);
            persist::forget_out(w, slot, out.seq);
            continue;
        }
        let pkid = next_pkid(s);
        let (op, started) = (deliver_op(out.qos), out.msg.started);
        if transmit(w, slot, h, pkid, &out, false, &mut Converted::default()) {
            persist::save_out(w, slot, &mut out, pkid, false);
            w.mqtt.sessions[slot].inflight.push_back(InFlight { pkid, out, released: false });
            w.metrics.record(op, started, w.now);
        } else {
            persist::forget_out(w, slot, out.seq);
        }
    }
}

/// PUBACK (QoS 1) or PUBCOMP (QoS 2).
pub(super) fn acked(w: &mut Shard, slot: usize, pkid: u16, qos: u8) {
    let s = &mut w.mqtt.sessions[slot];
    let found = s.inflight.iter().position(|f| f.pkid == pkid && f.out.qos == qos && (qos == 1 || f.released));
    if let Some(i) = found {
        let f = s.inflight.remove(i).expect("found");
        persist::forget_out(w, slot, f.out.seq);
        pump(w, slot);
    }
}

pub(super) fn pubrec(w: &mut Shard, handle: usize, slot: usize, pkid: u16, code: u8) {
    let ver = version(w, handle);
    let s = &mut w.mqtt.sessions[slot];
    match s.inflight.iter().position(|f| f.pkid == pkid && f.out.qos == 2) {
        Some(i) if code >= 0x80 => {
            // The client refused it: the flow ends here.
            let f = s.inflight.remove(i).expect("found");
            persist::forget_out(w, slot, f.out.seq);
            pump(w, slot);
        }
        Some(i) => {
            s.inflight[i].released = true;
            let mut out = s.inflight[i].out.clone();
            persist::save_out(w, slot, &mut out, pkid, true);
            send(w, handle, codec::ack_packet(ver, codec::PUBREL, pkid, 0));
        }
        None => send(w, handle, codec::ack_packet(ver, codec::PUBREL, pkid, reason::PACKET_ID_NOT_FOUND)),
    }
}

/// Counts a message not delivered to the session in `slot`.
fn count_drop(w: &mut Shard, slot: usize) {
    w.metrics.counters.mqtt_dropped += 1;
    if let Some(s) = w.mqtt.sessions.get_mut(slot) {
        s.dropped += 1;
    }
}
