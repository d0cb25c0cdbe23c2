//! Exact decimal numbers for the aggregate tables: a total of invoice
//! amounts must come out to the cent however many rows are added and taken
//! back, which floating point does not promise. A number is an `i128`
//! mantissa and a count of decimal places (at most `MAX_SCALE`); sums and
//! differences are exact and keep the most places of their operands
//! ("12.50" + "0.5" = "13.00"), and a result that would not fit is an
//! error, not a rounded value.
//!
//! Written here rather than taken from a crate: what the tables need is
//! parse, add, subtract, compare and print, a few dozen lines, where the
//! decimal crates bring arithmetic and rounding modes nothing here uses.

use crate::value::Value;
use std::cmp::Ordering;
use std::fmt;

/// Most decimal places kept (an amount with more is refused).
pub const MAX_SCALE: u32 = 18;

#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

impl Decimal {
    pub const ZERO: Decimal = Decimal { mantissa: 0, scale: 0 };

    /// A number, or a string holding one ("12.50", "-3", "1e3" is not one).
    pub fn from_value(v: &Value) -> Option<Decimal> {
        match v {
            Value::UInt(n) => Some(Decimal { mantissa: i128::from(*n), scale: 0 }),
            Value::Int(n) => Some(Decimal { mantissa: i128::from(*n), scale: 0 }),
            // The shortest decimal that reads back as the same float
            // (`{}` never writes an exponent).
            Value::Float(f) if f.is_finite() => Decimal::parse(&format!("{f}")),
            Value::Str(s) => Decimal::parse(s.trim()),
            _ => None,
        }
    }

    /// `[-+]digits[.digits]`.
    pub fn parse(s: &str) -> Option<Decimal> {
        let (neg, digits) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() || !(int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())) {
            return None;
        }
        let scale = u32::try_from(frac.len()).ok().filter(|&s| s <= MAX_SCALE)?;
        let mut m: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            m = m.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        Some(Decimal { mantissa: if neg { -m } else { m }, scale })
    }

    fn rescaled(self, scale: u32) -> Option<i128> {
        debug_assert!(scale >= self.scale);
        self.mantissa.checked_mul(10i128.checked_pow(scale - self.scale)?)
    }

    pub fn checked_add(self, o: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(o.scale);
        let m = self.rescaled(scale)?.checked_add(o.rescaled(scale)?)?;
        Some(Decimal { mantissa: m, scale })
    }

    pub fn checked_sub(self, o: Decimal) -> Option<Decimal> {
        self.checked_add(Decimal { mantissa: o.mantissa.checked_neg()?, scale: o.scale })
    }

    /// As a JSON number: an integer when it is one and fits, else a float.
    pub fn to_number(self) -> Value {
        if self.scale == 0 {
            if let Ok(u) = u64::try_from(self.mantissa) {
                return Value::UInt(u);
            }
            if let Ok(i) = i64::try_from(self.mantissa) {
                return Value::Int(i);
            }
        }
        Value::Float(self.to_string().parse().unwrap_or(f64::NAN))
    }
}

impl PartialEq for Decimal {
    fn eq(&self, o: &Decimal) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, o: &Decimal) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Decimal {
    fn cmp(&self, o: &Decimal) -> Ordering {
        let scale = self.scale.max(o.scale);
        match (self.rescaled(scale), o.rescaled(scale)) {
            (Some(a), Some(b)) => a.cmp(&b),
            // One side overflowed when scaled up: compare as floats.
            _ => self.to_string().parse::<f64>().unwrap_or(0.0).total_cmp(&o.to_string().parse().unwrap_or(0.0)),
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn parses_and_prints() {
        for (input, shown) in
            [("12.50", "12.50"), ("-0.01", "-0.01"), ("+7", "7"), ("0.000", "0.000"), (".5", "0.5"), ("5.", "5")]
        {
            assert_eq!(d(input).to_string(), shown, "{input}");
        }
        for bad in ["", "-", ".", "1e3", "1.2.3", "12,5", " 1", "0x10", "1.0000000000000000001"] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(Decimal::from_value(&Value::Str(" 3.25 ".into())), Some(d("3.25")));
        assert_eq!(Decimal::from_value(&Value::Float(0.1)), Some(d("0.1")));
        assert_eq!(Decimal::from_value(&Value::Int(-4)), Some(d("-4")));
        assert!(Decimal::from_value(&Value::Bool(true)).is_none());
    }

    #[test]
    fn sums_are_exact_and_undo_exactly() {
        // 0.1 + 0.2 in floating point is 0.30000000000000004.
        assert_eq!(d("0.1").checked_add(d("0.2")).unwrap(), d("0.3"));
        let mut total = Decimal::ZERO;
        for _ in 0..1000 {
            total = total.checked_add(d("19.99")).unwrap();
        }
        assert_eq!(total.to_string(), "19990.00");
        for _ in 0..999 {
            total = total.checked_sub(d("19.99")).unwrap();
        }
        assert_eq!(total.to_string(), "19.99");
        assert_eq!(d("12.50").checked_add(d("0.5")).unwrap().to_string(), "13.00");
        assert_eq!(d("2.5").to_number(), Value::Float(2.5));
        assert_eq!(d("-2").to_number(), Value::Int(-2));
        assert_eq!(d("170141183460469231731687303715884105727").checked_add(d("1")), None, "overflow is an error");
    }

    #[test]
    fn orders_by_value() {
        assert!(d("2.50") == d("2.5"));
        assert!(d("-1") < d("0.001"));
        assert!(d("10") > d("9.999"));
        let mut v = [d("3"), d("-2.5"), d("0.25")];
        v.sort();
        assert_eq!(v.iter().map(|x| x.to_string()).collect::<Vec<_>>(), ["-2.5", "0.25", "3"]);
    }
}
