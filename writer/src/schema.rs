//! The ClickHouse schema the writer creates, as SQL. Pure text: the caller
//! runs it. Everything is `IF NOT EXISTS`, so running it again is harmless.
//!
//! Per mapping `t` (dimensions `d…`, values `v…`):
//!
//! ```text
//! t_raw        MergeTree, by day: ts, ts_ns, dims Array(String),
//!              vals Array(Float64), success UInt8   (TTL where supported)
//! t_<interval> AggregatingMergeTree: bucket, d…, requests countState,
//!              ok sumState(success), v_sum sumState(v) (points without v
//!              count as requests but not in v's sum and quantiles),
//!              v_q quantilesExactState(0.5, 0.9, 0.95, 0.99)(v)
//! t_<interval>_mv_<hash>  materialized view t_raw → t_<interval>; the
//!              hash names its shape, so a changed mapping replaces it
//!              ([`migrate`])
//! ```
//!
//! Quantile states are exact (`quantilesExact`): merged, they answer what
//! `quantileExact` answers over the raw rows. The t-digest states were
//! 2.2 % off at P99 of a heavy-tailed latency distribution (2 000 values a
//! bucket), over the 1 % the views must hold; exact states cost memory in
//! proportion to the values a bucket holds (8 bytes each).
//!
//! Buckets are `toDateTime(intDiv(toUInt32(ts), N) * N)`, which ClickHouse
//! 18.16 (the local server) and current releases both understand.

use std::time::Duration;

use trident_service::config::MappingConfig;

/// The quantiles kept for every value.
pub const LEVELS: &str = "0.5, 0.9, 0.95, 0.99";

/// The table prefix of a mapping.
pub fn table(mapping: &MappingConfig) -> &str {
    if mapping.table.is_empty() {
        &mapping.measurement
    } else {
        &mapping.table
    }
}

/// `1m`, `1h`, `90s`: the suffix of an interval's table.
pub fn label(interval: Duration) -> String {
    let s = interval.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Whether a server reporting `version` (`SELECT version()`, e.g.
/// `18.16.1`) supports table TTL, which came in 19.6.
pub fn ttl_supported(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (19, 6)
}

/// Everything the writer creates at start, in order: the database, the
/// positions table, then each mapping's [`statements`]. Every name is
/// qualified by `db`, so they run from any current database.
pub fn setup(
    db: &str,
    mappings: &[MappingConfig],
    intervals: &[Duration],
    ttl_days: Option<u32>,
) -> Vec<String> {
    let mut out = vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        offsets_table(db),
    ];
    for mapping in mappings {
        out.extend(statements(db, mapping, intervals, ttl_days));
    }
    out
}

/// The next offset to read per partition of the group (first `?`) and
/// topic (second `?`), as stored after the last insert.
pub fn stored_offsets(db: &str) -> String {
    format!(
        "SELECT partition, max(offset) AS offset FROM {db}.trident_writer_offsets \
         WHERE group = ? AND topic = ? GROUP BY partition"
    )
}

/// Where the writer keeps its positions in the raw topic: the next offset
/// per partition, written after the rows it covers.
pub fn offsets_table(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.trident_writer_offsets (group String, topic String, \
         partition Int32, offset Int64, at DateTime) ENGINE = ReplacingMergeTree(at) \
         ORDER BY (group, topic, partition)"
    )
}

/// Every statement, in order, for `mapping` in database `db`; `ttl_days`
/// (0: none) only when the server supports table TTL.
pub fn statements(
    db: &str,
    mapping: &MappingConfig,
    intervals: &[Duration],
    ttl_days: Option<u32>,
) -> Vec<String> {
    let t = table(mapping);
    let ttl = match ttl_days {
        Some(days) if days > 0 => format!(" TTL ts + INTERVAL {days} DAY"),
        _ => String::new(),
    };
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {db}.{t}_raw (ts DateTime, ts_ns Int64, dims Array(String), \
         vals Array(Float64), success UInt8) ENGINE = MergeTree() PARTITION BY toYYYYMMDD(ts) \
         ORDER BY ts{ttl}"
    )];
    for interval in intervals {
        let n = interval.as_secs();
        let l = label(*interval);
        let dim_columns: String = mapping
            .dimensions
            .iter()
            .map(|d| format!("{d} String, "))
            .collect();
        let value_columns: String = mapping
            .values
            .iter()
            .map(|v| {
                format!(
                    ", {v}_sum AggregateFunction(sum, Float64), \
                     {v}_q AggregateFunction(quantilesExact({LEVELS}), Float64)"
                )
            })
            .collect();
        let order: String = std::iter::once("bucket".to_owned())
            .chain(mapping.dimensions.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{t}_{l} (bucket DateTime, {dim_columns}\
             requests AggregateFunction(count), ok AggregateFunction(sum, UInt8){value_columns}) \
             ENGINE = AggregatingMergeTree() PARTITION BY toYYYYMM(bucket) ORDER BY ({order})"
        ));
        let dims: String = mapping
            .dimensions
            .iter()
            .enumerate()
            .map(|(i, d)| format!(", dims[{}] AS {d}", i + 1))
            .collect();
        let values: String = mapping
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    ", sumStateIf(vals[{n1}], NOT isNaN(vals[{n1}])) AS {v}_sum, \
                     quantilesExactStateIf({LEVELS})(vals[{n1}], NOT isNaN(vals[{n1}])) AS {v}_q",
                    n1 = i + 1
                )
            })
            .collect();
        let select = format!(
            "SELECT toDateTime(intDiv(toUInt32(ts), {n}) * {n}) AS bucket{dims}, \
             countState() AS requests, sumState(success) AS ok{values} \
             FROM {db}.{t}_raw GROUP BY {order}"
        );
        let view = view_name(mapping, *interval);
        out.push(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view} TO {db}.{t}_{l} AS {select}"
        ));
    }
    out
}

