//! Who may join a realm and what they may do there, one set for WAMP and
//! MQTT: the principals (authid, role, the secret of each method) and the
//! roles (permissions by URI), as configured per realm, compiled once at
//! start (`RealmAuth`). Pure: the WAMP handshake that uses it is
//! `wamp/session/auth.rs`, MQTT's is in `mqtt/session/connect.rs`.
//!
//! - `crypto`: WAMP-CRA, PBKDF2, SHA-256, Ed25519, constant-time compare
//!   (`fennec_wamp::auth`, shared with the client library, which signs).
//! - `rules.rs`: a role's permissions and their lookup.

pub use fennec_wamp::auth as crypto;
pub mod rules;

use ahash::AHashMap;
use rules::{Permission, RoleRules};
use serde::Deserialize;
use std::sync::Arc;

/// WAMP authentication methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Anonymous,
    Ticket,
    Wampcra,
    Cryptosign,
    /// A verified TLS client certificate whose common name is the authid.
    Tls,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Anonymous => "anonymous",
            Method::Ticket => "ticket",
            Method::Wampcra => "wampcra",
            Method::Cryptosign => "cryptosign",
            Method::Tls => "tls",
        }
    }

    pub fn from_name(s: &str) -> Option<Method> {
        match s {
            "anonymous" => Some(Method::Anonymous),
            "ticket" => Some(Method::Ticket),
            "wampcra" => Some(Method::Wampcra),
            "cryptosign" => Some(Method::Cryptosign),
            "tls" => Some(Method::Tls),
            _ => None,
        }
    }
}

/// One principal as configured (`[[realm.principal]]`, or in the realm's
/// `principals_file`).
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub authid: String,
    pub role: String,
    /// Ticket (WAMP) and MQTT password, in clear...
    pub ticket: Option<String>,
    /// ...or as its SHA-256, hex.
    pub ticket_sha256: Option<String>,
    /// WAMP-CRA secret, in clear (salted if `cra_salt` is given)...
    pub cra_secret: Option<String>,
    /// ...or, salted, the derived key (base64), so the secret is not in
    /// the file.
    pub cra_key: Option<String>,
    pub cra_salt: Option<String>,
    pub cra_iterations: Option<u32>,
    pub cra_keylen: Option<usize>,
    /// Ed25519 public keys (hex) for cryptosign.
    #[serde(default)]
    pub cryptosign: Vec<String>,
    /// May log in with a verified TLS client certificate whose common
    /// name is the authid (authmethod `tls`; MQTT with `username_from_cert`).
    #[serde(default)]
    pub tls: bool,
}

/// A `principals_file`: `[[principal]]` entries.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PrincipalsFile {
    #[serde(default, rename = "principal")]
    pub principals: Vec<PrincipalConfig>,
}

/// One role as configured (`[[realm.role]]`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    /// A procedure that decides this role's permissions (a dynamic
    /// authorizer), instead of `permission`s.
    pub authorizer: Option<String>,
    #[serde(default, rename = "permission")]
    pub permissions: Vec<Permission>,
}

/// A ticket as the router checks it.
#[derive(Debug, Clone)]
pub enum Ticket {
    Clear(String),
    Sha256(String),
}

/// A salted WAMP-CRA secret: the derived key and how it was derived
/// (sent to the client in the challenge).
#[derive(Debug, Clone)]
pub struct Salted {
    pub salt: String,
    pub iterations: u32,
    pub keylen: usize,
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub authid: String,
    pub role: String,
    pub ticket: Option<Ticket>,
    /// The key the client signs with: the secret, or the derived key.
    pub cra_key: Option<String>,
    pub cra_salt: Option<Salted>,
    pub cryptosign: Vec<[u8; 32]>,
    pub tls: bool,
}

impl Principal {
    /// Whether `given` is this principal's ticket (MQTT: its password).
    pub fn ticket_ok(&self, given: &[u8]) -> bool {
        match &self.ticket {
            Some(Ticket::Clear(t)) => crypto::ct_eq(t.as_bytes(), given),
            Some(Ticket::Sha256(h)) => crypto::ct_eq(h.as_bytes(), crypto::sha256_hex(given).as_bytes()),
            None => false,
        }
    }

    pub fn has(&self, m: Method) -> bool {
        match m {
            Method::Anonymous => false,
            Method::Ticket => self.ticket.is_some(),
            Method::Wampcra => self.cra_key.is_some(),
            Method::Cryptosign => !self.cryptosign.is_empty(),
            Method::Tls => self.tls,
        }
    }
}

/// A realm's authentication and authorization, compiled.
#[derive(Debug)]
pub struct RealmAuth {
    pub allow_anonymous: bool,
    pub anonymous_role: String,
    pub principals: AHashMap<String, Principal>,
    /// Cryptosign public key -> authid.
    pub by_key: AHashMap<[u8; 32], String>,
    /// None: the realm has no roles, and everyone may do everything.
    pub roles: Option<AHashMap<String, Arc<RoleRules>>>,
    /// A procedure that authenticates ticket and cryptosign principals the
    /// configuration does not know (a dynamic authenticator).
    pub authenticator: Option<String>,
}

impl Default for RealmAuth {
    fn default() -> RealmAuth {
        RealmAuth {
            allow_anonymous: true,
            anonymous_role: "anonymous".into(),
            principals: AHashMap::new(),
            by_key: AHashMap::new(),
            roles: None,
            authenticator: None,
        }
    }
}

