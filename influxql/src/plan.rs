//! Which nodes a statement needs and what each of them runs.
//!
//! - A `SELECT` of one measurement whose points all live on one owner set
//!   (strategy `measurement`, or `measurement+tags(…)` with every one of
//!   those tags pinned by `tag = 'value'` in the top-level `AND`s of
//!   `WHERE`) is **forwarded** as sent: any function works, the answer is
//!   the node's own.
//! - Anything else **fans out** to every node, each running a rewrite
//!   whose answers merge exactly (see [`crate::merge`]): `GROUP BY *` so
//!   that each series comes back whole and replicas can be told apart;
//!   `mean` as `sum` and `count`, `spread` as `max` and `min`; `fill(null)`
//!   so that buckets line up (the client's fill is applied after the
//!   merge); `LIMIT` raised by `OFFSET`, which is applied after the merge.

use trident_cluster::Placement;
use trident_line_protocol::{shard_hash, shard_key_of};

use crate::Error;
use crate::statement::{
    Field, FieldKind, Fill, GroupTag, Select, Show, ShowWhat, Source, Statement, StatementKind,
};

/// How one statement is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The first of these owners (node indices, best first) that answers
    /// runs the statement as sent; its answer is the answer.
    Forward {
        /// Node indices.
        nodes: Vec<usize>,
        /// The statement.
        statement: String,
    },
    /// Every node runs `statement`; the answers merge by `merge`.
    Fanout {
        /// What each node runs.
        statement: String,
        /// How the answers merge.
        merge: Merge,
    },
    /// Every node must run the statement (DDL, deletes).
    Everywhere {
        /// The statement.
        statement: String,
    },
    /// Any one node answers.
    AnyNode {
        /// The statement.
        statement: String,
    },
}

/// How the answers of a fan-out merge.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// A `SHOW`: rows united and de-duplicated.
    Show {
        /// Sorted or first-seen order.
        what: ShowWhat,
        /// Per series, after the merge.
        limit: Option<u64>,
        /// Per series, after the merge.
        offset: Option<u64>,
    },
    /// A raw `SELECT`.
    Raw(Shape),
    /// An aggregate `SELECT`.
    Aggregate {
        /// Grouping, order and limits.
        shape: Shape,
        /// The projections, in the client's order.
        fields: Vec<Aggregate>,
        /// `GROUP BY time(…)`.
        by_time: bool,
        /// The client's fill.
        fill: Fill,
        /// One selector and no `GROUP BY time`: the answer's time is the
        /// selected point's.
        point_time: bool,
        /// `first`/`last` across series: computed from raw points.
        points: Option<Points>,
    },
}

/// `first()`/`last()` across series: nodes return a bucket's start, not the
/// selected point's time, so the gateway picks them from the raw points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Points {
    /// What every node runs besides the aggregate rewrite: the arguments
    /// of `first`/`last`, raw, one series at a time.
    pub statement: String,
    /// (index of the projection, column of the points answer).
    pub columns: Vec<(usize, String)>,
    /// `GROUP BY time(interval, offset)` in nanoseconds; `None`: one bucket.
    pub bucket: Option<(i64, i64)>,
}

/// What a merged answer looks like, common to raw and aggregate queries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shape {
    /// The client's `GROUP BY` tag dimensions.
    pub group_tags: Vec<GroupTag>,
    /// `SELECT *`: tags that are not grouped become columns.
    pub wildcard: bool,
    /// `ORDER BY time DESC`.
    pub descending: bool,
    /// Rows per series.
    pub limit: Option<u64>,
    /// Rows skipped per series.
    pub offset: Option<u64>,
    /// Series.
    pub slimit: Option<u64>,
    /// Series skipped.
    pub soffset: Option<u64>,
}

/// The aggregates that merge exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `count`.
    Count,
    /// `sum`.
    Sum,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `first`.
    First,
    /// `last`.
    Last,
    /// `mean`: sum and count.
    Mean,
    /// `spread`: max and min.
    Spread,
}

