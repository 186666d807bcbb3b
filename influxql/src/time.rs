//! Timestamps in answers. Nodes are always asked for nanoseconds
//! (`epoch=ns`), so that answers compare and merge as integers; the merged
//! answer is written the way the client asked: `epoch=h|m|s|ms|u|ns` as an
//! integer, otherwise RFC 3339 with the fraction's trailing zeros dropped,
//! as InfluxDB (Go's `RFC3339Nano`) writes it.

use serde_json::Value;

use crate::Error;

/// How a client wants times written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Epoch {
    /// RFC 3339 strings.
    #[default]
    Rfc3339,
    /// Integers in units of this many nanoseconds.
    Unit(i64),
}

impl Epoch {
    /// The `epoch` query parameter: absent or empty for RFC 3339.
    pub fn from_param(param: Option<&str>) -> Result<Self, Error> {
        let unit = match param.unwrap_or("") {
            "" => return Ok(Epoch::Rfc3339),
            "n" | "ns" => 1,
            "u" | "us" | "µ" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => {
                return Err(Error::Unsupported(format!(
                    "epoch `{other}` is not one of h, m, s, ms, u, ns"
                )));
            }
        };
        Ok(Epoch::Unit(unit))
    }

    /// `nanos` written this way.
    pub fn format(self, nanos: i64) -> Value {
        match self {
            Epoch::Unit(unit) => Value::from(nanos / unit),
            Epoch::Rfc3339 => Value::from(rfc3339(nanos)),
        }
    }
}

/// `nanos` since the Unix epoch as `2006-01-02T15:04:05.999999999Z`.
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    );
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian;
/// H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_as_go_writes_it() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_000_000_000), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_500_000_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            rfc3339(1_764_594_000_000_000_001),
            "2025-12-01T13:00:00.000000001Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(i64::MIN), "1677-09-21T00:12:43.145224192Z");
    }

    #[test]
    fn epochs() {
        assert_eq!(Epoch::from_param(None).unwrap(), Epoch::Rfc3339);
        assert_eq!(
            Epoch::from_param(Some("ms")).unwrap().format(1_999_999),
            Value::from(1)
        );
        assert_eq!(
            Epoch::from_param(Some("h"))
                .unwrap()
                .format(7_200_000_000_000),
            Value::from(2)
        );
        assert!(
            Epoch::from_param(Some("d"))
                .unwrap_err()
                .to_string()
                .contains("h, m, s")
        );
    }
}
