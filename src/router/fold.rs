//! The built-in reducers (`[[realm.reducer]]`): a key's new value from its
//! value so far and one event, without a callee. Pure: values in, value out.
//!
//! The event's value is what `keys::value_of` reads from a publication (its
//! one argument, its arguments as a list, its keyword arguments, or an MQTT
//! payload read as JSON), then the rule's `field` path, if it has one
//! (`"a.b"`: field `b` of field `a`). A value so far of another shape than
//! the reducer makes (after a retained publish set it, say) starts over.

use crate::value::Value;
use serde::Deserialize;

/// What a built-in reducer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The sum of the numbers (integers stay integers while they fit).
    Sum,
    /// How many events (with `field`: how many had it).
    Count,
    Min,
    Max,
    /// The last value.
    Last,
    /// The last `limit` values, oldest first.
    Append,
}

/// Default `limit` of `append`, and its bound.
pub const APPEND_LIMIT: usize = 100;
pub const APPEND_MAX: usize = 10_000;

/// `path` ("a.b") in `v`: `None` if a step is missing or not a dict.
pub fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, step| match v {
        Value::Dict(d) => d.iter().find(|(k, _)| k == step).map(|(_, v)| v),
        _ => None,
    })
}

/// The key's next value; `Err` says why the event cannot be folded in
/// (the value stays as it was).
pub fn fold(
    kind: Kind,
    path: Option<&str>,
    limit: usize,
    current: Option<&Value>,
    event: Option<&Value>,
) -> Result<Value, String> {
    let x = match (event, path) {
        (Some(v), Some(p)) => field(v, p),
        (v, None) => v,
        (None, Some(_)) => None,
    };
    let missing = || match path {
        Some(p) => format!("the event has no field '{p}'"),
        None => "the event has no value".to_owned(),
    };
    match kind {
        Kind::Count => {
            let n = current.and_then(Value::as_u64).unwrap_or(0);
            let counted = path.is_none() || x.is_some();
            Ok(Value::UInt(if counted { n + 1 } else { n }))
        }
        Kind::Sum => {
            let x = x.ok_or_else(missing)?;
            let base = current.filter(|c| c.as_f64().is_some()).cloned().unwrap_or(Value::UInt(0));
            add(&base, x).ok_or_else(|| format!("sum: {} is not a number", short(x)))
        }
        Kind::Min | Kind::Max => {
            let x = x.ok_or_else(missing)?;
            let new = x.as_f64().ok_or_else(|| format!("{kind:?}: {} is not a number", short(x)).to_lowercase())?;
            let keep = current.and_then(|c| c.as_f64().map(|n| (c, n))).filter(|&(_, old)| match kind {
                Kind::Min => old <= new,
                _ => old >= new,
            });
            Ok(keep.map_or_else(|| x.clone(), |(c, _)| c.clone()))
        }
        Kind::Last => x.cloned().ok_or_else(missing),
        Kind::Append => {
            let x = x.ok_or_else(missing)?;
            let mut list = match current {
                Some(Value::List(l)) => l.clone(),
                _ => Vec::new(),
            };
            list.push(x.clone());
            let limit = limit.clamp(1, APPEND_MAX);
            if list.len() > limit {
                list.drain(..list.len() - limit);
            }
            Ok(Value::List(list))
        }
    }
}

/// `a + b`: exact for integers while the sum fits, else a float.
fn add(a: &Value, b: &Value) -> Option<Value> {
    let int = |v: &Value| match v {
        Value::UInt(n) => Some(i128::from(*n)),
        Value::Int(n) => Some(i128::from(*n)),
        _ => None,
    };
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        let s = x + y;
        if let Ok(u) = u64::try_from(s) {
            return Some(Value::UInt(u));
        }
        if let Ok(i) = i64::try_from(s) {
            return Some(Value::Int(i));
        }
    }
    Some(Value::Float(a.as_f64()? + b.as_f64()?))
}

