//! Joining a realm: HELLO with the client's roles and authentication
//! method, the router's CHALLENGE answered (ticket, WAMP-CRA with or
//! without salt, cryptosign), WELCOME or ABORT. Blocking, over a
//! transport with a read timeout, before the connection's thread starts
//! (and again on each reconnection). The signing is `fennec_wamp::auth`,
//! the code the router checks with.

use crate::error::{Error, Result};
use crate::transport::{Recv, Transport};
use fennec_wamp::auth;
use fennec_wamp::message::{decode_lenient, encode, Msg};
use fennec_wamp::value::{dict_get, Dict, Value};

/// How a session authenticates.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication (the router's anonymous role).
    #[default]
    Anonymous,
    /// WAMP ticket: an authid and its ticket (password).
    Ticket {
        /// Who the session authenticates as.
        authid: String,
        /// Its secret.
        ticket: String,
    },
    /// WAMP-CRA: the router's challenge signed with the secret (HMAC-SHA256),
    /// or with the key derived from it (PBKDF2) when the router sends a
    /// salt.
    WampCra {
        /// Who the session authenticates as.
        authid: String,
        /// Its secret.
        secret: String,
    },
    /// Cryptosign: the router's challenge signed with an Ed25519 key.
    Cryptosign {
        /// Who the session authenticates as.
        authid: String,
        /// The private key's 32-byte seed (the public key, announced in
        /// HELLO, is derived from it).
        seed: [u8; 32],
    },
}

impl Auth {
    /// The hex public key of a cryptosign seed: what the router's
    /// principal lists (`cryptosign = ["..."]`).
    pub fn cryptosign_public_key(seed: &[u8; 32]) -> String {
        auth::cryptosign_public_key(seed)
    }

    fn method(&self) -> Option<(&'static str, &str)> {
        match self {
            Auth::Anonymous => None,
            Auth::Ticket { authid, .. } => Some(("ticket", authid)),
            Auth::WampCra { authid, .. } => Some(("wampcra", authid)),
            Auth::Cryptosign { authid, .. } => Some(("cryptosign", authid)),
        }
    }

    /// The AUTHENTICATE signature for a CHALLENGE of `method`.
    fn answer(&self, method: &str, extra: &Dict) -> Result<String> {
        let field = |name: &str| dict_get(extra, name);
        match (method, self) {
            ("ticket", Auth::Ticket { ticket, .. }) => Ok(ticket.clone()),
            ("wampcra", Auth::WampCra { secret, .. }) => {
                let challenge = field("challenge")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Protocol("a WAMP-CRA challenge without its challenge string".into()))?;
                let key = match field("salt").and_then(Value::as_str) {
                    None => secret.clone(),
                    Some(salt) => {
                        let number = |name, default| field(name).and_then(Value::as_u64).unwrap_or(default);
                        let iterations = u32::try_from(number("iterations", 1000)).unwrap_or(u32::MAX);
                        let keylen = usize::try_from(number("keylen", 32).min(1024)).unwrap_or(32);
                        auth::derive_cra_key(secret, salt, iterations, keylen)
                    }
                };
                Ok(auth::cra_signature(key.as_bytes(), challenge))
            }
            ("cryptosign", Auth::Cryptosign { seed, .. }) => {
                let challenge = field("challenge")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Protocol("a cryptosign challenge without its challenge".into()))?;
                auth::cryptosign_sign(seed, challenge).map_err(Error::Protocol)
            }
            _ => Err(Error::Protocol(format!("the router asked for {method}, which this client was not given"))),
        }
    }
}

/// Whether the router announced `feature` of `role` in its WELCOME.
pub(crate) fn feature(welcome: &Dict, role: &str, feature: &str) -> bool {
    let features = dict_get(welcome, "roles")
        .and_then(Value::as_dict)
        .and_then(|roles| dict_get(roles, role))
        .and_then(Value::as_dict)
        .and_then(|r| dict_get(r, "features"))
        .and_then(Value::as_dict);
    features.and_then(|f| dict_get(f, feature)).and_then(Value::as_bool) == Some(true)
}