/// The materialized view of `mapping` for `interval`: `t_<l>_mv_<hash>`,
/// the hash of what it computes (dimensions and values, in order), so a
/// changed mapping gets a new view and [`migrate`] drops the old one.
pub fn view_name(mapping: &MappingConfig, interval: Duration) -> String {
    let shape = format!(
        "{}|{}|{}",
        interval.as_secs(),
        mapping.dimensions.join(","),
        mapping.values.join(",")
    );
    let hash = trident_line_protocol::shard_hash(shape.as_bytes()) as u32;
    format!("{}_{}_mv_{hash:08x}", table(mapping), label(interval))
}

/// What the database holds now: the columns of each table, and the names
/// of the materialized views.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// Table name → its columns' names and types.
    pub columns: std::collections::BTreeMap<String, Vec<(String, String)>>,
    /// Materialized view names.
    pub views: Vec<String>,
}

/// Statements that bring `mapping`'s existing tables to what it asks now,
/// to run before [`statements`]: value columns added to the aggregate
/// tables (`ALTER TABLE … ADD COLUMN`; old buckets hold empty states for
/// them), and views of an earlier shape dropped (`statements` creates the
/// new one). Values removed keep their columns and old data. Dimensions
/// cannot change: they are the tables' sorting key, which ClickHouse does
/// not change; the error says what to do instead.
pub fn migrate(
    db: &str,
    mapping: &MappingConfig,
    intervals: &[Duration],
    existing: &Existing,
) -> Result<Vec<String>, String> {
    let t = table(mapping);
    let mut out = Vec::new();
    for interval in intervals {
        let l = label(*interval);
        let aggregate = format!("{t}_{l}");
        if let Some(columns) = existing.columns.get(&aggregate) {
            // Dimensions are the String columns (the bucket is a DateTime,
            // the rest aggregate states).
            let dims: Vec<&String> = columns
                .iter()
                .filter(|(_, kind)| kind == "String")
                .map(|(name, _)| name)
                .collect();
            let has = |name: String| columns.iter().any(|(c, _)| *c == name);
            let wanted: Vec<&String> = mapping.dimensions.iter().collect();
            let mut have_sorted = dims.clone();
            let mut want_sorted = wanted.clone();
            have_sorted.sort();
            want_sorted.sort();
            if have_sorted != want_sorted {
                return Err(format!(
                    "{db}.{aggregate} has dimensions {dims:?} but the mapping of {} asks for \
                     {wanted:?}: a table's dimensions are its sorting key, which ClickHouse cannot \
                     change; give the mapping a new `table` name (its data starts afresh there), \
                     or rename {db}.{aggregate} away first",
                    mapping.measurement
                ));
            }
            let mut added = Vec::new();
            for v in &mapping.values {
                if !has(format!("{v}_sum")) {
                    added.push(format!(
                        "ADD COLUMN {v}_sum AggregateFunction(sum, Float64)"
                    ));
                }
                if !has(format!("{v}_q")) {
                    added.push(format!(
                        "ADD COLUMN {v}_q AggregateFunction(quantilesExact({LEVELS}), Float64)"
                    ));
                }
            }
            if !added.is_empty() {
                out.push(format!("ALTER TABLE {db}.{aggregate} {}", added.join(", ")));
            }
        }
        let current = view_name(mapping, *interval);
        let prefix = format!("{aggregate}_mv");
        for view in &existing.views {
            let ours = view == &prefix || view.starts_with(&format!("{prefix}_"));
            if ours && view != &current {
                out.push(format!("DROP TABLE IF EXISTS {db}.{view}"));
            }
        }
    }
    Ok(out)
}

