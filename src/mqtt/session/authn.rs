//! Who an MQTT client is, from its CONNECT: a verified client certificate
//! (`username_from_cert`), a user name and password checked against the
//! realm's principals (the password is the principal's ticket), the
//! realm's dynamic authenticator for a user name it does not list, or
//! anonymous.
//!
//! The authenticator is the WAMP one (`authenticator = "<procedure>"` on
//! the realm), called as `(realm, authid, details)` with `details`
//! holding `authmethod: "ticket"`, the password as `ticket`, `transport:
//! {type: "mqtt"}` and the `client_id`. While it decides, the connection
//! reads nothing more; its answer (a role, or `{role, authid}`) lets the
//! CONNECT go on (`connect::go_on`), an error refuses it (CONNACK 0x86,
//! 3.1.1: 4), and no authenticator or no answer within 5 s makes it
//! "server unavailable" (0x88, 3.1.1: 3): the client may try again.

use super::*;
use crate::router::CallOutcome;
use crate::value::Value;

/// What `authenticate` found.
pub(super) enum Authn {
    Known(MqttIdentity),
    /// The realm's authenticator is to decide about this user name.
    Dynamic(String),
    /// Refused; CONNACK sent.
    Refused,
}

/// A CONNECT waiting for the realm's authenticator.
pub struct MqttAsking {
    handle: usize,
    serial: u64,
    callee: SessionRef,
    user: String,
    go: Go,
}

fn identity(w: &mut Shard, realm: &crate::config::RealmConfig, authid: String, role: &str) -> MqttIdentity {
    MqttIdentity {
        rules: realm.auth.rules_of(role),
        authz_key: w.shared_name(&format!("{}\0{}", realm.name, role)),
        authid,
        authrole: w.shared_name(role),
    }
}

/// A failed authentication: counted, logged, held against the address,
/// CONNACK `code`.
fn refuse(w: &mut Shard, handle: usize, code: u8, why: &str) {
    if let Some(ip) = w.conns[handle].peer.map(|a| a.ip()) {
        w.auth_throttle.failed(ip, w.now);
    }
    w.metrics.counters.auth_failed += 1;
    log::warn!("worker {}: MQTT authentication failed ({}): {why}", w.id, crate::wamp::session::conn_peer(w, handle));
    fail_connack(w, handle, code);
}

/// Who the client is: with a user name in a realm that has principals (or
/// an authenticator), the principal whose ticket the password is, else
/// the authenticator's to decide (`Dynamic`), else CONNACK 0x86 / 4 (the
/// failure counts against the address); without, anonymous if the realm
/// and `mqtt.allow_anonymous` allow it (else 0x87 / 5). In a realm
/// without either a user name only names the realm (fox-wamp's
/// `user@realm`).
pub(super) fn authenticate(
    w: &mut Shard,
    handle: usize,
    realm: &crate::config::RealmConfig,
    c: &Connect,
    client: &str,
) -> Authn {
    let auth = &realm.auth;
    let user = c.username.as_deref().map(|u| u.rsplit_once('@').map_or(u, |(u, _)| u)).filter(|u| !u.is_empty());
    let ip = w.conns[handle].peer.map(|a| a.ip());
    // `username_from_cert`: a verified client certificate names the
    // principal (one allowed to log in so); no password is needed.
    if w.cfg.mqtt.username_from_cert {
        let cn = w.conns[handle].tls.as_deref().and_then(crate::tls::peer_name);
        if let Some(p) = cn.and_then(|cn| auth.principals.get(&cn).filter(|p| p.tls)) {
            return Authn::Known(identity(w, realm, p.authid.clone(), &p.role));
        }
    }
    match user {
        Some(user) if !auth.principals.is_empty() || auth.authenticator.is_some() => {
            if ip.is_some_and(|ip| !w.auth_throttle.allowed(ip, w.now)) {
                fail_connack(w, handle, reason::BAD_USERNAME_OR_PASSWORD);
                return Authn::Refused;
            }
            let given = c.password.as_deref().unwrap_or("").as_bytes();
            match auth.principals.get(user) {
                Some(p) if p.ticket.is_some() && p.ticket_ok(given) => {
                    Authn::Known(identity(w, realm, p.authid.clone(), &p.role))
                }
                // Listed principals are the router's to check.
                Some(_) => {
                    refuse(w, handle, reason::BAD_USERNAME_OR_PASSWORD, "wrong password");
                    Authn::Refused
                }
                None if auth.authenticator.is_some() => Authn::Dynamic(user.to_owned()),
                None => {
                    refuse(w, handle, reason::BAD_USERNAME_OR_PASSWORD, "no such principal");
                    Authn::Refused
                }
            }
        }
        _ if !(auth.allow_anonymous && w.cfg.mqtt.allow_anonymous) => {
            fail_connack(w, handle, reason::NOT_AUTHORIZED);
            Authn::Refused
        }
        // Anonymous: the client ID is its authid.
        _ => Authn::Known(identity(w, realm, client.to_owned(), &auth.anonymous_role)),
    }
}