/// The features this client implements, per role, as HELLO announces them.
const FEATURES: [(&str, &[&str]); 4] = [
    ("publisher", &["publisher_exclusion", "subscriber_blackwhite_listing"]),
    ("subscriber", &["pattern_based_subscription"]),
    ("caller", &["call_canceling", "call_timeout", "progressive_call_results", "progressive_call_invocations"]),
    (
        "callee",
        &["call_canceling", "progressive_call_results", "progressive_call_invocations", "pattern_based_registration"],
    ),
];

/// HELLO, the challenge if the router asks one, WELCOME (the session ID
/// and its details) or ABORT.
pub(crate) fn join(t: &mut Transport, realm: &str, auth: &Auth) -> Result<(u64, Dict)> {
    let roles = FEATURES
        .iter()
        .map(|(role, features)| {
            let features: Dict = features.iter().map(|f| ((*f).to_owned(), Value::Bool(true))).collect();
            ((*role).to_owned(), Value::Dict(vec![("features".to_owned(), Value::Dict(features))]))
        })
        .collect();
    let mut details = vec![("roles".to_owned(), Value::Dict(roles))];
    details.push(("agent".into(), Value::Str(concat!("fennec-client-", env!("CARGO_PKG_VERSION")).into())));
    if let Some((method, authid)) = auth.method() {
        details.push(("authmethods".into(), Value::List(vec![Value::Str(method.into())])));
        details.push(("authid".into(), Value::Str(authid.into())));
    }
    if let Auth::Cryptosign { seed, .. } = auth {
        let pubkey = Value::Str(auth::cryptosign_public_key(seed));
        details.push(("authextra".into(), Value::Dict(vec![("pubkey".into(), pubkey)])));
    }
    write(t, &Msg::Hello { realm: realm.into(), details })?;
    loop {
        match read(t)? {
            Msg::Welcome { session, details } => return Ok((session, details)),
            Msg::Abort { details, reason } => {
                let message = dict_get(&details, "message").and_then(Value::as_str).map(str::to_owned);
                return Err(Error::Aborted { reason, message });
            }
            Msg::Challenge { method, extra } => {
                let signature = auth.answer(&method, &extra)?;
                write(t, &Msg::Authenticate { signature, extra: Dict::new() })?
            }
            other => return Err(Error::Protocol(format!("{other:?} before WELCOME"))),
        }
    }
}

fn write(t: &mut Transport, msg: &Msg) -> Result<()> {
    let mut bytes = Vec::new();
    encode(t.ser, msg, &mut bytes);
    t.send(bytes)?;
    while !t.flush()? {}
    Ok(())
}

fn read(t: &mut Transport) -> Result<Msg> {
    match t.recv() {
        Recv::Message(bytes) => decode_lenient(t.ser, &bytes).map_err(|e| Error::Protocol(e.0)),
        Recv::Empty => Err(Error::Timeout(Some("no answer from the router while joining".into()))),
        Recv::Closed => Err(Error::Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_each_challenge_as_the_router_checks_it() {
        let s = |v: &str| Value::Str(v.into());
        let cra = Auth::WampCra { authid: "a".into(), secret: "secret".into() };
        let plain = vec![("challenge".to_owned(), s("challenge"))];
        assert_eq!(cra.answer("wampcra", &plain).unwrap(), auth::cra_signature(b"secret", "challenge"));
        let salted = vec![
            ("challenge".to_owned(), s("challenge")),
            ("salt".to_owned(), s("salt")),
            ("iterations".to_owned(), Value::UInt(1000)),
            ("keylen".to_owned(), Value::UInt(32)),
        ];
        // autobahn's derive_key("secret", "salt") and its signature.
        assert_eq!(cra.answer("wampcra", &salted).unwrap(), "v+jLKn4z4EG3UX2nCKg5DrPh7e8YfZ0vNdM7IH72rlg=");
        assert!(cra.answer("ticket", &plain).is_err(), "a method the client was not given");
        let cs = Auth::Cryptosign { authid: "a".into(), seed: [1; 32] };
        let challenge = "ab".repeat(32);
        let answer = cs.answer("cryptosign", &vec![("challenge".to_owned(), s(&challenge))]).unwrap();
        let key = auth::public_key(&auth::cryptosign_public_key(&[1; 32])).unwrap();
        assert!(auth::cryptosign_ok(&key, &[0xab; 32], &answer));
        assert!(cs.answer("cryptosign", &vec![]).is_err());
    }
}