impl RealmAuth {
    /// Compiles a realm's configuration; `Err` says what is wrong.
    pub fn compile(
        realm: &str,
        allow_anonymous: Option<bool>,
        anonymous_role: Option<&str>,
        principals: &[PrincipalConfig],
        roles: &[RoleConfig],
    ) -> Result<RealmAuth, String> {
        let mut out = RealmAuth {
            // Open unless principals are configured (then only if asked).
            allow_anonymous: allow_anonymous.unwrap_or(principals.is_empty()),
            anonymous_role: anonymous_role.unwrap_or("anonymous").to_owned(),
            ..RealmAuth::default()
        };
        for p in principals {
            let bad = |why: &str| format!("realm '{realm}', principal '{}': {why}", p.authid);
            if p.authid.is_empty() {
                return Err(bad("an empty authid"));
            }
            let ticket = match (&p.ticket, &p.ticket_sha256) {
                (Some(_), Some(_)) => return Err(bad("ticket and ticket_sha256 both given")),
                (Some(t), None) => Some(Ticket::Clear(t.clone())),
                (None, Some(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Some(Ticket::Sha256(h.to_ascii_lowercase()))
                }
                (None, Some(_)) => return Err(bad("ticket_sha256 is not 64 hex digits")),
                (None, None) => None,
            };
            let salted = p.cra_salt.as_ref().map(|salt| Salted {
                salt: salt.clone(),
                iterations: p.cra_iterations.unwrap_or(1000),
                keylen: p.cra_keylen.unwrap_or(32),
            });
            let cra_key = match (&p.cra_secret, &p.cra_key, &salted) {
                (Some(_), Some(_), _) => return Err(bad("cra_secret and cra_key both given")),
                (Some(s), None, None) => Some(s.clone()),
                (Some(s), None, Some(salt)) => {
                    Some(crypto::derive_cra_key(s, &salt.salt, salt.iterations, salt.keylen))
                }
                (None, Some(k), Some(_)) => Some(k.clone()),
                (None, Some(_), None) => return Err(bad("cra_key (a derived key) needs cra_salt")),
                (None, None, _) => None,
            };
            let mut keys = Vec::new();
            for k in &p.cryptosign {
                let key = crypto::public_key(k).map_err(|e| bad(&e))?;
                if let Some(other) = out.by_key.insert(key, p.authid.clone()) {
                    return Err(bad(&format!("its cryptosign key is also {other}'s")));
                }
                keys.push(key);
            }
            let principal = Principal {
                authid: p.authid.clone(),
                role: p.role.clone(),
                ticket,
                cra_key,
                cra_salt: salted,
                cryptosign: keys,
                tls: p.tls,
            };
            if out.principals.insert(p.authid.clone(), principal).is_some() {
                return Err(bad("a second principal with this authid"));
            }
        }
        if !roles.is_empty() {
            let mut compiled = AHashMap::new();
            for r in roles {
                let mut rules = RoleRules::compile(&r.permissions)
                    .map_err(|e| format!("realm '{realm}', role '{}': {e}", r.name))?;
                rules.authorizer = r.authorizer.clone();
                compiled.insert(r.name.clone(), Arc::new(rules));
            }
            out.roles = Some(compiled);
        }
        Ok(out)
    }

    /// The rules of a role: `None` when the realm has no roles (all
    /// allowed); an unknown role gets empty rules (nothing allowed).
    pub fn rules_of(&self, role: &str) -> Option<Arc<RoleRules>> {
        let roles = self.roles.as_ref()?;
        Some(roles.get(role).cloned().unwrap_or_default())
    }

    /// Whether this realm offers a method.
    pub fn offers(&self, m: Method) -> bool {
        match m {
            Method::Anonymous => self.allow_anonymous,
            Method::Ticket | Method::Cryptosign if self.authenticator.is_some() => true,
            _ => self.principals.values().any(|p| p.has(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(authid: &str) -> PrincipalConfig {
        PrincipalConfig { authid: authid.into(), role: "user".into(), ..Default::default() }
    }

    #[test]
    fn principals_compile_and_check() {
        let t = PrincipalConfig { ticket: Some("s3cret".into()), ..principal("t") };
        let h = PrincipalConfig { ticket_sha256: Some(crypto::sha256_hex(b"pw")), ..principal("h") };
        let c = PrincipalConfig { cra_secret: Some("secret".into()), cra_salt: Some("salt".into()), ..principal("c") };
        let a = RealmAuth::compile("r", None, None, &[t, h, c], &[]).unwrap();
        assert!(!a.allow_anonymous, "principals close the realm to anonymous unless asked");
        assert!(a.principals["t"].ticket_ok(b"s3cret") && !a.principals["t"].ticket_ok(b"s3cre"));
        assert!(a.principals["h"].ticket_ok(b"pw") && !a.principals["h"].ticket_ok(b"pW"));
        assert_eq!(a.principals["c"].cra_key.as_deref(), Some("qN+JnzxPIE2WfgrWPAkph8EAVeuwF7PZ0ordIY1Peq0="));
        assert!(a.offers(Method::Wampcra) && a.offers(Method::Ticket) && !a.offers(Method::Cryptosign));
        assert!(a.rules_of("user").is_none(), "no roles: all allowed");
        let bad = PrincipalConfig { ticket: Some("a".into()), ticket_sha256: Some("b".into()), ..principal("x") };
        assert!(RealmAuth::compile("r", None, None, &[bad], &[]).is_err());
        let dup = [principal("d"), principal("d")];
        assert!(RealmAuth::compile("r", None, None, &dup, &[]).is_err());
        let role = RoleConfig { name: "x".into(), authorizer: None, permissions: vec![] };
        let open = RealmAuth::compile("r", None, None, &[], &[role]).unwrap();
        assert!(open.allow_anonymous);
        assert!(open.rules_of("unknown").is_some_and(|r| !r.lookup("a").publish), "an unknown role may do nothing");
    }
}