/// Asks the realm's authenticator about `user`; the CONNECT waits.
pub(super) fn ask(w: &mut Shard, handle: usize, realm: &crate::config::RealmConfig, user: String, go: Go) {
    let Some(proc) = realm.auth.authenticator.clone() else { return };
    let details = vec![
        ("authmethod".to_owned(), Value::Str("ticket".into())),
        ("ticket".to_owned(), Value::Str(go.c.password.clone().unwrap_or_default())),
        ("transport".to_owned(), Value::Dict(vec![("type".to_owned(), Value::Str("mqtt".into()))])),
        ("client_id".to_owned(), Value::Str(go.client.clone())),
    ];
    let args = vec![Value::Str(realm.name.clone()), Value::Str(user.clone()), Value::Dict(details)];
    let name: Realm = realm.name.as_str().into();
    match crate::wamp::session::authorizer_call(w, &name, proc, args) {
        Ok((request, callee)) => {
            let serial = w.conns[handle].serial;
            w.conns[handle].paused = true;
            w.mqtt_authn.insert(request, MqttAsking { handle, serial, callee, user, go });
        }
        Err(why) => {
            log::warn!("worker {}: MQTT authentication not possible: the authenticator {why}", w.id);
            fail_connack(w, handle, reason::SERVER_UNAVAILABLE);
        }
    }
}

/// The authenticator's answer (`None`: none in time; the callee is told).
pub fn on_authenticator_answer(w: &mut Shard, request: u64, outcome: Option<CallOutcome>) {
    let Some(a) = w.mqtt_authn.remove(&request) else { return };
    let answer = match outcome {
        Some(CallOutcome::Result(payload, _)) => match payload.values().args.as_ref().and_then(|v| v.first()) {
            Some(Value::Str(role)) => Ok((None, role.clone())),
            Some(Value::Dict(d)) => match crate::value::dict_get(d, "role").and_then(Value::as_str) {
                Some(role) => {
                    let authid = crate::value::dict_get(d, "authid").and_then(Value::as_str).map(str::to_owned);
                    Ok((authid, role.to_owned()))
                }
                None => Err((reason::BAD_USERNAME_OR_PASSWORD, "the authenticator's answer has no role".to_owned())),
            },
            other => Err((reason::BAD_USERNAME_OR_PASSWORD, format!("the authenticator answered {other:?}"))),
        },
        Some(CallOutcome::Error { error, .. }) => {
            Err((reason::BAD_USERNAME_OR_PASSWORD, format!("the authenticator refused: {error}")))
        }
        Some(CallOutcome::Progress(..)) => {
            // Not the answer yet.
            w.mqtt_authn.insert(request, a);
            return;
        }
        None => {
            let caller = SessionRef { worker: w.id, id: crate::wamp::session::ROUTER_CALLER };
            let why = crate::router::Interruption::Timeout;
            w.peers.send(a.callee.worker, ShardMsg::Interrupt { callee: a.callee.id, caller, request, why });
            Err((reason::SERVER_UNAVAILABLE, "the authenticator did not answer in time".to_owned()))
        }
    };
    if !w.conns.get(a.handle).is_some_and(|c| c.serial == a.serial && !c.is_closed()) {
        return;
    }
    match answer {
        Ok((authid, role)) => {
            let Some(realm) = w.cfg.realm(&a.go.realm_name) else {
                return fail_connack(w, a.handle, reason::NOT_AUTHORIZED);
            };
            let who = identity(w, &realm, authid.unwrap_or(a.user), &role);
            go_on(w, a.handle, a.go, who);
        }
        Err((code, why)) if code == reason::SERVER_UNAVAILABLE => {
            log::warn!("worker {}: MQTT authentication not possible: {why}", w.id);
            fail_connack(w, a.handle, code);
        }
        Err((code, why)) => refuse(w, a.handle, code, &why),
    }
}
