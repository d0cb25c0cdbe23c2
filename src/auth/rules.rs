//! A role's permissions, compiled for lookup: per URI the most specific
//! rule wins, with the precedence of pattern registrations (exact, then
//! the longest prefix, then the wildcard pattern with the longest fixed
//! runs). Pure: no I/O, no session state.

use ahash::AHashMap;
use serde::Deserialize;

/// What a rule allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub call: bool,
    pub register: bool,
    pub publish: bool,
    pub subscribe: bool,
    /// The caller is disclosed to callees / the publisher to subscribers,
    /// whatever it asks.
    pub disclose_caller: bool,
    pub disclose_publisher: bool,
}

impl Perms {
    pub const ALL: Perms = Perms {
        call: true,
        register: true,
        publish: true,
        subscribe: true,
        disclose_caller: false,
        disclose_publisher: false,
    };

    pub fn allows(&self, action: Action) -> bool {
        match action {
            Action::Call => self.call,
            Action::Register => self.register,
            Action::Publish => self.publish,
            Action::Subscribe => self.subscribe,
        }
    }
}

/// An action a session asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Call,
    Register,
    Publish,
    Subscribe,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Call => "call",
            Action::Register => "register",
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// One permission as written in the config (`[[realm.role.permission]]`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub uri: String,
    #[serde(rename = "match", default = "exact")]
    pub policy: String,
    #[serde(default)]
    pub call: bool,
    #[serde(default)]
    pub register: bool,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub disclose_caller: bool,
    #[serde(default)]
    pub disclose_publisher: bool,
}

fn exact() -> String {
    "exact".into()
}

/// A role's rules, ready for lookup.
#[derive(Debug, Default)]
pub struct RoleRules {
    exact: AHashMap<String, Perms>,
    /// Longest first.
    prefix: Vec<(String, Perms)>,
    /// Components (`""`: any one component) and the rule, most specific first.
    wildcard: Vec<(Vec<String>, Perms)>,
    /// A procedure decides instead (a dynamic authorizer).
    pub authorizer: Option<String>,
}

impl RoleRules {
    /// Compiles a role's permissions; `Err` names a bad one.
    pub fn compile(perms: &[Permission]) -> Result<RoleRules, String> {
        let mut r = RoleRules::default();
        for p in perms {
            let set = Perms {
                call: p.call,
                register: p.register,
                publish: p.publish,
                subscribe: p.subscribe,
                disclose_caller: p.disclose_caller,
                disclose_publisher: p.disclose_publisher,
            };
            match p.policy.as_str() {
                "exact" => {
                    r.exact.insert(p.uri.clone(), set);
                }
                "prefix" => r.prefix.push((p.uri.clone(), set)),
                "wildcard" => r.wildcard.push((p.uri.split('.').map(str::to_owned).collect(), set)),
                other => {
                    return Err(format!("permission '{}': unknown match '{other}' (exact, prefix, wildcard)", p.uri))
                }
            }
        }
        r.prefix.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        // Most specific first: the longest run of fixed components from the
        // left, then the most fixed components (the registrations' rule).
        r.wildcard.sort_by_key(|(parts, _)| {
            let lead = parts.iter().take_while(|c| !c.is_empty()).count();
            let fixed = parts.iter().filter(|c| !c.is_empty()).count();
            std::cmp::Reverse((lead, fixed))
        });
        Ok(r)
    }

    /// The permissions for `uri` (nothing allowed if no rule covers it).
    pub fn lookup(&self, uri: &str) -> Perms {
        if let Some(p) = self.exact.get(uri) {
            return *p;
        }
        if let Some((_, p)) = self.prefix.iter().find(|(pre, _)| uri.starts_with(pre.as_str())) {
            return *p;
        }
        if !self.wildcard.is_empty() {
            let n = uri.split('.').count();
            for (parts, p) in &self.wildcard {
                if parts.len() == n && parts.iter().zip(uri.split('.')).all(|(r, c)| r.is_empty() || r == c) {
                    return *p;
                }
            }
        }
        Perms::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(uri: &str, policy: &str, publish: bool, subscribe: bool) -> Permission {
        Permission {
            uri: uri.into(),
            policy: policy.into(),
            call: false,
            register: false,
            publish,
            subscribe,
            disclose_caller: false,
            disclose_publisher: false,
        }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let r = RoleRules::compile(&[
            perm("", "prefix", false, true),
            perm("public.", "prefix", true, true),
            perm("public.secret", "exact", false, false),
            perm("room..messages", "wildcard", true, false),
            perm("room.lobby.", "prefix", false, false),
            perm("..messages", "wildcard", false, true),
        ])
        .unwrap();
        assert!(r.lookup("a.b").subscribe && !r.lookup("a.b").publish, "the catch-all prefix");
        assert!(r.lookup("public.news").publish);
        assert_eq!(r.lookup("public.secret"), Perms::default(), "exact beats prefix");
        assert!(!r.lookup("room.x.messages").publish, "any prefix, even the empty one, beats a wildcard");
        assert!(!r.lookup("room.lobby.messages").publish);
        let narrow = RoleRules::compile(&[
            perm("..messages", "wildcard", false, true),
            perm("room..messages", "wildcard", true, false),
        ])
        .unwrap();
        assert!(narrow.lookup("room.y.messages").publish, "the longer fixed run first");
        assert!(narrow.lookup("hall.y.messages").subscribe);
        assert_eq!(narrow.lookup("room.y"), Perms::default(), "nothing covers it");
        assert!(RoleRules::compile(&[perm("a", "regex", true, true)]).is_err());
    }
}
