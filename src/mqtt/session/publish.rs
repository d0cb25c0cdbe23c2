//! PUBLISH from the client: topic aliases, the level bound, `$SYS`, QoS 2
//! exactly-once bookkeeping (PUBREC / PUBREL / PUBCOMP), routing, and the
//! acknowledgement (v5: 0x10 when nothing matched).

use super::*;
use crate::config::Durability;
use crate::worker::core::{AckOutcome, PendingAck};
use crate::worker::tables::Refusal;

pub(super) fn publish(w: &mut Shard, handle: usize, slot: usize, p: codec::Publish) {
    let started = w.now;
    // A dynamic role may have to ask: the packet is kept to be handled again.
    let dynamic = w.mqtt.sessions[slot].who.rules.as_ref().is_some_and(|r| r.authorizer.is_some());
    let keep = dynamic.then(|| p.clone());
    let m = mqtt(w, handle).expect("mqtt");
    // Topic aliases (v5): set or resolve.
    let topic = match p.alias {
        None => swap_owned(p.topic),
        Some(a) => {
            if a > m.alias_max {
                return fail(w, handle, reason::TOPIC_ALIAS_INVALID, "topic alias over the maximum");
            }
            let i = usize::from(a) - 1;
            if m.alias_in.len() <= i {
                m.alias_in.resize(i + 1, None);
            }
            let Some(entry) = m.alias_in.get_mut(i) else {
                return fail(w, handle, reason::TOPIC_ALIAS_INVALID, "topic alias over the maximum");
            };
            if p.topic.is_empty() {
                match entry {
                    Some(t) => t.clone(),
                    None => return fail(w, handle, reason::PROTOCOL_ERROR, "unknown topic alias"),
                }
            } else {
                let t = swap(&p.topic);
                *entry = Some(t.clone());
                t
            }
        }
    };
    let ver = m.version.unwrap_or(Version::V4);
    if levels(&topic) > w.cfg.mqtt.max_topic_levels {
        return fail(w, handle, reason::TOPIC_NAME_INVALID, "topic name has too many levels");
    }
    // `$SYS` and `wamp/` topics are the broker's: v5 is told (the flow
    // ends there), 3.1.1 (which has no way to say no) gets its
    // acknowledgement and the message is dropped.
    // ... and so are topics the session's role may not publish to.
    let allowed = match authorize::decide(w, slot, crate::auth::rules::Action::Publish, &topic) {
        authorize::Decided::Yes => true,
        authorize::Decided::No => false,
        authorize::Decided::Ask => {
            let packet = Packet::Publish(keep.expect("a dynamic role"));
            return authorize::park(w, handle, slot, packet, crate::auth::rules::Action::Publish, topic);
        }
    };
    let denied = crate::router::is_reserved(&topic) || !allowed;
    if denied {
        w.metrics.counters.mqtt_denied += 1;
        if ver == Version::V5 {
            return ack_publish(w, handle, ver, p.qos, p.pkid, reason::NOT_AUTHORIZED);
        }
    }
    let s = &mut w.mqtt.sessions[slot];
    if p.qos == 2 {
        if s.qos2_in.contains(&p.pkid) {
            // A resend of a message we have: acknowledge, do not publish
            // again; if the first one's PUBREC still waits for the store,
            // that PUBREC answers both (none before it is on disk).
            let serial = w.conns[handle].serial;
            let waiting = w.pending_acks.values().any(|a| {
                matches!(a.ack, PendingAck::Mqtt { handle: h, serial: s, qos: 2, pkid, .. }
                    if h == handle && s == serial && pkid == p.pkid)
            });
            if !waiting {
                ack_publish(w, handle, ver, 2, p.pkid, reason::SUCCESS);
            }
            return;
        }
        if s.qos2_in.len() >= usize::from(w.cfg.mqtt.receive_maximum) {
            return fail(w, handle, reason::RECEIVE_MAXIMUM_EXCEEDED, "too many QoS 2 messages awaiting PUBREL");
        }
        s.qos2_in.push(p.pkid);
    }
    if p.props.as_ref().is_some_and(|pp| pp.payload_format == Some(1)) && std::str::from_utf8(&p.payload).is_err() {
        return fail(w, handle, reason::PAYLOAD_FORMAT_INVALID, "payload is not UTF-8 as its format says");
    }
    let publisher = SessionRef { worker: w.id, id: s.id };
    let realm = s.realm.clone();
    let expires = p.props.as_ref().and_then(|pp| pp.expiry).map(|e| w.now + Duration::from_secs(u64::from(e)));
    let (qos, pkid) = (p.qos, p.pkid);
    if denied {
        return ack_publish(w, handle, ver, qos, pkid, reason::SUCCESS);
    }
    let publication = Publication {
        realm,
        topic,
        id: w.ids.next_id(),
        publisher,
        exclude_me: false,
        body: Body::Mqtt(p.payload),
        qos: p.qos,
        retain: p.retain,
        props: p.props,
        expires,
        started,
        disclosed: None,
        receivers: None,
        ppt: None,
        durable_ack: None,
    };
    w.metrics.counters.mqtt_publish_in += 1;
    let divert = match w.divert(&publication) {
        Ok(d) => d,
        Err(refusal) => {
            // A built-in reducer or a table cannot take it, or the topic is
            // a table row's: v5 says so (0x99, 0x87; a QoS 2 flow ends
            // there); 3.1.1 has no code for it: acknowledged, dropped.
            log::debug!("worker {}: MQTT PUBLISH to '{}' refused: {refusal:?}", w.id, publication.topic);
            let code = match refusal {
                Refusal::Invalid(_) => {
                    w.metrics.counters.reduce_failed += 1;
                    reason::PAYLOAD_FORMAT_INVALID
                }
                Refusal::Reserved(_) => reason::NOT_AUTHORIZED,
            };
            if ver != Version::V5 {
                return ack_publish(w, handle, ver, qos, pkid, reason::SUCCESS);
            }
            if qos == 2 {
                w.mqtt.sessions[slot].qos2_in.retain(|&k| k != pkid);
            }
            return ack_publish(w, handle, ver, qos, pkid, code);
        }
    };
    // The publishing worker's routing table knows whether anything matches:
    // v5 says so in the acknowledgement (0x10), as Mosquitto and HiveMQ do.
    let durable_qos2 = qos == 2 && persist::durable(w, slot);
    if qos > 0 && w.store.is_some() && w.cfg.store.durability == Durability::Sync {
        // The acknowledgement waits until what this PUBLISH wrote is on
        // disk: the retained value, the copies queued for persistent
        // sessions, its own QoS 2 packet ID.
        let serial = w.conns[handle].serial;
        let ticket = w.open_ticket(PendingAck::Mqtt { handle, serial, version: ver, qos, pkid });
        if durable_qos2 {
            persist::save_qos2(w, slot, pkid, Some((w.id, ticket)));
            w.expect(ticket, 1, true);
        }
        w.route_diverted(publication, divert, Some(ticket), false);
        return;
    }
    if durable_qos2 {
        persist::save_qos2(w, slot, pkid, None);
    }
    let code = if w.route_diverted(publication, divert, None, false) {
        reason::SUCCESS
    } else {
        reason::NO_MATCHING_SUBSCRIBERS
    };
    ack_publish(w, handle, ver, qos, pkid, code);
}

