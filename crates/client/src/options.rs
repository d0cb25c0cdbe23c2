//! Typed options for PUBLISH, SUBSCRIBE, CALL and REGISTER: WAMP's and
//! Fennec's (fox-wamp's key options), each a method that sets one entry
//! of the message's options dictionary. Every `_with` method of
//! [`Client`](crate::Client) takes these or a plain [`Dict`], so an option
//! this list does not name can still be sent ([`PublishOptions::set`] and
//! the like).

use fennec_wamp::value::{Dict, Value};
use std::time::Duration;

/// How a subscription's or registration's URI matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The URI itself (the default).
    Exact,
    /// Every URI that starts with it.
    Prefix,
    /// Every URI with the same components where it has them (`a..c`).
    Wildcard,
}

impl Match {
    fn as_str(self) -> &'static str {
        match self {
            Match::Exact => "exact",
            Match::Prefix => "prefix",
            Match::Wildcard => "wildcard",
        }
    }
}

/// Which callee of a shared registration gets a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invoke {
    /// One callee only: a second registration is refused (the default).
    Single,
    /// Each in turn.
    RoundRobin,
    /// One at random.
    Random,
    /// The first that registered.
    First,
    /// The last that registered.
    Last,
}

impl Invoke {
    fn as_str(self) -> &'static str {
        match self {
            Invoke::Single => "single",
            Invoke::RoundRobin => "roundrobin",
            Invoke::Random => "random",
            Invoke::First => "first",
            Invoke::Last => "last",
        }
    }
}

fn ids(ids: &[u64]) -> Value {
    Value::List(ids.iter().map(|&i| Value::UInt(i)).collect())
}

fn strings(s: &[&str]) -> Value {
    Value::List(s.iter().map(|&s| Value::Str(s.into())).collect())
}

/// Sets `key` to `value`, replacing an earlier setting.
fn put(d: &mut Dict, key: &str, value: Value) {
    match d.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => d.push((key.to_owned(), value)),
    }
}

macro_rules! options_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name(Dict);

        impl $name {
            /// No options.
            pub fn new() -> $name {
                $name(Dict::new())
            }

            /// Sets any option by its WAMP name.
            pub fn set(mut self, key: &str, value: Value) -> $name {
                put(&mut self.0, key, value);
                self
            }
        }

        impl From<$name> for Dict {
            fn from(o: $name) -> Dict {
                o.0
            }
        }
    };
}

options_type!(
    /// Options of a PUBLISH.
    PublishOptions
);
options_type!(
    /// Options of a SUBSCRIBE.
    SubscribeOptions
);
options_type!(
    /// Options of a CALL.
    CallOptions
);
options_type!(
    /// Options of a REGISTER.
    RegisterOptions
);

impl PublishOptions {
    /// Whether the publisher gets its own event if it is subscribed
    /// (WAMP's default: not).
    pub fn exclude_me(self, exclude: bool) -> PublishOptions {
        self.set("exclude_me", Value::Bool(exclude))
    }

    /// Only these sessions get the event.
    pub fn eligible(self, sessions: &[u64]) -> PublishOptions {
        self.set("eligible", ids(sessions))
    }

    /// These sessions do not get the event.
    pub fn exclude(self, sessions: &[u64]) -> PublishOptions {
        self.set("exclude", ids(sessions))
    }

    /// Only sessions with these authids get the event.
    pub fn eligible_authid(self, authids: &[&str]) -> PublishOptions {
        self.set("eligible_authid", strings(authids))
    }

    /// Sessions with these authids do not get the event.
    pub fn exclude_authid(self, authids: &[&str]) -> PublishOptions {
        self.set("exclude_authid", strings(authids))
    }

    /// Asks the router to name the publisher to subscribers.
    pub fn disclose_me(self, disclose: bool) -> PublishOptions {
        self.set("disclose_me", Value::Bool(disclose))
    }

    /// Keeps the event as the topic's retained value, for `ttl` (`None`:
    /// as long as it is not replaced). Fennec's key options build on it.
    pub fn retain(self, ttl: Option<Duration>) -> PublishOptions {
        self.set("retain", Value::UInt(ttl.map_or(0, |t| t.as_secs().max(1))))
    }

