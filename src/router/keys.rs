//! fox-wamp's key conditions (PUBLISH `when`, subscribe `filter`), pure:
//! what a stored value is, and whether it meets a condition.
//!
//! - `null`: the key must not exist (or be empty);
//! - `{}`: it must exist;
//! - a dictionary: every listed field is present and meets the listed
//!   value (recursively); fields not listed are not looked at;
//! - anything else: the value equals it (numbers by value: 1, 1.0 and an
//!   unsigned 1 are equal).
//!
//! A condition against a value of another shape is simply not met (fox-wamp
//! closes the publisher's connection there). Values are compared as
//! replaced, never merged (fox-wamp's deep merge corrupts scalars and
//! arrays; Fennec stores the publication as it came).

use super::Body;
use crate::value::Value;

/// The value a publication body stands for: its one argument, or its
/// arguments as a list, or its keyword arguments when it has no
/// arguments; MQTT bytes read as JSON, else as a UTF-8 string. `None`:
/// the empty body (no value).
pub fn value_of(body: &Body) -> Option<Value> {
    match body {
        Body::Wamp(p) => match (p.values().args.as_deref(), &p.values().kwargs) {
            (Some([one]), None) => Some(one.clone()),
            (Some([]) | None, Some(k)) if !k.is_empty() => Some(Value::Dict(k.clone())),
            (Some([]) | None, _) => None,
            (Some(many), _) => Some(Value::List(many.to_vec())),
        },
        Body::Mqtt(b) if b.is_empty() => None,
        Body::Mqtt(b) => Some(
            serde_json::from_slice::<Value>(b).unwrap_or_else(|_| Value::Str(String::from_utf8_lossy(b).into_owned())),
        ),
    }
}

/// Whether `current` (the key's value, `None` if it has none) meets `cond`.
pub fn fits(cond: &Value, current: Option<&Value>) -> bool {
    match (cond, current) {
        (Value::Null, None) | (Value::Null, Some(Value::Null)) => true,
        (Value::Null, Some(_)) => false,
        (_, None) => false,
        (Value::Dict(want), Some(have)) => {
            let Value::Dict(have) = have else { return want.is_empty() };
            want.iter().all(|(k, w)| {
                let h = have.iter().find(|(hk, _)| hk == k).map(|(_, v)| v);
                match (w, h) {
                    // A listed null field must be absent or null.
                    (Value::Null, h) => h.is_none_or(|v| *v == Value::Null),
                    (w, h) => fits(w, h),
                }
            })
        }
        (want, Some(have)) => same(want, have),
    }
}

/// A condition as canonical JSON (dictionary keys sorted, recursively), so
/// that equal filters name one subscription.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Dict(d) => {
                let mut d: Vec<(String, Value)> = d.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
                d.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Dict(d)
            }
            Value::List(l) => Value::List(l.iter().map(sorted).collect()),
            v => v.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).expect("a value always encodes")
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
            (Value::Dict(x), Value::Dict(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.iter().any(|(k2, v2)| k == k2 && same(v, v2)))
            }
            _ => a == b,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;

    fn d(pairs: &[(&str, Value)]) -> Value {
        Value::Dict(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    #[test]
    fn conditions() {
        let s = |x: &str| Value::Str(x.into());
        // fox-wamp's test 01 cases, with strict types.
        assert!(fits(&Value::Null, None));
        assert!(fits(&Value::UInt(1), Some(&Value::UInt(1))));
        assert!(!fits(&Value::UInt(1), Some(&Value::UInt(2))));
        assert!(fits(
            &d(&[("field1", Value::UInt(1))]),
            Some(&d(&[("field1", Value::UInt(1)), ("field2", Value::UInt(2))]))
        ));
        assert!(!fits(&d(&[("field", Value::UInt(1))]), Some(&d(&[("field", s("2"))]))));
        // Existence, absence, shapes.
        assert!(fits(&d(&[]), Some(&s("anything"))));
        assert!(!fits(&d(&[]), None));
        assert!(!fits(&Value::Null, Some(&Value::UInt(0))));
        assert!(!fits(&d(&[("a", Value::UInt(1))]), Some(&s("a string"))), "another shape fails, never panics");
        assert!(fits(
            &d(&[("a", d(&[("b", Value::Bool(true))]))]),
            Some(&d(&[("a", d(&[("b", Value::Bool(true)), ("c", Value::Null)]))]))
        ));
        assert!(fits(&d(&[("gone", Value::Null)]), Some(&d(&[("x", Value::UInt(1))]))));
        assert!(fits(&Value::Float(1.0), Some(&Value::UInt(1))));
        assert!(fits(&Value::List(vec![Value::Int(-1)]), Some(&Value::List(vec![Value::Float(-1.0)]))));
    }

    #[test]
    fn canonical_filters() {
        let a = d(&[("b", Value::UInt(1)), ("a", d(&[("y", Value::Null), ("x", Value::Bool(true))]))]);
        let b = d(&[("a", d(&[("x", Value::Bool(true)), ("y", Value::Null)])), ("b", Value::UInt(1))]);
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":{"x":true,"y":null},"b":1}"#);
        let back: Value = serde_json::from_str(&canonical(&a)).unwrap();
        assert!(fits(&back, Some(&b)));
    }

    #[test]
    fn values_of_bodies() {
        let one = Payload::args(vec![Value::UInt(5)]);
        assert_eq!(value_of(&Body::Wamp(one)), Some(Value::UInt(5)));
        let kw = Payload::new(None, Some(vec![("a".into(), Value::UInt(1))]));
        assert_eq!(value_of(&Body::Wamp(kw)), Some(d(&[("a", Value::UInt(1))])));
        assert_eq!(value_of(&Body::Wamp(Payload::default())), None);
        assert_eq!(value_of(&Body::Mqtt(bytes::Bytes::from_static(br#"{"a":1}"#))), Some(d(&[("a", Value::UInt(1))])));
        assert_eq!(value_of(&Body::Mqtt(bytes::Bytes::from_static(b"on"))), Some(Value::Str("on".into())));
        assert_eq!(value_of(&Body::Mqtt(bytes::Bytes::new())), None);
    }
}
