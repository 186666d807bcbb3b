//! Folding the nodes' answers to a fan-out into one answer.
//!
//! Each node answers the rewrite of [`crate::plan`] with one series per
//! stored series (`GROUP BY *`), times in nanoseconds. Replicas of a series
//! answer alike: raw rows are united by time (a series holds one point per
//! time), an aggregate series is taken from the first node that has it
//! (nodes are passed best first: those with nothing queued for them
//! first). Series are then regrouped by the client's `GROUP BY`, combined,
//! filled, ordered and cut by the client's limits.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use regex::Regex;
use serde_json::{Map, Value};

use crate::Error;
use crate::plan::{Aggregate, Func, Merge, Shape};
use crate::statement::{Fill, GroupTag, ShowWhat};
use crate::time::Epoch;

/// One series of a node's answer.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    tags: BTreeMap<String, String>,
    columns: Vec<String>,
    values: Vec<Vec<Value>>,
}

impl Series {
    /// The series key: name and non-empty tags, as the node stores it.
    fn key(&self) -> String {
        let mut key = self.name.clone();
        for (k, v) in self.tags.iter().filter(|(_, v)| !v.is_empty()) {
            key.push(',');
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        key
    }
}

fn bad(what: &str) -> Error {
    Error::BadAnswer(what.to_owned())
}

/// The series of one statement's result object.
fn series_of(answer: &Value) -> Result<Vec<Series>, Error> {
    let Some(list) = answer.get("series") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad("`series` is not a list"))?;
    list.iter()
        .map(|s| {
            let strings = |v: &Value| -> Result<Vec<String>, Error> {
                v.as_array()
                    .ok_or_else(|| bad("`columns` is not a list"))?
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad("a column name is not a string"))
                    })
                    .collect()
            };
            let tags = match s.get("tags") {
                None | Some(Value::Null) => BTreeMap::new(),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                Some(_) => return Err(bad("`tags` is not an object")),
            };
            let values = match s.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(rows)) => rows
                    .iter()
                    .map(|r| {
                        r.as_array()
                            .cloned()
                            .ok_or_else(|| bad("a row is not a list"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(bad("`values` is not a list")),
            };
            Ok(Series {
                name: s
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                tags,
                columns: strings(s.get("columns").unwrap_or(&Value::Null))?,
                values,
            })
        })
        .collect()
}

/// Whether the series named `measurement` with `tags` may be taken from
/// answer `i` (its node owns the series): copies on nodes that do not own a
/// series — stale ones an unfinished move left — are skipped.
pub type Owns<'a> = &'a dyn Fn(usize, &str, &BTreeMap<String, String>) -> bool;

/// The merged series of `answers` (one result object per node that
/// answered, best node first), times written as `epoch` asks. A `SELECT`
/// takes a series only from answers whose node `owns` it.
///
/// `points` are the same nodes' answers to [`crate::plan::Points`]'s
/// statement when the plan has one (else empty).
pub fn merge(
    merge: &Merge,
    answers: &[Value],
    points: &[Value],
    epoch: Epoch,
    owns: Owns<'_>,
) -> Result<Vec<Value>, Error> {
    let owned = |answers: &[Value]| -> Result<Vec<Vec<Series>>, Error> {
        let mut per_node = Vec::with_capacity(answers.len());
        for (i, a) in answers.iter().enumerate() {
            let mut series = series_of(a)?;
            if !matches!(merge, Merge::Show { .. }) {
                series.retain(|s| owns(i, &s.name, &s.tags));
            }
            per_node.push(series);
        }
        Ok(per_node)
    };
    let per_node = owned(answers)?;
    match merge {
        Merge::Show {
            what,
            limit,
            offset,
        } => Ok(show(*what, per_node, *limit, *offset)),
        Merge::Raw(shape) => raw(shape, per_node, epoch),
        Merge::Aggregate {
            shape,
            fields,
            by_time,
            fill,
            point_time,
            points: plan_points,
        } => {
            let chosen = match plan_points {
                Some(p) => Some(first_last(shape, fields, p, owned(points)?)?),
                None => None,
            };
            aggregate(
                shape,
                fields,
                *by_time,
                *fill,
                *point_time,
                per_node,
                chosen,
                epoch,
            )
        }
    }
}