    /// Fennec (fox-wamp): write only if the key's value meets `condition`
    /// (`Value::Null`: the key has no value; an empty dictionary: it has
    /// one; a dictionary of fields: each is there and meets its value;
    /// any other value: the value equals it).
    pub fn when(self, condition: Value) -> PublishOptions {
        self.set("when", condition)
    }

    /// Fennec (fox-wamp): with [`PublishOptions::when`], a write whose
    /// condition fails waits until a change of the key makes it hold (a
    /// lock).
    pub fn watch(self, watch: bool) -> PublishOptions {
        self.set("watch", Value::Bool(watch))
    }

    /// Fennec (fox-wamp): ties the key to this session; when it ends, the
    /// key becomes `value` (`Value::Null`: deleted).
    pub fn will(self, value: Value) -> PublishOptions {
        self.set("will", value)
    }

    /// Fennec (fox-wamp): stores the value under a new key
    /// `<topic>.<publication id>`.
    pub fn sequence(self, sequence: bool) -> PublishOptions {
        self.set("sequence", Value::Bool(sequence))
    }
}

impl SubscribeOptions {
    /// How the topic matches.
    pub fn match_policy(self, m: Match) -> SubscribeOptions {
        self.set("match", Value::Str(m.as_str().into()))
    }

    /// First the retained values of the matching topics, then live events.
    pub fn get_retained(self, get: bool) -> SubscribeOptions {
        self.set("get_retained", Value::Bool(get))
    }

    /// Fennec (fox-wamp): first the history after this publication, then
    /// live events.
    pub fn after(self, publication: u64) -> SubscribeOptions {
        self.set("after", Value::UInt(publication))
    }
}

impl CallOptions {
    /// The router cancels the call after `timeout` (interrupting the
    /// callee) and answers `wamp.error.timeout`.
    pub fn timeout(self, timeout: Duration) -> CallOptions {
        self.set("timeout", Value::UInt(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1)))
    }

    /// Asks the router to name the caller to the callee.
    pub fn disclose_me(self, disclose: bool) -> CallOptions {
        self.set("disclose_me", Value::Bool(disclose))
    }

    /// A progressive call: the call's arguments are its first input, and
    /// [`Call::send`](crate::Call::send) sends the rest (with
    /// [`Client::start_call`](crate::Client::start_call)).
    pub fn progressive(self) -> CallOptions {
        self.set("progress", Value::Bool(true))
    }
}

impl RegisterOptions {
    /// How the procedure matches.
    pub fn match_policy(self, m: Match) -> RegisterOptions {
        self.set("match", Value::Str(m.as_str().into()))
    }

    /// How calls are shared among the callees of the procedure.
    pub fn invoke(self, policy: Invoke) -> RegisterOptions {
        self.set("invoke", Value::Str(policy.as_str().into()))
    }

    /// Asks the router to name the caller of each call.
    pub fn disclose_caller(self, disclose: bool) -> RegisterOptions {
        self.set("disclose_caller", Value::Bool(disclose))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_option_is_one_entry_and_a_later_setting_wins() {
        let d: Dict = PublishOptions::new().exclude_me(false).retain(None).exclude_me(true).into();
        assert_eq!(d, vec![("exclude_me".into(), Value::Bool(true)), ("retain".into(), Value::UInt(0))]);
        let d: Dict = CallOptions::new().timeout(Duration::from_millis(250)).progressive().into();
        assert_eq!(d, vec![("timeout".into(), Value::UInt(250)), ("progress".into(), Value::Bool(true))]);
        let d: Dict = RegisterOptions::new().match_policy(Match::Prefix).invoke(Invoke::RoundRobin).into();
        assert_eq!(d[1], ("invoke".into(), Value::Str("roundrobin".into())));
        let d: Dict = SubscribeOptions::new().set("custom", Value::Null).after(9).into();
        assert_eq!(d, vec![("custom".into(), Value::Null), ("after".into(), Value::UInt(9))]);
    }
}