impl Func {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "count" => Func::Count,
            "sum" => Func::Sum,
            "min" => Func::Min,
            "max" => Func::Max,
            "first" => Func::First,
            "last" => Func::Last,
            "mean" => Func::Mean,
            "spread" => Func::Spread,
            _ => return None,
        })
    }

    /// What the nodes compute for it.
    fn parts(self) -> &'static [&'static str] {
        match self {
            Func::Count => &["count"],
            Func::Sum => &["sum"],
            Func::Min => &["min"],
            Func::Max => &["max"],
            Func::First => &["first"],
            Func::Last => &["last"],
            Func::Mean => &["sum", "count"],
            Func::Spread => &["max", "min"],
        }
    }

    fn is_selector(self) -> bool {
        matches!(self, Func::Min | Func::Max | Func::First | Func::Last)
    }
}

/// One aggregate projection of a fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Which.
    pub func: Func,
    /// The column the client sees.
    pub name: String,
    /// The columns the nodes answer with, in [`Func::parts`] order.
    pub columns: Vec<String>,
}

const MERGEABLE: &str = "count, sum, min, max, first, last, mean and spread of one field";

/// How to answer `statement` on the cluster `placement`, for database `db`
/// (the `db` parameter).
pub fn plan(statement: &Statement, placement: &Placement, db: Option<&str>) -> Result<Plan, Error> {
    let text = statement.text.clone();
    match &statement.kind {
        StatementKind::Select(select) => plan_select(select, text, placement, db),
        StatementKind::Show(Show {
            what,
            node_text,
            limit,
            offset,
        }) => Ok(Plan::Fanout {
            statement: node_text.clone(),
            merge: Merge::Show {
                what: *what,
                limit: *limit,
                offset: *offset,
            },
        }),
        StatementKind::Everywhere => Ok(Plan::Everywhere { statement: text }),
        StatementKind::AnyNode => Ok(Plan::AnyNode { statement: text }),
        StatementKind::Unsupported(why) => Err(Error::Unsupported(why.clone())),
    }
}

/// The owners of the data `select` reads, when one owner set holds it all.
fn owners(select: &Select, placement: &Placement, db: Option<&str>) -> Option<Vec<usize>> {
    let [
        Source::Measurement {
            database,
            name: measurement,
        },
    ] = select.sources.as_slice()
    else {
        return None;
    };
    let db = database.as_deref().or(db)?;
    let strategy = placement.strategy_for(db, measurement);
    let key = shard_key_of(strategy, measurement, |k| {
        select
            .pins
            .iter()
            .find(|(tag, _)| tag == k)
            .map(|(_, v)| v.as_str())
    })?;
    // During a move, the side that holds everything.
    let owners = placement.read_owners(shard_hash(&key));
    Some(owners.as_slice().iter().map(|&n| usize::from(n)).collect())
}