fn cut<T>(items: Vec<T>, offset: Option<u64>, limit: Option<u64>) -> Vec<T> {
    let skip = usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let take = limit
        .filter(|&l| l > 0)
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    items.into_iter().skip(skip).take(take).collect()
}

/// Sorts rows as InfluxDB lists them: strings by their text.
fn row_order(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x.as_str(), y.as_str()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => x.to_string().cmp(&y.to_string()),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn show(
    what: ShowWhat,
    per_node: Vec<Vec<Series>>,
    limit: Option<u64>,
    offset: Option<u64>,
) -> Vec<Value> {
    // (name, tags) → columns, rows in first-seen order, seen rows.
    let mut merged: Vec<(Series, HashSet<String>)> = Vec::new();
    for s in per_node.into_iter().flatten() {
        let at = merged
            .iter()
            .position(|(m, _)| m.name == s.name && m.tags == s.tags);
        let (target, seen) = match at {
            Some(i) => &mut merged[i],
            None => {
                merged.push((
                    Series {
                        values: Vec::new(),
                        ..s.clone()
                    },
                    HashSet::new(),
                ));
                let last = merged.len() - 1;
                &mut merged[last]
            }
        };
        for row in s.values {
            if seen.insert(Value::Array(row.clone()).to_string()) {
                target.values.push(row);
            }
        }
    }
    if what == ShowWhat::Sorted {
        merged.sort_by(|(a, _), b| (&a.name, &a.tags).cmp(&(&b.0.name, &b.0.tags)));
    }
    merged
        .into_iter()
        .filter_map(|(mut s, _)| {
            if what == ShowWhat::Sorted {
                s.values.sort_by(|a, b| row_order(a, b));
            }
            s.values = cut(s.values, offset, limit);
            (!s.values.is_empty()).then(|| series_json(&s.name, None, &s.columns, s.values))
        })
        .collect()
}

fn series_json(
    name: &str,
    tags: Option<&BTreeMap<String, String>>,
    columns: &[String],
    values: Vec<Vec<Value>>,
) -> Value {
    let mut m = Map::new();
    if !name.is_empty() {
        m.insert("name".into(), Value::from(name));
    }
    if let Some(tags) = tags {
        m.insert(
            "tags".into(),
            Value::Object(
                tags.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
        );
    }
    m.insert("columns".into(), Value::from(columns.to_vec()));
    m.insert(
        "values".into(),
        Value::Array(values.into_iter().map(Value::Array).collect()),
    );
    Value::Object(m)
}

/// The output group of a series: the client's `GROUP BY` tags.
fn group_of(
    tags: &BTreeMap<String, String>,
    dims: &[GroupTag],
    regexes: &[Regex],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut r = regexes.iter();
    for d in dims {
        match d {
            GroupTag::All => out.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone()))),
            GroupTag::Key(k) => {
                out.insert(k.clone(), tags.get(k).cloned().unwrap_or_default());
            }
            GroupTag::Regex(_) => {
                if let Some(re) = r.next() {
                    out.extend(
                        tags.iter()
                            .filter(|(k, _)| re.is_match(k))
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                }
            }
        }
    }
    out
}

fn regexes(dims: &[GroupTag]) -> Result<Vec<Regex>, Error> {
    dims.iter()
        .filter_map(|d| match d {
            GroupTag::Regex(p) => {
                Some(Regex::new(p).map_err(|e| Error::Unsupported(format!("GROUP BY /{p}/: {e}"))))
            }
            _ => None,
        })
        .collect()
}

fn time_of(row: &[Value]) -> Result<i64, Error> {
    row.first()
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("a row's time is not an integer (nodes must be asked with epoch=ns)"))
}

type GroupKey = (String, BTreeMap<String, String>);

