//! Timestamp precision: the `precision` parameter of the write APIs.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The unit of the timestamps in a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `n`, `ns` (the default).
    #[default]
    Nanoseconds,
    /// `u`, `us`, `µ`, `µs`.
    Microseconds,
    /// `ms`.
    Milliseconds,
    /// `s`.
    Seconds,
    /// `m` (InfluxDB 1.x only).
    Minutes,
    /// `h` (InfluxDB 1.x only).
    Hours,
}

impl Precision {
    /// Nanoseconds per unit.
    pub const fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }

    /// `value` units in nanoseconds, or `None` on overflow.
    pub fn to_nanos(self, value: i64) -> Option<i64> {
        value.checked_mul(self.nanos_per_unit())
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "" | "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            other => return Err(Error::UnknownPrecision(other.to_owned())),
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
            Precision::Minutes => "m",
            Precision::Hours => "h",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_converts_to_nanoseconds() {
        let cases = [
            ("n", 1),
            ("ns", 1),
            ("u", 1_000),
            ("us", 1_000),
            ("µs", 1_000),
            ("ms", 1_000_000),
            ("s", 1_000_000_000),
            ("m", 60_000_000_000),
            ("h", 3_600_000_000_000),
        ];
        for (name, per_unit) in cases {
            let p: Precision = name.parse().unwrap();
            assert_eq!(p.to_nanos(3), Some(3 * per_unit), "{name}");
            assert_eq!(p.to_nanos(-3), Some(-3 * per_unit), "{name}");
        }
    }

    #[test]
    fn overflow_is_detected() {
        assert_eq!(Precision::Hours.to_nanos(i64::MAX / 1000), None);
        assert_eq!(Precision::Seconds.to_nanos(9_223_372_037), None);
        assert_eq!(
            Precision::Seconds.to_nanos(9_223_372_036),
            Some(9_223_372_036_000_000_000)
        );
    }

    #[test]
    fn unknown_precision_names_the_choices() {
        let err = "rfc3339".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("rfc3339") && err.contains("ms"), "{err}");
    }
}