fn plan_select(
    select: &Select,
    text: String,
    placement: &Placement,
    db: Option<&str>,
) -> Result<Plan, Error> {
    if select.into {
        return Err(Error::Unsupported(
            "SELECT … INTO writes on the node that runs it, outside the cluster's placement: write the results through the gateway instead".into(),
        ));
    }
    if let Some(nodes) = owners(select, placement, db) {
        return Ok(Plan::Forward {
            nodes,
            statement: text,
        });
    }
    let why_not_one_owner = "several nodes hold the data this query reads (strategy `series`, a regex or several measurements, or `measurement+tags` without every tag pinned by tag = 'value' in WHERE)";
    if select.sources.contains(&Source::Subquery) {
        return Err(Error::Unsupported(format!(
            "subqueries are answered only when one node owns all the data they read; {why_not_one_owner}"
        )));
    }
    let shape = Shape {
        group_tags: select.group_tags.clone(),
        wildcard: select.fields.iter().any(|f| f.kind == FieldKind::Wildcard),
        descending: select.descending,
        limit: select.limit,
        offset: select.offset,
        slimit: select.slimit,
        soffset: select.soffset,
    };
    let condition = select
        .condition
        .as_ref()
        .map(|c| format!(" WHERE {c}"))
        .unwrap_or_default();
    let tz = select
        .tz
        .as_ref()
        .map(|t| format!(" {t}"))
        .unwrap_or_default();
    let calls = select
        .fields
        .iter()
        .filter(|f| matches!(f.kind, FieldKind::Call { .. } | FieldKind::Complex))
        .count();
    if calls == 0 {
        if select.group_time.is_some() {
            return Err(Error::Unsupported(
                "GROUP BY requires at least one aggregate function".into(),
            ));
        }
        if select.fields.iter().any(|f| f.kind == FieldKind::Regex)
            || (shape.wildcard && select.fields.len() > 1)
        {
            return Err(Error::Unsupported(format!(
                "a regex or * among other projections is answered only when one node owns the data; {why_not_one_owner}: name the fields, or select * alone"
            )));
        }
        let fields: Vec<String> = select.fields.iter().map(projection).collect();
        let mut statement = format!(
            "SELECT {} FROM {}{condition} GROUP BY *",
            fields.join(", "),
            select.from
        );
        if select.descending {
            statement.push_str(" ORDER BY time DESC");
        }
        if let Some(limit) = select.limit {
            let limit = limit.saturating_add(select.offset.unwrap_or(0));
            statement.push_str(&format!(" LIMIT {limit}"));
        }
        statement.push_str(&tz);
        return Ok(Plan::Fanout {
            statement,
            merge: Merge::Raw(shape),
        });
    }
    let mut fields = Vec::new();
    let mut parts = Vec::new();
    let mut args: Vec<String> = Vec::new();
    for (i, f) in select.fields.iter().enumerate() {
        let func = match &f.kind {
            FieldKind::Call { func, .. } => Func::from_name(func),
            _ => None,
        };
        let (Some(func), FieldKind::Call { arg, .. }) = (func, &f.kind) else {
            return Err(Error::Unsupported(format!(
                "`{}` cannot be merged exactly from several nodes: {why_not_one_owner}, and across nodes only {MERGEABLE} are (no mixing with raw fields)",
                f.expr
            )));
        };
        args.push(arg.clone());
        let columns: Vec<String> = func
            .parts()
            .iter()
            .map(|p| format!("__trident_{i}_{p}"))
            .collect();
        for (p, c) in func.parts().iter().zip(&columns) {
            parts.push(format!("{p}({arg}) AS \"{c}\""));
        }
        fields.push(Aggregate {
            func,
            name: f.alias.clone().unwrap_or_else(|| {
                let FieldKind::Call { func, .. } = &f.kind else {
                    return String::new();
                };
                func.clone()
            }),
            columns,
        });
    }
    let aliased: Vec<bool> = select.fields.iter().map(|f| f.alias.is_some()).collect();
    resolve_names(&mut fields, &aliased);
    let by_time = select.group_time.is_some();
    let point_time = !by_time && fields.len() == 1 && fields[0].func.is_selector();
    let whole_series = select.group_tags.contains(&GroupTag::All);
    let needs_points = !point_time
        && !whole_series
        && fields
            .iter()
            .any(|f| matches!(f.func, Func::First | Func::Last));
    let points = if needs_points {
        if select.tz.is_some() {
            return Err(Error::Unsupported(format!(
                "first()/last() across series with tz() are answered only when one node owns the data; {why_not_one_owner}"
            )));
        }
        let bucket = match &select.group_time {
            None => None,
            Some(time) => Some(time_bucket(time).ok_or_else(|| {
                Error::Unsupported(format!("cannot read the interval of `{time}`"))
            })?),
        };
        let mut projections = Vec::new();
        let mut columns = Vec::new();
        for (i, (f, arg)) in fields.iter().zip(&args).enumerate() {
            if matches!(f.func, Func::First | Func::Last) {
                let column = format!("__trident_point_{i}");
                projections.push(format!("{arg} AS \"{column}\""));
                columns.push((i, column));
            }
        }
        Some(Points {
            statement: format!(
                "SELECT {} FROM {}{condition} GROUP BY *{tz}",
                projections.join(", "),
                select.from
            ),
            columns,
            bucket,
        })
    } else {
        None
    };
    let mut statement = format!(
        "SELECT {} FROM {}{condition} GROUP BY ",
        parts.join(", "),
        select.from
    );
    if let Some(time) = &select.group_time {
        statement.push_str(time);
        statement.push_str(", * ");
        statement.push_str(if select.fill == Fill::None {
            "fill(none)"
        } else {
            "fill(null)"
        });
    } else {
        statement.push('*');
    }
    statement.push_str(&tz);
    Ok(Plan::Fanout {
        statement,
        merge: Merge::Aggregate {
            shape,
            fields,
            by_time,
            fill: select.fill,
            point_time,
            points,
        },
    })
}