/// Cuts and writes the merged groups: `rows` per group are (time, values).
fn finish(
    shape: &Shape,
    columns: &[String],
    groups: BTreeMap<GroupKey, Vec<(i64, Vec<Value>)>>,
    epoch: Epoch,
) -> Vec<Value> {
    let grouped = !shape.group_tags.is_empty();
    let mut header = vec!["time".to_owned()];
    header.extend(columns.iter().cloned());
    // ORDER BY time DESC reverses the series too, as InfluxDB does.
    let groups: Vec<_> = if shape.descending {
        groups.into_iter().rev().collect()
    } else {
        groups.into_iter().collect()
    };
    let out: Vec<Value> = groups
        .into_iter()
        .filter_map(|((name, tags), mut rows)| {
            if shape.descending {
                rows.reverse();
            }
            let rows = cut(rows, shape.offset, shape.limit);
            (!rows.is_empty()).then(|| {
                let values = rows
                    .into_iter()
                    .map(|(t, mut v)| {
                        v.insert(0, epoch.format(t));
                        v
                    })
                    .collect();
                series_json(&name, grouped.then_some(&tags), &header, values)
            })
        })
        .collect();
    cut(out, shape.soffset, shape.slimit)
}

/// Series key → (output group, rows by time).
type United = BTreeMap<String, (GroupKey, BTreeMap<i64, Vec<Value>>)>;

/// Series key → (output group, rows by time, as `columns`): replicas of a
/// series united by time (a series holds one point per time). Columns
/// named in `tag_columns` take the series' tag value.
fn united(
    per_node: Vec<Vec<Series>>,
    dims: &[GroupTag],
    regexes: &[Regex],
    columns: &[String],
    tag_columns: &[String],
) -> Result<United, Error> {
    let mut series = United::new();
    for s in per_node.into_iter().flatten() {
        let index: Vec<Option<usize>> = columns
            .iter()
            .map(|c| s.columns.iter().skip(1).position(|x| x == c).map(|i| i + 1))
            .collect();
        let group = (s.name.clone(), group_of(&s.tags, dims, regexes));
        let entry = series
            .entry(s.key())
            .or_insert_with(|| (group, BTreeMap::new()));
        for row in &s.values {
            let t = time_of(row)?;
            entry.1.entry(t).or_insert_with(|| {
                columns
                    .iter()
                    .zip(&index)
                    .map(|(c, i)| match i {
                        Some(i) => row.get(*i).cloned().unwrap_or(Value::Null),
                        None if tag_columns.contains(c) => s
                            .tags
                            .get(c)
                            .filter(|v| !v.is_empty())
                            .map_or(Value::Null, |v| Value::from(v.as_str())),
                        None => Value::Null,
                    })
                    .collect()
            });
        }
    }
    Ok(series)
}

fn raw(shape: &Shape, per_node: Vec<Vec<Series>>, epoch: Epoch) -> Result<Vec<Value>, Error> {
    let regexes = regexes(&shape.group_tags)?;
    // The columns of the answer (without time).
    let mut columns: Vec<String> = Vec::new();
    let mut grouped_keys: BTreeSet<String> = BTreeSet::new();
    let mut tag_keys: BTreeSet<String> = BTreeSet::new();
    for s in per_node.iter().flatten() {
        for c in s.columns.iter().skip(1) {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
        let group = group_of(&s.tags, &shape.group_tags, &regexes);
        grouped_keys.extend(group.into_keys());
        tag_keys.extend(s.tags.keys().cloned());
    }
    let mut tag_columns = Vec::new();
    if shape.wildcard {
        tag_columns = tag_keys
            .into_iter()
            .filter(|k| !grouped_keys.contains(k) && !columns.contains(k))
            .collect();
        columns.extend(tag_columns.iter().cloned());
        columns.sort();
    }
    let series = united(
        per_node,
        &shape.group_tags,
        &regexes,
        &columns,
        &tag_columns,
    )?;
    // Rows of a group in time order, series key order among equal times.
    let mut groups: BTreeMap<GroupKey, Vec<(i64, Vec<Value>)>> = BTreeMap::new();
    for (_, (group, rows)) in series {
        groups.entry(group).or_default().extend(rows);
    }
    for rows in groups.values_mut() {
        rows.sort_by_key(|(t, _)| *t);
    }
    Ok(finish(shape, &columns, groups, epoch))
}

/// A number from an answer, kept an integer while it is one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Self> {
        v.as_i64()
            .map(Num::Int)
            .or_else(|| v.as_f64().map(Num::Float))
    }

    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.f64() + b.f64()),
        }
    }

    fn sub(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_sub(b)
                .map_or(Num::Float(a as f64 - b as f64), Num::Int),
            (a, b) => Num::Float(a.f64() - b.f64()),
        }
    }

    fn cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (a, b) => a.f64().total_cmp(&b.f64()),
        }
    }

    fn json(self) -> Value {
        match self {
            Num::Int(i) => Value::from(i),
            Num::Float(f) => float_json(f),
        }
    }
}