/// The store has a retained PUBLISH's value on disk: PUBACK / PUBREC now.
/// If the write failed, v5 is told (0x80, unspecified error); 3.1 and 3.1.1
/// have no way to say so, and the connection is closed (the client will
/// send it again).
///
/// A retained value over a bound of the store (`AckOutcome::Limit`): v5
/// gets 0x97 (quota exceeded); 3.1 and 3.1.1 are closed likewise.
pub fn on_stored(w: &mut Shard, handle: usize, ver: Version, qos: u8, pkid: u16, matched: bool, o: AckOutcome) {
    let code = if matched { reason::SUCCESS } else { reason::NO_MATCHING_SUBSCRIBERS };
    let (v5_code, text) = match o {
        AckOutcome::Stored | AckOutcome::Refused => return ack_publish(w, handle, ver, qos, pkid, code),
        AckOutcome::Failed(e) => (reason::UNSPECIFIED, format!("the retained value could not be stored: {e}")),
        AckOutcome::Limit(why) => (reason::QUOTA_EXCEEDED, format!("the retained value was refused: {why}")),
    };
    if ver == Version::V5 {
        ack_publish(w, handle, ver, qos, pkid, v5_code)
    } else {
        w.close(handle, CloseReason::ProtocolViolation, Some((crate::ws::frame::CLOSE_POLICY, &text)));
    }
}

/// PUBACK (QoS 1) or PUBREC (QoS 2) for a client PUBLISH.
pub(super) fn ack_publish(w: &mut Shard, handle: usize, ver: Version, qos: u8, pkid: u16, code: u8) {
    match qos {
        1 => send(w, handle, codec::ack_packet(ver, codec::PUBACK, pkid, code)),
        2 => send(w, handle, codec::ack_packet(ver, codec::PUBREC, pkid, code)),
        _ => {}
    }
}

pub(super) fn route(w: &mut Shard, p: Publication) -> bool {
    w.route(p)
}

/// Levels of a core-form topic (`.` separated).
pub(super) fn levels(topic: &str) -> usize {
    levels_by(topic, b'.')
}

pub(super) fn levels_by(topic: &str, separator: u8) -> usize {
    1 + topic.bytes().filter(|&b| b == separator).count()
}

pub(super) fn pubrel(w: &mut Shard, handle: usize, slot: usize, pkid: u16) {
    let ver = version(w, handle);
    let s = &mut w.mqtt.sessions[slot];
    let code = match s.qos2_in.iter().position(|&id| id == pkid) {
        Some(i) => {
            s.qos2_in.swap_remove(i);
            persist::forget_qos2(w, slot, pkid);
            0
        }
        None => reason::PACKET_ID_NOT_FOUND,
    };
    send(w, handle, codec::ack_packet(ver, codec::PUBCOMP, pkid, code));
}