/// The analysts' query: count, success rate and P50/P90/P95/P99 of `value`
/// per dimension and bucket since `since` (unix seconds).
pub fn query(
    db: &str,
    mapping: &MappingConfig,
    interval: Duration,
    value: &str,
    since: u64,
) -> String {
    let t = table(mapping);
    let l = label(interval);
    let dims: String = mapping
        .dimensions
        .iter()
        .map(|d| format!(", {d}"))
        .collect();
    format!(
        "SELECT toUInt32(bucket) AS bucket{dims}, countMerge(requests) AS count, \
         sumMerge(ok) / countMerge(requests) AS success_rate, \
         quantilesExactMerge({LEVELS})({value}_q) AS quantiles \
         FROM {db}.{t}_{l} WHERE bucket >= toDateTime({since}) \
         GROUP BY bucket{dims} ORDER BY bucket{dims}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> MappingConfig {
        MappingConfig {
            measurement: "http".into(),
            table: String::new(),
            dimensions: vec!["app".into(), "endpoint".into()],
            values: vec!["latency_ms".into()],
            success: None,
        }
    }

    #[test]
    fn raw_table_aggregate_tables_and_views_in_order() {
        let sql = statements("trident", &http(), &[Duration::from_secs(60)], Some(30));
        assert_eq!(sql.len(), 3);
        assert!(sql[0].starts_with("CREATE TABLE IF NOT EXISTS trident.http_raw ("));
        assert!(sql[0].ends_with("ORDER BY ts TTL ts + INTERVAL 30 DAY"));
        assert!(sql[1].contains("trident.http_1m (bucket DateTime, app String, endpoint String, requests AggregateFunction(count)"));
        assert!(sql[1].contains(
            "latency_ms_q AggregateFunction(quantilesExact(0.5, 0.9, 0.95, 0.99), Float64)"
        ));
        assert!(sql[1].ends_with("ORDER BY (bucket, app, endpoint)"));
        assert!(sql[2].contains("TO trident.http_1m AS SELECT toDateTime(intDiv(toUInt32(ts), 60) * 60) AS bucket, dims[1] AS app, dims[2] AS endpoint"));
        assert!(sql[2].ends_with("FROM trident.http_raw GROUP BY bucket, app, endpoint"));
        let old = statements("trident", &http(), &[Duration::from_secs(3600)], None);
        assert!(!old[0].contains("TTL"));
        assert!(old[1].contains("http_1h"));
    }

    #[test]
    fn ttl_from_19_6() {
        assert!(!ttl_supported("18.16.1"));
        assert!(!ttl_supported("19.5.3.8"));
        assert!(ttl_supported("19.6.1"));
        assert!(ttl_supported("26.9.2.1"));
        assert!(!ttl_supported("unknown"));
    }

    #[test]
    fn setup_creates_the_database_and_positions_first() {
        let sql = setup("t", &[http()], &[Duration::from_secs(60)], None);
        assert_eq!(sql.len(), 5);
        assert_eq!(sql[0], "CREATE DATABASE IF NOT EXISTS t");
        assert!(sql[1].contains("t.trident_writer_offsets"));
        assert!(sql[2].contains("t.http_raw"));
    }

    #[test]
    fn a_value_added_alters_the_table_and_replaces_the_view() {
        let before = http();
        let mut after = http();
        after.values.push("bytes".into());
        let minute = [Duration::from_secs(60)];
        let old_view = view_name(&before, minute[0]);
        let new_view = view_name(&after, minute[0]);
        assert_ne!(old_view, new_view);
        assert!(old_view.starts_with("http_1m_mv_"));
        let existing = Existing {
            columns: [(
                "http_1m".to_owned(),
                [
                    ("bucket", "DateTime"),
                    ("app", "String"),
                    ("endpoint", "String"),
                    ("requests", "AggregateFunction(count)"),
                    ("ok", "AggregateFunction(sum, UInt8)"),
                    ("latency_ms_sum", "AggregateFunction(sum, Float64)"),
                    (
                        "latency_ms_q",
                        "AggregateFunction(quantilesExact(0.5, 0.9, 0.95, 0.99), Float64)",
                    ),
                ]
                .map(|(n, k)| (n.to_owned(), k.to_owned()))
                .to_vec(),
            )]
            .into(),
            views: vec![
                old_view.clone(),
                "http_1m_mv".into(),
                "other_1m_mv_1".into(),
            ],
        };
        let sql = migrate("t", &after, &minute, &existing).expect("a value may be added");
        assert_eq!(
            sql,
            vec![
                format!(
                    "ALTER TABLE t.http_1m ADD COLUMN bytes_sum AggregateFunction(sum, Float64), \
                     ADD COLUMN bytes_q AggregateFunction(quantilesExact({LEVELS}), Float64)"
                ),
                format!("DROP TABLE IF EXISTS t.{old_view}"),
                "DROP TABLE IF EXISTS t.http_1m_mv".to_owned(),
            ]
        );
        // The same shape again: nothing to do.
        let same = Existing {
            views: vec![old_view],
            ..existing.clone()
        };
        assert!(
            migrate("t", &before, &minute, &same)
                .expect("same")
                .is_empty()
        );
        // A dimension changed: refused, with what to do.
        let mut moved = http();
        moved.dimensions = vec!["app".into(), "region".into()];
        let err = migrate("t", &moved, &minute, &existing).unwrap_err();
        assert!(
            err.contains("sorting key") && err.contains("new `table` name"),
            "{err}"
        );
    }

    #[test]
    fn labels() {
        assert_eq!(label(Duration::from_secs(60)), "1m");
        assert_eq!(label(Duration::from_secs(3600)), "1h");
        assert_eq!(label(Duration::from_secs(45)), "45s");
    }
}