/// A float as Go's encoder writes it: integral values without `.0`.
fn float_json(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

/// Orders selector values: numbers by value, anything else by its text.
fn value_cmp(a: &Value, b: &Value) -> Ordering {
    match (Num::of(a), Num::of(b)) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// One aggregate being combined over series.
#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    Sum(Option<Num>),
    /// min, max, first, last: the chosen value and its time.
    Select(Func, Option<(Value, i64)>),
    Mean(Option<Num>, i64),
    Spread(Option<Num>, Option<Num>),
}

impl Acc {
    fn new(func: Func) -> Self {
        match func {
            Func::Count => Acc::Count(0),
            Func::Sum => Acc::Sum(None),
            Func::Mean => Acc::Mean(None, 0),
            Func::Spread => Acc::Spread(None, None),
            f => Acc::Select(f, None),
        }
    }

    /// Adds one node row's parts (`values`, in [`Func::parts`] order) at `t`.
    fn add(&mut self, values: &[&Value], t: i64) {
        let num = |i: usize| values.get(i).and_then(|v| Num::of(v));
        let sum = |acc: &mut Option<Num>, n: Option<Num>| {
            if let Some(n) = n {
                *acc = Some(acc.map_or(n, |a| a.add(n)));
            }
        };
        match self {
            Acc::Count(c) => *c += num(0).map_or(0, |n| n.f64() as i64),
            Acc::Sum(s) => sum(s, num(0)),
            Acc::Mean(s, c) => {
                sum(s, num(0));
                *c += num(1).map_or(0, |n| n.f64() as i64);
            }
            Acc::Spread(lo, hi) => {
                if let Some(max) = num(0) {
                    *hi = Some(hi.map_or(max, |h| if max.cmp(h).is_gt() { max } else { h }));
                }
                if let Some(min) = num(1) {
                    *lo = Some(lo.map_or(min, |l| if min.cmp(l).is_lt() { min } else { l }));
                }
            }
            Acc::Select(func, chosen) => {
                let Some(v) = values.first().filter(|v| !v.is_null()) else {
                    return;
                };
                let better = match chosen {
                    None => true,
                    Some((c, ct)) => {
                        let by_value = value_cmp(v, c);
                        match func {
                            // InfluxDB's reducers: ties go to the earlier
                            // point (min, max) or the larger value (first, last).
                            Func::Max => by_value.is_gt() || (by_value.is_eq() && t < *ct),
                            Func::Min => by_value.is_lt() || (by_value.is_eq() && t < *ct),
                            Func::First => t < *ct || (t == *ct && by_value.is_gt()),
                            _ => t > *ct || (t == *ct && by_value.is_gt()),
                        }
                    }
                };
                if better {
                    *chosen = Some(((*v).clone(), t));
                }
            }
        }
    }

    /// The value, or `None` when nothing was aggregated.
    fn value(&self) -> Option<Value> {
        match self {
            Acc::Count(c) => (*c > 0).then(|| Value::from(*c)),
            Acc::Sum(s) => s.map(Num::json),
            Acc::Mean(s, c) => s
                .filter(|_| *c > 0)
                .map(|s| float_json(s.f64() / *c as f64)),
            Acc::Spread(lo, hi) => lo.zip(*hi).map(|(l, h)| h.sub(l).json()),
            Acc::Select(_, chosen) => chosen.as_ref().map(|(v, _)| v.clone()),
        }
    }

    fn time(&self) -> Option<i64> {
        match self {
            Acc::Select(_, Some((_, t))) => Some(*t),
            _ => None,
        }
    }
}

/// (group, bucket, projection) → the selected point (value, time).
type Chosen = BTreeMap<(GroupKey, i64, usize), (Value, i64)>;

/// `first`/`last` of every group and bucket, from raw points: the earliest
/// (latest) point, a tie going to the larger value as InfluxDB's reducers
/// do. Replicas of a series are united by time first.
fn first_last(
    shape: &Shape,
    fields: &[Aggregate],
    points: &crate::plan::Points,
    per_node: Vec<Vec<Series>>,
) -> Result<Chosen, Error> {
    let regexes = regexes(&shape.group_tags)?;
    let names: Vec<String> = points.columns.iter().map(|(_, c)| c.clone()).collect();
    let series = united(per_node, &shape.group_tags, &regexes, &names, &[])?;
    let mut chosen = Chosen::new();
    for (_, (group, rows)) in series {
        for (t, values) in rows {
            let bucket = points.bucket.map_or(0, |(interval, offset)| {
                (t - offset).div_euclid(interval) * interval + offset
            });
            for ((field, _), v) in points.columns.iter().zip(values) {
                if v.is_null() {
                    continue;
                }
                let first = fields.get(*field).is_some_and(|f| f.func == Func::First);
                let slot = chosen.entry((group.clone(), bucket, *field));
                match slot {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert((v, t));
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        let (cv, ct) = e.get();
                        let by_value = value_cmp(&v, cv);
                        let better = if first {
                            t < *ct || (t == *ct && by_value.is_gt())
                        } else {
                            t > *ct || (t == *ct && by_value.is_gt())
                        };
                        if better {
                            e.insert((v, t));
                        }
                    }
                }
            }
        }
    }
    Ok(chosen)
}