fn short(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: serde_json::Value) -> Value {
        serde_json::from_value(j).unwrap()
    }

    /// Folds `events` from no value with the rule; the values after each.
    fn run(kind: Kind, path: Option<&str>, limit: usize, events: &[serde_json::Value]) -> Vec<Result<Value, String>> {
        let mut current: Option<Value> = None;
        events
            .iter()
            .map(|e| {
                let r = fold(kind, path, limit, current.as_ref(), Some(&v(e.clone())));
                if let Ok(n) = &r {
                    current = Some(n.clone());
                }
                r
            })
            .collect()
    }

    fn ok(rs: Vec<Result<Value, String>>) -> Vec<Value> {
        rs.into_iter().map(|r| r.expect("folds")).collect()
    }

    #[test]
    fn sum_stays_exact_for_integers_and_goes_float_when_it_must() {
        let got = ok(run(
            Kind::Sum,
            Some("amount"),
            0,
            &[json!({"amount": 5}), json!({"amount": -7}), json!({"amount": 2.5})],
        ));
        assert_eq!(got, vec![Value::UInt(5), Value::Int(-2), Value::Float(0.5)]);
        let big = ok(run(Kind::Sum, None, 0, &[json!(u64::MAX), json!(1)]));
        assert_eq!(big[1], Value::Float(u64::MAX as f64 + 1.0));
        let bad = run(Kind::Sum, Some("amount"), 0, &[json!({"amount": "5"}), json!({"other": 1})]);
        assert!(bad[0].as_ref().unwrap_err().contains("not a number"));
        assert!(bad[1].as_ref().unwrap_err().contains("no field 'amount'"));
    }

    #[test]
    fn count_min_max_last_append() {
        let events = [json!({"t": {"c": 3}}), json!({"t": {"c": 1}}), json!({"x": 0}), json!({"t": {"c": 2}})];
        assert_eq!(
            ok(run(Kind::Count, None, 0, &events)),
            vec![Value::UInt(1), Value::UInt(2), Value::UInt(3), Value::UInt(4)]
        );
        assert_eq!(
            ok(run(Kind::Count, Some("t.c"), 0, &events)),
            vec![Value::UInt(1), Value::UInt(2), Value::UInt(2), Value::UInt(3)]
        );
        let with_c = [json!({"t": {"c": 3}}), json!({"t": {"c": 1}}), json!({"t": {"c": 2}})];
        assert_eq!(ok(run(Kind::Min, Some("t.c"), 0, &with_c)), vec![Value::UInt(3), Value::UInt(1), Value::UInt(1)]);
        assert_eq!(ok(run(Kind::Max, Some("t.c"), 0, &with_c)), vec![Value::UInt(3), Value::UInt(3), Value::UInt(3)]);
        assert_eq!(ok(run(Kind::Last, Some("t"), 0, &with_c))[2], v(json!({"c": 2})));
        assert_eq!(ok(run(Kind::Append, Some("t.c"), 2, &with_c))[2], v(json!([1, 2])));
        assert!(run(Kind::Min, Some("t.c"), 0, &events)[2].is_err(), "min of an event without the field");
    }

    #[test]
    fn a_value_of_another_shape_starts_over() {
        let current = v(json!("reset"));
        assert_eq!(fold(Kind::Sum, None, 0, Some(&current), Some(&Value::UInt(4))), Ok(Value::UInt(4)));
        assert_eq!(fold(Kind::Count, None, 0, Some(&current), Some(&Value::Null)), Ok(Value::UInt(1)));
        assert_eq!(fold(Kind::Max, None, 0, Some(&current), Some(&Value::Int(-4))), Ok(Value::Int(-4)));
        assert_eq!(fold(Kind::Append, None, 3, Some(&current), Some(&Value::Null)), Ok(Value::List(vec![Value::Null])));
    }
}
