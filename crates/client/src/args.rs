//! Arguments: positional and keyword values, to and from Rust types with
//! serde.

use crate::error::{Error, Result};
use fennec_wamp::payload::Payload;
use fennec_wamp::value::{Dict, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A message's arguments: positional (`args`) and keyword (`kwargs`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Dict,
}

impl Args {
    /// No arguments.
    pub fn none() -> Args {
        Args::default()
    }

    /// Positional arguments from a Rust value: a tuple or a sequence gives
    /// one argument per element (`(2, 3)` is two), `()` none, anything
    /// else one.
    pub fn from<T: Serialize>(value: T) -> Result<Args> {
        let args = match to_value(&value)? {
            Value::List(items) => items,
            Value::Null => Vec::new(),
            other => vec![other],
        };
        Ok(Args { args, kwargs: Dict::new() })
    }

    /// Adds a keyword argument.
    pub fn kwarg<T: Serialize>(mut self, key: &str, value: T) -> Result<Args> {
        self.kwargs.push((key.to_owned(), to_value(&value)?));
        Ok(self)
    }

    /// Positional argument `i` as a `T`.
    pub fn get<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        let v = self.args.get(i).ok_or_else(|| Error::Serde(format!("no argument {i}")))?;
        from_value(v)
    }

    /// The positional arguments as one `T` (a tuple, a `Vec`, a struct
    /// read from a sequence).
    pub fn to<T: DeserializeOwned>(&self) -> Result<T> {
        from_value(&Value::List(self.args.clone()))
    }

    /// Keyword argument `key` as a `T`.
    pub fn kw<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self
            .kwargs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Serde(format!("no keyword argument '{key}'")))?;
        from_value(v)
    }

    pub(crate) fn payload(self) -> Payload {
        let args = (!self.args.is_empty() || !self.kwargs.is_empty()).then_some(self.args);
        let kwargs = (!self.kwargs.is_empty()).then_some(self.kwargs);
        Payload::new(args, kwargs)
    }

    pub(crate) fn of(payload: Payload) -> Args {
        let v = payload.into_values();
        Args { args: v.args.unwrap_or_default(), kwargs: v.kwargs.unwrap_or_default() }
    }
}

/// A Rust value as a WAMP [`Value`] (through MessagePack, which keeps
/// integers, floats and byte strings apart, as `Value` does; a struct
/// becomes a dictionary of its fields).
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    // Named: a struct becomes a dictionary, as a reader in any language expects.
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| Error::Serde(e.to_string()))?;
    rmp_serde::from_slice(&bytes).map_err(|e| Error::Serde(e.to_string()))
}

/// A WAMP [`Value`] as a Rust value.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T> {
    let bytes = rmp_serde::to_vec(value).map_err(|e| Error::Serde(e.to_string()))?;
    rmp_serde::from_slice(&bytes).map_err(|e| Error::Serde(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_are_positional_arguments() {
        let a = Args::from((2, "x", vec![1.5])).unwrap();
        assert_eq!(a.args, vec![Value::UInt(2), Value::Str("x".into()), Value::List(vec![Value::Float(1.5)])]);
        assert_eq!(a.get::<i32>(0).unwrap(), 2);
        assert_eq!(a.to::<(u8, String, Vec<f64>)>().unwrap(), (2, "x".into(), vec![1.5]));
        assert!(Args::from(()).unwrap().args.is_empty());
        assert_eq!(Args::from(-7i64).unwrap().args, vec![Value::Int(-7)]);
        let k = Args::none().kwarg("n", 3).unwrap();
        assert_eq!(k.kw::<u32>("n").unwrap(), 3);
        assert!(matches!(k.kw::<u32>("m"), Err(Error::Serde(_))));
        assert!(matches!(a.get::<String>(0), Err(Error::Serde(_))));
    }
}