/// `time(1m)` or `time(1h, -15m)`: (interval, offset) in nanoseconds.
fn time_bucket(group_time: &str) -> Option<(i64, i64)> {
    let inner = group_time
        .trim()
        .strip_prefix("time")?
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?;
    let mut parts = inner.split(',').map(str::trim);
    let interval = duration_ns(parts.next()?)?;
    let offset = match parts.next() {
        None => 0,
        Some(o) => match o.strip_prefix('-') {
            Some(rest) => -duration_ns(rest.trim())?,
            None => duration_ns(o)?,
        },
    };
    (interval > 0 && parts.next().is_none()).then_some((interval, offset))
}

/// An InfluxQL duration literal (`90s`, `1h30m`, `100ms`) in nanoseconds.
fn duration_ns(text: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 10] = [
        ("ns", 1),
        ("us", 1_000),
        ("µ", 1_000),
        ("u", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
        ("w", 604_800_000_000_000),
    ];
    let mut rest = text;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS.iter().find(|(u, _)| rest.starts_with(u))?;
        total = total.checked_add(n.checked_mul(*scale)?)?;
        rest = &rest[unit.len()..];
    }
    (total > 0).then_some(total)
}

/// A projection as a node must run it, its name kept.
fn projection(f: &Field) -> String {
    match &f.alias {
        Some(alias) => format!(
            "{} AS \"{}\"",
            f.expr,
            alias.replace('\\', "\\\\").replace('"', "\\\"")
        ),
        None => f.expr.clone(),
    }
}

