//! Joining a realm: HELLO, the method chosen (the first of the client's
//! `authmethods` that the realm offers), CHALLENGE / AUTHENTICATE for
//! ticket, WAMP-CRA and cryptosign, and the failure budget per peer
//! address. Checks use `crate::auth` (principals, secrets, crypto); a
//! session that passes is opened by `open_session` with its identity.
//!
//! States of a connection: no session (HELLO expected) -> challenged
//! (`WampConn.auth`: only AUTHENTICATE, ABORT or GOODBYE expected) ->
//! open. An unknown authid gets a challenge like a known one and fails at
//! AUTHENTICATE with the same error, so authids cannot be probed.

use super::*;
use crate::auth::{crypto, Method, Principal};
use std::net::IpAddr;
use std::time::Duration;

/// Failed authentications an address may have per `FAIL_WINDOW`; then its
/// attempts are refused at once until the window ends.
pub const FAIL_BUDGET: u32 = 10;
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered per worker (then the oldest windows are dropped).
const FAIL_ADDRESSES: usize = 4096;
/// Longest AUTHENTICATE signature taken.
const MAX_SIGNATURE: usize = 4096;

/// Failed attempts per peer address, on one worker.
#[derive(Default)]
pub struct Throttle {
    failures: AHashMap<IpAddr, (u32, Instant)>,
}