#[allow(clippy::too_many_arguments)]
fn aggregate(
    shape: &Shape,
    fields: &[Aggregate],
    by_time: bool,
    fill: Fill,
    point_time: bool,
    per_node: Vec<Vec<Series>>,
    chosen: Option<Chosen>,
    epoch: Epoch,
) -> Result<Vec<Value>, Error> {
    let regexes = regexes(&shape.group_tags)?;
    // The first node that has a series answers for it.
    let mut seen: HashSet<String> = HashSet::new();
    // Group → bucket → (time of the bucket's first row, accumulators).
    let mut groups: BTreeMap<GroupKey, BTreeMap<i64, (i64, Vec<Acc>)>> = BTreeMap::new();
    for s in per_node.into_iter().flatten() {
        if !seen.insert(s.key()) {
            continue;
        }
        let index: Vec<Vec<Option<usize>>> = fields
            .iter()
            .map(|f| {
                f.columns
                    .iter()
                    .map(|c| s.columns.iter().position(|x| x == c))
                    .collect()
            })
            .collect();
        let group = (
            s.name.clone(),
            group_of(&s.tags, &shape.group_tags, &regexes),
        );
        let buckets = groups.entry(group).or_default();
        for row in &s.values {
            let t = time_of(row)?;
            let (_, accs) = buckets
                .entry(if by_time { t } else { 0 })
                .or_insert_with(|| (t, fields.iter().map(|f| Acc::new(f.func)).collect()));
            for (acc, index) in accs.iter_mut().zip(&index) {
                let parts: Vec<&Value> = index
                    .iter()
                    .map(|i| i.and_then(|i| row.get(i)).unwrap_or(&Value::Null))
                    .collect();
                acc.add(&parts, t);
            }
        }
    }
    if let Some(chosen) = chosen {
        for (group, buckets) in &mut groups {
            for (bucket, (_, accs)) in buckets.iter_mut() {
                for (i, acc) in accs.iter_mut().enumerate() {
                    if let Acc::Select(func @ (Func::First | Func::Last), _) = acc {
                        let pick = chosen.get(&(group.clone(), *bucket, i)).cloned();
                        *acc = Acc::Select(*func, pick);
                    }
                }
            }
        }
    }
    let columns: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    let out = groups
        .into_iter()
        .map(|(group, buckets)| {
            let mut rows: Vec<(i64, Vec<Option<Value>>, bool)> = buckets
                .into_values()
                .map(|(t, accs)| {
                    let time = if point_time {
                        accs.first().and_then(Acc::time).unwrap_or(t)
                    } else {
                        t
                    };
                    let values: Vec<Option<Value>> = accs.iter().map(Acc::value).collect();
                    (time, values, false)
                })
                .collect();
            fill_rows(&mut rows, fields, if by_time { fill } else { Fill::Null });
            let rows = rows
                .into_iter()
                .filter(|(_, v, _)| !(fill == Fill::None && v.iter().all(Option::is_none)))
                .map(|(t, v, _)| {
                    let values = v
                        .into_iter()
                        .zip(fields)
                        .map(|(v, f)| match (v, f.func) {
                            (Some(v), _) => v,
                            // fill(null) shows an empty count as 0; the
                            // other fills leave null where they found nothing.
                            (None, Func::Count) if fill == Fill::Null => Value::from(0),
                            (None, _) => Value::Null,
                        })
                        .collect();
                    (t, values)
                })
                .collect();
            (group, rows)
        })
        .collect();
    Ok(finish(shape, &columns, out, epoch))
}