/// Column names as InfluxDB resolves them: aliases first, then generated
/// names, a taken one numbered `mean_1`, `mean_2` … past every name in use.
fn resolve_names(fields: &mut [Aggregate], aliased: &[bool]) {
    let mut names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (f, _) in fields.iter().zip(aliased).filter(|(_, a)| **a) {
        names.insert(f.name.clone(), 1);
    }
    for (f, _) in fields.iter_mut().zip(aliased).filter(|(_, a)| !**a) {
        let mut name = f.name.clone();
        if let Some(&start) = names.get(&name) {
            let mut count = start;
            loop {
                let resolved = format!("{name}_{count}");
                if !names.contains_key(&resolved) {
                    names.insert(name.clone(), count + 1);
                    name = resolved;
                    break;
                }
                count += 1;
            }
        }
        *names.entry(name.clone()).or_insert(0) += 1;
        f.name = name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::parse;

    fn placement() -> Placement {
        serde_json::from_value::<trident_cluster::Topology>(serde_json::json!({
            "nodes": [
                {"id": "a", "url": "http://127.0.0.1:1"},
                {"id": "b", "url": "http://127.0.0.1:2"},
                {"id": "c", "url": "http://127.0.0.1:3"}
            ],
            "replication": 2,
            "rules": [
                {"measurement": "http", "strategy": "measurement+tags(app)"},
                {"database": "biz", "strategy": "measurement"}
            ]
        }))
        .unwrap()
        .validate()
        .unwrap()
    }

    fn plan_of(q: &str, db: Option<&str>) -> Result<Plan, Error> {
        plan(&parse(q).unwrap()[0], &placement(), db)
    }

    #[test]
    fn one_owner_set_gets_the_statement_as_sent() {
        let q = "SELECT percentile(latency, 95) FROM http WHERE app = 'shop' AND time > now() - 1h";
        let Ok(Plan::Forward { nodes, statement }) = plan_of(q, Some("telegraf")) else {
            panic!()
        };
        assert_eq!(statement, q);
        assert_eq!(nodes.len(), 2);
        let p = placement();
        let key =
            shard_key_of(p.strategy_for("telegraf", "http"), "http", |_| Some("shop")).unwrap();
        let expected: Vec<usize> = p
            .ring()
            .owners(shard_hash(&key), 2)
            .as_slice()
            .iter()
            .map(|&n| usize::from(n))
            .collect();
        assert_eq!(nodes, expected);
        assert!(matches!(
            plan_of("SELECT median(v) FROM orders", Some("biz")),
            Ok(Plan::Forward { .. })
        ));
        assert!(matches!(
            plan_of("SELECT median(v) FROM biz.autogen.orders", None),
            Ok(Plan::Forward { .. })
        ));
    }

    #[test]
    fn fanouts_are_rewritten_to_merge() {
        let Ok(Plan::Fanout { statement, merge }) = plan_of(
            "SELECT mean(v), max(v) AS top FROM cpu WHERE time > 0 GROUP BY time(1m), host fill(previous) LIMIT 5 tz('UTC')",
            Some("telegraf"),
        ) else {
            panic!()
        };
        assert_eq!(
            statement,
            "SELECT sum(v) AS \"__trident_0_sum\", count(v) AS \"__trident_0_count\", max(v) AS \"__trident_1_max\" FROM cpu WHERE time > 0 GROUP BY time(1m), * fill(null) tz('UTC')"
        );
        let Merge::Aggregate {
            fields,
            by_time,
            fill,
            point_time,
            shape,
            points: None,
        } = merge
        else {
            panic!()
        };
        assert!(by_time && !point_time);
        assert_eq!(fill, Fill::Previous);
        assert_eq!(fields[1].name, "top");
        assert_eq!(shape.limit, Some(5));

        let Ok(Plan::Fanout { statement, .. }) = plan_of(
            "SELECT v, host FROM cpu ORDER BY time DESC LIMIT 3 OFFSET 2",
            Some("telegraf"),
        ) else {
            panic!()
        };
        assert_eq!(
            statement,
            "SELECT v, host FROM cpu GROUP BY * ORDER BY time DESC LIMIT 5"
        );
        // Pins of other tags do not narrow a measurement+tags(app) query.
        assert!(matches!(
            plan_of("SELECT count(v) FROM http WHERE host = 'x'", Some("t")),
            Ok(Plan::Fanout { .. })
        ));
    }

    #[test]
    fn what_does_not_merge_is_refused_with_a_reason() {
        for (q, words) in [
            (
                "SELECT percentile(v, 95) FROM cpu",
                "cannot be merged exactly",
            ),
            ("SELECT mean(v) * 2 FROM cpu", "cannot be merged exactly"),
            (
                "SELECT count(distinct(v)) FROM cpu",
                "cannot be merged exactly",
            ),
            (
                "SELECT first(v) FROM cpu GROUP BY time(1m) tz('Europe/Paris')",
                "tz()",
            ),
            ("SELECT v INTO x FROM cpu", "INTO"),
            ("SELECT v FROM (SELECT v FROM cpu)", "subqueries"),
            ("SELECT *, v FROM cpu", "select * alone"),
            (
                "SELECT v FROM cpu GROUP BY time(1m)",
                "requires at least one aggregate",
            ),
        ] {
            let e = plan_of(q, Some("telegraf")).unwrap_err().to_string();
            assert!(e.contains(words), "{q}: {e}");
        }
        assert!(plan_of("SELECT first(v) FROM cpu GROUP BY time(1m), *", Some("t")).is_ok());
        assert!(plan_of("SELECT first(v) FROM cpu", Some("t")).is_ok());
    }

    #[test]
    fn first_and_last_across_series_come_from_raw_points() {
        let Ok(Plan::Fanout {
            merge:
                Merge::Aggregate {
                    points: Some(points),
                    ..
                },
            ..
        }) = plan_of(
            "SELECT count(v), first(v), last(w) FROM cpu WHERE time > 0 GROUP BY time(1m, -15s), host",
            Some("t"),
        )
        else {
            panic!()
        };
        assert_eq!(
            points.statement,
            "SELECT v AS \"__trident_point_1\", w AS \"__trident_point_2\" FROM cpu WHERE time > 0 GROUP BY *"
        );
        assert_eq!(points.bucket, Some((60_000_000_000, -15_000_000_000)));
        assert_eq!(time_bucket("time(1h30m)"), Some((5_400_000_000_000, 0)));
        assert_eq!(time_bucket("time(0s)"), None);
        assert_eq!(duration_ns("100ms"), Some(100_000_000));
        assert_eq!(duration_ns("5x"), None);
    }

    #[test]
    fn repeated_names_are_numbered() {
        let Ok(Plan::Fanout {
            merge: Merge::Aggregate { fields, .. },
            ..
        }) = plan_of(
            "SELECT mean(a), mean(b), count(a) AS mean, max(a) AS max_1, max(a) FROM cpu",
            Some("t"),
        )
        else {
            panic!()
        };
        // As a 1.6 node names them.
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["mean_1", "mean_2", "mean", "max_1", "max"]);
    }
}