impl Throttle {
    /// Whether `ip` may try now.
    pub fn allowed(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.failures.get(&ip) {
            Some(&(n, since)) if now.duration_since(since) < FAIL_WINDOW => n < FAIL_BUDGET,
            Some(_) => {
                self.failures.remove(&ip);
                true
            }
            None => true,
        }
    }

    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.failures.len() >= FAIL_ADDRESSES {
            self.failures.retain(|_, (_, since)| now.duration_since(*since) < FAIL_WINDOW);
            if self.failures.len() >= FAIL_ADDRESSES {
                self.failures.clear();
            }
        }
        let e = self.failures.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= FAIL_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

/// Who a session is, once authenticated.
pub struct Identity {
    pub authid: String,
    pub authrole: String,
    pub method: Method,
    pub provider: &'static str,
}

/// A HELLO waiting for its AUTHENTICATE.
pub struct PendingAuth {
    realm: crate::config::RealmConfig,
    details: Dict,
    method: Method,
    authid: String,
    /// `None`: no such principal (the AUTHENTICATE will fail).
    principal: Option<Principal>,
    /// WAMP-CRA: the challenge string signed; cryptosign: the hex of...
    challenge: String,
    /// ...these bytes.
    raw: Vec<u8>,
    /// Cryptosign: the key the client offered.
    key: Option<[u8; 32]>,
    /// The realm's authenticator decides (no static principal).
    dynamic: bool,
    /// Who vouched for the principal: `static` (the config) or `dynamic`.
    provider: &'static str,
    started: Instant,
}

/// An authentication waiting for the realm's authenticator.
pub struct Asking {
    handle: usize,
    serial: u64,
    pending: Box<PendingAuth>,
    callee: SessionRef,
}

fn peer_ip(w: &Shard, handle: usize) -> Option<IpAddr> {
    w.conns[handle].peer.map(|a| a.ip())
}

fn str_list(details: &Dict, key: &str) -> Option<Vec<String>> {
    match dict_get(details, key)? {
        Value::List(l) => Some(l.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()),
        _ => None,
    }
}

/// ABORT reason of a HELLO to a node cut off from its cluster.
pub const CLUSTER_UNAVAILABLE: &str = "fennec.error.cluster_unavailable";

pub(super) fn hello(w: &mut Shard, handle: usize, realm: String, details: Dict) {
    let started = Instant::now();
    if !matches!(dict_get(&details, "roles"), Some(Value::Dict(roles)) if !roles.is_empty()) {
        return violation(w, handle, "HELLO.Details.roles must be a non-empty dictionary");
    }
    let Some(realm_cfg) = w.cfg.realm(&realm) else {
        let message = format!("no realm '{realm}' on this router");
        return abort(w, handle, "wamp.error.no_such_realm", &message, CloseReason::Client);
    };
    if w.cut_off() {
        let message = "this node of the cluster is cut off from NATS: connect to another node, or retry";
        return abort(w, handle, CLUSTER_UNAVAILABLE, message, CloseReason::Client);
    }
    let auth = realm_cfg.auth.clone();
    let methods = str_list(&details, "authmethods").unwrap_or_else(|| vec!["anonymous".into()]);
    let authid = dict_get(&details, "authid").and_then(Value::as_str).map(str::to_owned);
    // authmethod `tls`: the verified client certificate's common name, a
    // principal allowed to log in so, and HELLO's authid (if any) the same.
    let cert_principal = w.conns[handle]
        .tls
        .as_deref()
        .and_then(crate::tls::peer_name)
        .filter(|cn| authid.as_ref().is_none_or(|a| a == cn))
        .and_then(|cn| auth.principals.get(&cn).filter(|p| p.tls).cloned());
    let usable = |m: Method| match m {
        Method::Tls => cert_principal.is_some(),
        m => auth.offers(m) && chooses(m, &authid, &details),
    };
    let Some(method) = methods.iter().filter_map(|m| Method::from_name(m)).find(|&m| usable(m)) else {
        let offered: Vec<&str> = [Method::Anonymous, Method::Ticket, Method::Wampcra, Method::Cryptosign, Method::Tls]
            .into_iter()
            .filter(|&m| auth.offers(m))
            .map(Method::name)
            .collect();
        let message = format!("none of the methods {methods:?} is offered here (this realm: {offered:?})");
        return abort(w, handle, "wamp.error.no_auth_method", &message, CloseReason::Client);
    };
    if let (Method::Tls, Some(p)) = (method, &cert_principal) {
        let identity = Identity { authid: p.authid.clone(), authrole: p.role.clone(), method, provider: "static" };
        return open_session(w, handle, &realm_cfg, details, identity, started);
    }
    if method == Method::Anonymous {
        let identity =
            Identity { authid: String::new(), authrole: auth.anonymous_role.clone(), method, provider: "static" };
        return open_session(w, handle, &realm_cfg, details, identity, started);
    }
    if let Some(ip) = peer_ip(w, handle) {
        if !w.auth_throttle.allowed(ip, w.now) {
            let message = format!(
                "too many failed authentications from this address: at most {FAIL_BUDGET} per {} s",
                FAIL_WINDOW.as_secs()
            );
            return abort(w, handle, "wamp.error.authentication_failed", &message, CloseReason::Client);
        }
    }
    let mut pending = PendingAuth {
        realm: realm_cfg,
        details,
        method,
        authid: authid.clone().unwrap_or_default(),
        principal: None,
        challenge: String::new(),
        raw: Vec::new(),
        key: None,
        dynamic: false,
        provider: "static",
        started,
    };
    let extra: Dict = match method {
        Method::Ticket => {
            pending.principal = auth.principals.get(&pending.authid).filter(|p| p.has(method)).cloned();
            pending.dynamic = pending.principal.is_none() && auth.authenticator.is_some();
            Dict::new()
        }
        Method::Wampcra => {
            pending.principal = auth.principals.get(&pending.authid).filter(|p| p.has(method)).cloned();
            let role = pending.principal.as_ref().map_or("", |p| p.role.as_str());
            let nonce: [u8; 16] = rand::thread_rng().gen();
            let challenge = serde_json::json!({
                "authid": pending.authid,
                "authrole": role,
                "authmethod": "wampcra",
                "authprovider": "static",
                "nonce": hex::encode(nonce),
                "timestamp": crate::router::unix_millis(),
                "session": 0,
            });
            pending.challenge = challenge.to_string();
            let mut extra = vec![("challenge".to_owned(), Value::Str(pending.challenge.clone()))];
            if let Some(s) = pending.principal.as_ref().and_then(|p| p.cra_salt.as_ref()) {
                extra.push(("salt".into(), Value::Str(s.salt.clone())));
                extra.push(("iterations".into(), Value::UInt(u64::from(s.iterations))));
                extra.push(("keylen".into(), Value::UInt(s.keylen as u64)));
            }
            extra
        }
        Method::Cryptosign => {
            let key = cryptosign_key(&pending.details);
            let owner = key.and_then(|k| auth.by_key.get(&k));
            // An authid in HELLO must be the key's owner.
            pending.principal = match (owner, &authid) {
                (Some(o), Some(a)) if o != a => None,
                (Some(o), _) => auth.principals.get(o).cloned(),
                (None, _) => None,
            };
            if let Some(p) = &pending.principal {
                pending.authid = p.authid.clone();
            }
            pending.key = key;
            if owner.is_none() && auth.authenticator.is_some() {
                // An unknown key: the authenticator says whose it is, then
                // the challenge proves the client holds it.
                pending.dynamic = true;
                let pubkey = key.map(hex::encode).unwrap_or_default();
                let extra = vec![("pubkey".to_owned(), Value::Str(pubkey))];
                return ask(w, handle, Box::new(pending), extra);
            }
            let raw: [u8; 32] = rand::thread_rng().gen();
            pending.raw = raw.to_vec();
            pending.challenge = hex::encode(raw);
            vec![("challenge".into(), Value::Str(pending.challenge.clone())), ("channel_binding".into(), Value::Null)]
        }
        Method::Anonymous | Method::Tls => unreachable!("opened above"),
    };
    let conn = w.conns[handle].wamp().expect("wamp");
    conn.auth = Some(Box::new(pending));
    send(w, handle, &Msg::Challenge { method: method.name().into(), extra });
}

/// Whether HELLO has what `m` needs: an authid (ticket, WAMP-CRA), a
/// public key (cryptosign).
fn chooses(m: Method, authid: &Option<String>, details: &Dict) -> bool {
    match m {
        Method::Anonymous => true,
        Method::Ticket | Method::Wampcra => authid.as_deref().is_some_and(|a| !a.is_empty()),
        Method::Cryptosign => cryptosign_key(details).is_some(),
        Method::Tls => false,
    }
}

/// The Ed25519 public key a cryptosign HELLO offers (`authextra.pubkey`).
fn cryptosign_key(details: &Dict) -> Option<[u8; 32]> {
    let Some(Value::Dict(extra)) = dict_get(details, "authextra") else { return None };
    crypto::public_key(dict_get(extra, "pubkey")?.as_str()?).ok()
}

/// AUTHENTICATE: the signature is checked against the challenge sent.
pub(super) fn authenticate(w: &mut Shard, handle: usize, signature: String, extra: Dict) {
    let conn = w.conns[handle].wamp().expect("wamp");
    let Some(pending) = conn.auth.take() else {
        return violation(w, handle, "AUTHENTICATE without a CHALLENGE");
    };
    if signature.len() > MAX_SIGNATURE || extra.len() > 64 {
        return violation(w, handle, "AUTHENTICATE too large");
    }
    if pending.dynamic && pending.method == Method::Ticket {
        let extra = vec![("ticket".to_owned(), Value::Str(signature))];
        return ask(w, handle, pending, extra);
    }
    let ok = match (&pending.principal, pending.method) {
        (Some(p), Method::Ticket) => p.ticket_ok(signature.as_bytes()),
        (Some(p), Method::Wampcra) => p.cra_key.as_ref().is_some_and(|key| {
            crypto::ct_eq(crypto::cra_signature(key.as_bytes(), &pending.challenge).as_bytes(), signature.as_bytes())
        }),
        (Some(p), Method::Cryptosign) => pending
            .key
            .filter(|k| p.cryptosign.contains(k))
            .is_some_and(|k| crypto::cryptosign_ok(&k, &pending.raw, &signature)),
        _ => false,
    };
    if !ok {
        if let Some(ip) = peer_ip(w, handle) {
            w.auth_throttle.failed(ip, w.now);
        }
        w.metrics.counters.auth_failed += 1;
        let message = format!("{} authentication failed", pending.method.name());
        log::warn!("worker {}: WAMP {message} for '{}' ({})", w.id, pending.authid, super::conn_peer(w, handle));
        return abort(w, handle, "wamp.error.authentication_failed", &message, CloseReason::Client);
    }
    let p = pending.principal.expect("checked");
    let identity = Identity { authid: p.authid, authrole: p.role, method: pending.method, provider: pending.provider };
    open_session(w, handle, &pending.realm, pending.details, identity, pending.started);
}

/// Asks the realm's authenticator: `(realm, authid, details)`, the
/// details holding `authmethod` and what the client gave (`ticket`, or
/// cryptosign's `pubkey`).
fn ask(w: &mut Shard, handle: usize, pending: Box<PendingAuth>, mut details: Dict) {
    let Some(proc) = pending.realm.auth.authenticator.clone() else { return };
    details.push(("authmethod".into(), Value::Str(pending.method.name().into())));
    let realm: Realm = pending.realm.name.as_str().into();
    let args = vec![Value::Str(pending.realm.name.clone()), Value::Str(pending.authid.clone()), Value::Dict(details)];
    match authorizer::router_call(w, &realm, proc, args) {
        Ok((request, callee)) => {
            let serial = w.conns[handle].serial;
            w.authn_pending.insert(request, Asking { handle, serial, pending, callee });
        }
        Err(why) => {
            let message = format!("the authenticator {why}");
            abort(w, handle, "wamp.error.authentication_failed", &message, CloseReason::Client);
        }
    }
}

/// The authenticator's answer: a role, or `{role, authid}`; an error is a
/// refusal. Ticket: the session opens. Cryptosign: the key is the answer's
/// principal's, and the challenge follows.
pub fn on_authenticator(w: &mut Shard, done: CallDone) {
    let Some(a) = w.authn_pending.remove(&done.request) else { return };
    if !w.conns.get(a.handle).is_some_and(|c| c.serial == a.serial && !c.is_closed()) {
        return;
    }
    let answer = match done.outcome {
        CallOutcome::Result(payload, _) => match payload.values().args.as_ref().and_then(|v| v.first()) {
            Some(Value::Str(role)) => Ok((None, role.clone())),
            Some(Value::Dict(d)) => match dict_get(d, "role").and_then(Value::as_str) {
                Some(role) => Ok((dict_get(d, "authid").and_then(Value::as_str).map(str::to_owned), role.to_owned())),
                None => Err("the authenticator's answer has no role".to_owned()),
            },
            other => Err(format!("the authenticator answered {other:?}, not a role")),
        },
        CallOutcome::Error { error, .. } => Err(format!("the authenticator refused: {error}")),
        CallOutcome::Progress(..) => {
            w.authn_pending.insert(done.request, a);
            return;
        }
    };
    let (authid, role) = match answer {
        Ok(x) => x,
        Err(message) => {
            w.metrics.counters.auth_failed += 1;
            log::warn!("worker {}: WAMP authentication refused by the authenticator: {message}", w.id);
            if let Some(ip) = peer_ip(w, a.handle) {
                w.auth_throttle.failed(ip, w.now);
            }
            return abort(w, a.handle, "wamp.error.authentication_failed", &message, CloseReason::Client);
        }
    };
    let mut pending = a.pending;
    let authid = authid.unwrap_or_else(|| pending.authid.clone());
    pending.provider = "dynamic";
    match pending.method {
        Method::Cryptosign => {
            pending.authid = authid.clone();
            pending.principal = Some(Principal {
                authid,
                role,
                ticket: None,
                cra_key: None,
                cra_salt: None,
                cryptosign: pending.key.into_iter().collect(),
                tls: false,
            });
            let raw: [u8; 32] = rand::thread_rng().gen();
            pending.raw = raw.to_vec();
            pending.challenge = hex::encode(raw);
            let extra = vec![
                ("challenge".into(), Value::Str(pending.challenge.clone())),
                ("channel_binding".into(), Value::Null),
            ];
            let handle = a.handle;
            w.conns[handle].wamp().expect("wamp").auth = Some(pending);
            send(w, handle, &Msg::Challenge { method: "cryptosign".into(), extra });
        }
        _ => {
            let identity = Identity { authid, authrole: role, method: pending.method, provider: "dynamic" };
            open_session(w, a.handle, &pending.realm, pending.details, identity, pending.started);
        }
    }
}

/// The authenticator did not answer in time: refused (and it is told).
pub fn on_authenticator_timeout(w: &mut Shard, request: u64) {
    let Some(a) = w.authn_pending.remove(&request) else { return };
    let caller = SessionRef { worker: w.id, id: authorizer::ROUTER_CALLER };
    let why = Interruption::Timeout;
    w.peers.send(a.callee.worker, ShardMsg::Interrupt { callee: a.callee.id, caller, request, why });
    if w.conns.get(a.handle).is_some_and(|c| c.serial == a.serial && !c.is_closed()) {
        let message = format!("the authenticator did not answer within {} s", authorizer::ANSWER_TIMEOUT.as_secs());
        abort(w, a.handle, "wamp.error.authentication_failed", &message, CloseReason::Client);
    }
}
