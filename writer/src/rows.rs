//! A point of a mapped measurement as a raw row: dimensions from tags,
//! values from fields, success from the rule. Pure logic.

use serde::Serialize;
use trident_line_protocol::{FieldValue, Line};
use trident_service::config::MappingConfig;

/// One row of `<table>_raw`.
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct RawRow {
    /// Seconds since the epoch (DateTime).
    pub ts: u32,
    /// Nanoseconds since the epoch.
    pub ts_ns: i64,
    /// Dimension values, in the mapping's order.
    pub dims: Vec<String>,
    /// Values, in the mapping's order (NaN where the point lacks one).
    pub vals: Vec<f64>,
    /// 1 if the point counts as a success.
    pub success: u8,
}

/// Why a point of a mapped measurement is not a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No timestamp, or one outside DateTime's range.
    BadTime,
    /// None of the mapping's values is a number in the point.
    NoValues,
}

fn number(value: &FieldValue<'_>) -> Option<f64> {
    match value {
        FieldValue::Float(v) => Some(*v),
        FieldValue::Integer(v) => Some(*v as f64),
        FieldValue::UInteger(v) => Some(*v as f64),
        FieldValue::Boolean(b) => Some(f64::from(u8::from(*b))),
        FieldValue::String(_) => None,
    }
}

/// The row for `line` under `mapping`.
pub fn row(mapping: &MappingConfig, line: &Line<'_>) -> Result<RawRow, Skip> {
    let ts_ns = line.timestamp().ok_or(Skip::BadTime)?;
    let ts = u32::try_from(ts_ns.div_euclid(1_000_000_000)).map_err(|_| Skip::BadTime)?;
    let dims = mapping
        .dimensions
        .iter()
        .map(|d| {
            line.tag(d)
                .map(|v| v.as_str().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut vals = vec![f64::NAN; mapping.values.len()];
    let mut success_value = None;
    for (key, value) in line.fields() {
        if let Some(i) = mapping.values.iter().position(|v| key.eq_str(v)) {
            vals[i] = number(&value).unwrap_or(f64::NAN);
        }
        if let Some(s) = &mapping.success
            && key.eq_str(&s.field)
        {
            success_value = number(&value);
        }
    }
    if vals.iter().all(|v| v.is_nan()) {
        return Err(Skip::NoValues);
    }
    let success = match (&mapping.success, success_value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(s), Some(v)) => match s.op.as_str() {
            "<" => v < s.value,
            "<=" => v <= s.value,
            ">" => v > s.value,
            ">=" => v >= s.value,
            "==" => v == s.value,
            _ => v != s.value,
        },
    };
    Ok(RawRow {
        ts,
        ts_ns,
        dims,
        vals,
        success: u8::from(success),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trident_service::config::SuccessConfig;

    fn mapping() -> MappingConfig {
        MappingConfig {
            measurement: "http".into(),
            table: String::new(),
            dimensions: vec!["app".into(), "endpoint".into()],
            values: vec!["latency_ms".into(), "bytes".into()],
            success: Some(SuccessConfig {
                field: "status".into(),
                op: "<".into(),
                value: 400.0,
            }),
        }
    }

    fn line(text: &str) -> Line<'_> {
        trident_line_protocol::parse_lines(text.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn dimensions_values_and_success() {
        let r = row(
            &mapping(),
            &line("http,app=shop,endpoint=/pay,host=a latency_ms=12.5,bytes=300i,status=200i 1700000000123456789"),
        )
        .unwrap();
        assert_eq!(r.ts, 1_700_000_000);
        assert_eq!(r.ts_ns, 1_700_000_000_123_456_789);
        assert_eq!(r.dims, ["shop", "/pay"]);
        assert_eq!(r.vals, [12.5, 300.0]);
        assert_eq!(r.success, 1);
        let r = row(
            &mapping(),
            &line("http,app=shop latency_ms=9,status=503i 1"),
        )
        .unwrap();
        assert_eq!(r.dims, ["shop", ""], "a missing tag is empty");
        assert!(r.vals[1].is_nan());
        assert_eq!(r.success, 0);
        assert_eq!(
            row(&mapping(), &line("http,app=x status=200i 1")),
            Err(Skip::NoValues)
        );
        assert_eq!(
            row(&mapping(), &line("http latency_ms=1 -5000000000")),
            Err(Skip::BadTime)
        );
    }
}