/// Applies the client's fill to empty values (`None`) of rows in time order.
fn fill_rows(rows: &mut [(i64, Vec<Option<Value>>, bool)], fields: &[Aggregate], fill: Fill) {
    for col in 0..fields.len() {
        match fill {
            Fill::Null | Fill::None => {}
            Fill::Number(n) => {
                for r in rows.iter_mut() {
                    if r.1[col].is_none() {
                        r.1[col] = Some(float_json(n));
                    }
                }
            }
            Fill::Previous => {
                let mut last: Option<Value> = None;
                for r in rows.iter_mut() {
                    match &r.1[col] {
                        Some(v) => last = Some(v.clone()),
                        None => r.1[col] = last.clone(),
                    }
                }
            }
            Fill::Linear => {
                let known: Vec<(usize, i64, Num)> = rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.1[col].as_ref().and_then(Num::of).map(|n| (i, r.0, n)))
                    .collect();
                for w in known.windows(2) {
                    let ((i0, t0, v0), (i1, t1, v1)) = (w[0], w[1]);
                    for r in rows.iter_mut().take(i1).skip(i0 + 1) {
                        let slope = (v1.f64() - v0.f64()) / (t1 - t0) as f64;
                        let v = v0.f64() + slope * (r.0 - t0) as f64;
                        r.1[col] = Some(match (v0, v1) {
                            (Num::Int(_), Num::Int(_)) => Value::from(v as i64),
                            _ => float_json(v),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, plan};
    use crate::statement::parse;
    use serde_json::json;

    fn two_nodes() -> trident_cluster::Placement {
        serde_json::from_value::<trident_cluster::Topology>(json!({
            "nodes": [{"id": "a", "url": "http://x:1"}, {"id": "b", "url": "http://x:2"}],
            "replication": 2
        }))
        .unwrap()
        .validate()
        .unwrap()
    }

    fn merge_of(q: &str, answers: &[Value]) -> Result<Vec<Value>, Error> {
        let placement = two_nodes();
        let Plan::Fanout { merge: m, .. } =
            plan(&parse(q).unwrap()[0], &placement, Some("db")).unwrap()
        else {
            panic!("not a fan-out")
        };
        merge(&m, answers, &[], Epoch::Unit(1), &|_, _, _| true)
    }

    #[test]
    fn raw_rows_merge_by_time_and_replicas_collapse() {
        let a = json!({"series": [
            {"name": "cpu", "tags": {"host": "a"}, "columns": ["time", "v"], "values": [[1, 1], [3, 3]]},
            {"name": "cpu", "tags": {"host": "b"}, "columns": ["time", "v"], "values": [[2, 2]]}
        ]});
        // A replica of host=a, and host=c.
        let b = json!({"series": [
            {"name": "cpu", "tags": {"host": "a"}, "columns": ["time", "v"], "values": [[1, 1], [3, 3]]},
            {"name": "cpu", "tags": {"host": "c"}, "columns": ["time", "v"], "values": [[4, 4]]}
        ]});
        let out = merge_of(
            "SELECT v FROM cpu LIMIT 2 OFFSET 1",
            &[a.clone(), b.clone()],
        )
        .unwrap();
        assert_eq!(
            out,
            vec![json!({"name": "cpu", "columns": ["time", "v"], "values": [[2, 2], [3, 3]]})]
        );
        let out = merge_of(
            "SELECT v FROM cpu GROUP BY host ORDER BY time DESC SLIMIT 1",
            &[a, b],
        )
        .unwrap();
        // Descending order reverses the series too.
        assert_eq!(
            out,
            vec![
                json!({"name": "cpu", "tags": {"host": "c"}, "columns": ["time", "v"], "values": [[4, 4]]})
            ]
        );
    }

    #[test]
    fn a_copy_on_a_node_that_does_not_own_the_series_is_skipped() {
        let placement = two_nodes();
        let Plan::Fanout { merge: m, .. } = plan(
            &parse("SELECT count(v) FROM cpu").unwrap()[0],
            &placement,
            Some("db"),
        )
        .unwrap() else {
            panic!()
        };
        let cols = json!(["time", "__trident_0_count"]);
        // Node 0 holds a stale copy of host=a; node 1 owns it.
        let stale = json!({"series": [{"name": "cpu", "tags": {"host": "a"}, "columns": cols, "values": [[0, 3]]}]});
        let owner = json!({"series": [{"name": "cpu", "tags": {"host": "a"}, "columns": cols, "values": [[0, 5]]}]});
        let out = merge(
            &m,
            &[stale.clone(), owner.clone()],
            &[],
            Epoch::Unit(1),
            &|i, _, _| i == 1,
        )
        .unwrap();
        assert_eq!(out[0]["values"], json!([[0, 5]]));
        let out = merge(&m, &[stale, owner], &[], Epoch::Unit(1), &|_, _, _| true).unwrap();
        assert_eq!(
            out[0]["values"],
            json!([[0, 3]]),
            "without the filter the first copy wins"
        );
    }

    #[test]
    fn select_star_brings_the_tags_back_as_columns() {
        let a = json!({"series": [
            {"name": "cpu", "tags": {"dc": "", "host": "b"}, "columns": ["time", "m", "v"], "values": [[1, 4, 3]]}
        ]});
        let b = json!({"series": [
            {"name": "cpu", "tags": {"dc": "x", "host": "a"}, "columns": ["time", "v"], "values": [[1, 1]]}
        ]});
        let out = merge_of("SELECT * FROM cpu", &[a, b]).unwrap();
        assert_eq!(
            out,
            vec![
                json!({"name": "cpu", "columns": ["time", "dc", "host", "m", "v"],
            "values": [[1, "x", "a", null, 1], [1, null, "b", 4, 3]]})
            ]
        );
    }

    #[test]
    fn aggregates_combine_per_bucket() {
        let cols = json!([
            "time",
            "__trident_0_sum",
            "__trident_0_count",
            "__trident_1_count",
            "__trident_2_max",
            "__trident_3_max",
            "__trident_3_min"
        ]);
        let a = json!({"series": [
            {"name": "cpu", "tags": {"host": "a"}, "columns": cols, "values": [[0, 4, 2, 2, 3, 3, 1], [10, null, 0, 0, null, null, null], [20, 1.5, 1, 1, 1.5, 1.5, 1.5]]}
        ]});
        let b = json!({"series": [
            {"name": "cpu", "tags": {"host": "a"}, "columns": cols, "values": [[0, 999, 9, 9, 999, 999, 999]]},
            {"name": "cpu", "tags": {"host": "b"}, "columns": cols, "values": [[0, 2, 1, 1, 2, 2, 2], [10, null, 0, 0, null, null, null], [20, null, 0, 0, null, null, null]]}
        ]});
        let q = "SELECT mean(v), count(v), max(v), spread(v) FROM cpu WHERE time >= 0 AND time < 30 GROUP BY time(10ns)";
        let out = merge_of(q, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            out,
            vec![
                json!({"name": "cpu", "columns": ["time", "mean", "count", "max", "spread"],
            "values": [[0, 2, 3, 3, 2], [10, null, 0, null, null], [20, 1.5, 1, 1.5, 0]]})
            ]
        );
        let out = merge_of(&format!("{q} fill(none)"), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(out[0]["values"].as_array().unwrap().len(), 2);
        let out = merge_of(&format!("{q} fill(previous)"), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(out[0]["values"][1], json!([10, 2, 3, 3, 2]));
        let out = merge_of(&format!("{q} fill(-1)"), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(out[0]["values"][1], json!([10, -1, -1, -1, -1]));
        let out = merge_of(&format!("{q} fill(linear)"), &[a, b]).unwrap();
        assert_eq!(out[0]["values"][1], json!([10, 1.75, 2, 2.25, 1]));
    }

    #[test]
    fn a_lone_selector_keeps_its_points_time() {
        let a = json!({"series": [{"name": "cpu", "tags": {"host": "a"}, "columns": ["time", "__trident_0_max"], "values": [[7, 5]]}]});
        let b = json!({"series": [{"name": "cpu", "tags": {"host": "b"}, "columns": ["time", "__trident_0_max"], "values": [[3, 5]]}]});
        let out = merge_of("SELECT max(v) FROM cpu", &[a.clone(), b.clone()]).unwrap();
        assert_eq!(out[0]["values"], json!([[3, 5]]));
        let a = json!({"series": [{"name": "cpu", "tags": {"host": "a"}, "columns": ["time", "__trident_0_first"], "values": [[3, 1]]}]});
        let b = json!({"series": [{"name": "cpu", "tags": {"host": "b"}, "columns": ["time", "__trident_0_first"], "values": [[3, 4]]}]});
        let out = merge_of("SELECT first(v) FROM cpu", &[a, b]).unwrap();
        assert_eq!(out[0]["values"], json!([[3, 4]]));
    }

    #[test]
    fn shows_unite_sort_and_cut() {
        let a = json!({"series": [{"name": "measurements", "columns": ["name"], "values": [["mem"], ["cpu"]]}]});
        let b = json!({"series": [{"name": "measurements", "columns": ["name"], "values": [["disk"], ["cpu"]]}]});
        let out = merge_of("SHOW MEASUREMENTS LIMIT 2", &[a, b]).unwrap();
        assert_eq!(
            out,
            vec![
                json!({"name": "measurements", "columns": ["name"], "values": [["cpu"], ["disk"]]})
            ]
        );
        let a = json!({"series": [{"name": "databases", "columns": ["name"], "values": [["b"], ["a"]]}]});
        let b = json!({"series": [{"name": "databases", "columns": ["name"], "values": [["b"], ["c"]]}]});
        let out = merge_of("SHOW DATABASES", &[a, b]).unwrap();
        assert_eq!(out[0]["values"], json!([["b"], ["a"], ["c"]]));
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for answer in [
            json!({"series": 3}),
            json!({"series": [{"columns": 1}]}),
            json!({"series": [{"columns": ["time"], "values": [["x"]]}]}),
        ] {
            assert!(merge_of("SELECT v FROM cpu", &[answer]).is_err());
        }
    }
}
