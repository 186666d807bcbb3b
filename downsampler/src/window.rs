//! Tumbling event-time windows per partition: the downsampler's state and
//! its only logic. No I/O: records go in, closed windows come out as line
//! protocol.
//!
//! ```text
//! (partition, db/rp, line, ingest time) ──add──► per window size:
//!     open windows: start → {(target, series, field) → aggregate}
//! close(partition) ──► windows whose end ≤ newest event time − lateness,
//!     in order, as "series field_count=..,field_sum=.. start" lines
//! ```
//!
//! Strings (targets, series keys, field keys) are interned once; the maps
//! are keyed by three `u32` symbols, so a point for a known series and
//! field allocates nothing (string fields keep their last value, which is
//! the exception).
//!
//! The replay rule lives here too: a window whose start is before
//! `emit_from` is never emitted, because after a restart its first points
//! may not have been re-read (see `docs/downsampler.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hashbrown::HashMap;
use string_interner::{DefaultBackend, DefaultSymbol, StringInterner, Symbol};
use trident_line_protocol::{FieldValue, Line};

/// Which aggregates numeric fields get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Aggregates {
    /// Number of points.
    pub count: bool,
    /// Sum.
    pub sum: bool,
    /// Smallest value.
    pub min: bool,
    /// Largest value.
    pub max: bool,
    /// Mean (float).
    pub mean: bool,
    /// Value with the earliest time.
    pub first: bool,
    /// Value with the latest time.
    pub last: bool,
}

impl Aggregates {
    /// From names (`count`, `sum`, …); `None` names the unknown one.
    pub fn from_names(names: &[String]) -> Result<Self, String> {
        let mut a = Self::default();
        for name in names {
            match name.as_str() {
                "count" => a.count = true,
                "sum" => a.sum = true,
                "min" => a.min = true,
                "max" => a.max = true,
                "mean" => a.mean = true,
                "first" => a.first = true,
                "last" => a.last = true,
                other => return Err(other.to_owned()),
            }
        }
        Ok(a)
    }
}

/// How windows are cut and when they close; times in nanoseconds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Window sizes.
    pub windows: Vec<i64>,
    /// Newest event time − lateness = the watermark.
    pub lateness: i64,
    /// Points more than this ahead of their ingest time are dropped.
    pub future_skew: i64,
    /// Windows starting before this are never emitted.
    pub emit_from: i64,
    /// What numeric fields get.
    pub aggregates: Aggregates,
}

/// What was dropped or held back, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Points whose window had already closed (once per window size).
    pub late: u64,
    /// Points too far ahead of their ingest time.
    pub future: u64,
    /// Points whose field changed type within a window.
    pub type_conflicts: u64,
    /// Windows closed but not emitted: they may start before the replayed
    /// range (the restart rule).
    pub withheld: u64,
    /// Windows emitted.
    pub emitted: u64,
}

#[derive(Debug, Clone)]
enum Agg {
    Float {
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
        first: (i64, f64),
        last: (i64, f64),
    },
    Int {
        count: u64,
        sum: i64,
        min: i64,
        max: i64,
        first: (i64, i64),
        last: (i64, i64),
    },
    Bool {
        count: u64,
        last: (i64, bool),
    },
    Str {
        count: u64,
        last: (i64, String),
    },
}

impl Agg {
    fn new(ts: i64, value: &FieldValue<'_>) -> Self {
        match value {
            FieldValue::Float(v) => Agg::Float {
                count: 1,
                sum: *v,
                min: *v,
                max: *v,
                first: (ts, *v),
                last: (ts, *v),
            },
            FieldValue::Integer(v) => Agg::Int {
                count: 1,
                sum: *v,
                min: *v,
                max: *v,
                first: (ts, *v),
                last: (ts, *v),
            },
            // Written back as integers: InfluxDB 1.x stores no unsigned type.
            FieldValue::UInteger(v) => {
                let v = i64::try_from(*v).unwrap_or(i64::MAX);
                Agg::Int {
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                    first: (ts, v),
                    last: (ts, v),
                }
            }
            FieldValue::Boolean(b) => Agg::Bool {
                count: 1,
                last: (ts, *b),
            },
            FieldValue::String(s) => Agg::Str {
                count: 1,
                last: (ts, s.to_string()),
            },
        }
    }

    /// Adds a point; `false` if its type differs from the window's.
    fn add(&mut self, ts: i64, value: &FieldValue<'_>) -> bool {
        // A point at the time of the first one replaces it, as a second
        // write of the same point does in InfluxDB.
        fn first<T: Copy>(slot: &mut (i64, T), ts: i64, v: T) {
            if ts <= slot.0 {
                *slot = (ts, v);
            }
        }
        fn last<T: Copy>(slot: &mut (i64, T), ts: i64, v: T) {
            if ts >= slot.0 {
                *slot = (ts, v);
            }
        }
        match (self, value) {
            (
                Agg::Float {
                    count,
                    sum,
                    min,
                    max,
                    first: f,
                    last: l,
                },
                FieldValue::Float(v),
            ) => {
                *count += 1;
                *sum += v;
                *min = min.min(*v);
                *max = max.max(*v);
                first(f, ts, *v);
                last(l, ts, *v);
            }
            (
                Agg::Int {
                    count,
                    sum,
                    min,
                    max,
                    first: f,
                    last: l,
                },
                FieldValue::Integer(_) | FieldValue::UInteger(_),
            ) => {
                let v = match value {
                    FieldValue::Integer(v) => *v,
                    FieldValue::UInteger(v) => i64::try_from(*v).unwrap_or(i64::MAX),
                    _ => 0,
                };
                *count += 1;
                *sum = sum.wrapping_add(v);
                *min = (*min).min(v);
                *max = (*max).max(v);
                first(f, ts, v);
                last(l, ts, v);
            }
            (Agg::Bool { count, last: l }, FieldValue::Boolean(b)) => {
                *count += 1;
                last(l, ts, *b);
            }
            (Agg::Str { count, last: l }, FieldValue::String(s)) => {
                *count += 1;
                if ts >= l.0 {
                    *l = (ts, s.to_string());
                }
            }
            _ => return false,
        }
        true
    }

    /// Appends `key_agg=value` pairs (comma-separated, after `sep`).
    fn write_fields(&self, key: &str, aggs: Aggregates, out: &mut String) {
        let mut put = |name: &str, value: std::fmt::Arguments<'_>| {
            if !out.ends_with(' ') {
                out.push(',');
            }
            let _ = write!(out, "{key}_{name}={value}");
        };
        match self {
            Agg::Float {
                count,
                sum,
                min,
                max,
                first,
                last,
            } => {
                if aggs.count {
                    put("count", format_args!("{count}i"));
                }
                if aggs.sum {
                    put("sum", format_args!("{}", float(*sum)));
                }
                if aggs.min {
                    put("min", format_args!("{}", float(*min)));
                }
                if aggs.max {
                    put("max", format_args!("{}", float(*max)));
                }
                if aggs.mean {
                    put("mean", format_args!("{}", float(*sum / *count as f64)));
                }
                if aggs.first {
                    put("first", format_args!("{}", float(first.1)));
                }
                if aggs.last {
                    put("last", format_args!("{}", float(last.1)));
                }
            }
            Agg::Int {
                count,
                sum,
                min,
                max,
                first,
                last,
            } => {
                if aggs.count {
                    put("count", format_args!("{count}i"));
                }
                if aggs.sum {
                    put("sum", format_args!("{sum}i"));
                }
                if aggs.min {
                    put("min", format_args!("{min}i"));
                }
                if aggs.max {
                    put("max", format_args!("{max}i"));
                }
                if aggs.mean {
                    put(
                        "mean",
                        format_args!("{}", float(*sum as f64 / *count as f64)),
                    );
                }
                if aggs.first {
                    put("first", format_args!("{}i", first.1));
                }
                if aggs.last {
                    put("last", format_args!("{}i", last.1));
                }
            }
            Agg::Bool { count, last } => {
                put("count", format_args!("{count}i"));
                put(
                    "last",
                    format_args!("{}", if last.1 { "true" } else { "false" }),
                );
            }
            Agg::Str { count, last } => {
                put("count", format_args!("{count}i"));
                let escaped = last.1.replace('\\', "\\\\").replace('"', "\\\"");
                put("last", format_args!("\"{escaped}\""));
            }
        }
    }
}

/// A float as line protocol reads it back exactly (Rust's shortest
/// round-trip form; a whole number stays a float without a suffix).
fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".to_owned()
    }
}

type Key = (u32, u32, u32);

#[derive(Debug, Default)]
struct SizeState {
    open: BTreeMap<i64, HashMap<Key, Agg>>,
    /// Windows starting before this are closed.
    closed_before: i64,
}

#[derive(Debug)]
struct Partition {
    newest: i64,
    sizes: Vec<SizeState>,
}

/// A closed window ready to write: `lines` for `target` (as interned, see
/// [`Rollups::target`]) and window size `window` (an index into
/// [`Settings::windows`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The `db\0rp` of the source points.
    pub target: String,
    /// Index of the window size.
    pub window: usize,
    /// Window start, nanoseconds.
    pub start: i64,
    /// Line protocol, one line per series, `\n`-terminated.
    pub lines: String,
}

/// All partitions' open windows.
#[derive(Debug)]
pub struct Rollups {
    settings: Settings,
    strings: StringInterner<DefaultBackend>,
    partitions: HashMap<i32, Partition>,
    counters: Counters,
    scratch: Vec<u8>,
}

fn id(symbol: DefaultSymbol) -> u32 {
    u32::try_from(symbol.to_usize()).unwrap_or(u32::MAX)
}

impl Rollups {
    /// Empty state.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            strings: StringInterner::new(),
            partitions: HashMap::new(),
            counters: Counters::default(),
            scratch: Vec::with_capacity(256),
        }
    }

    /// The interned id of a target `db\0rp`.
    pub fn target(&mut self, db: &str, rp: &str) -> u32 {
        self.scratch.clear();
        self.scratch.extend_from_slice(db.as_bytes());
        self.scratch.push(0);
        self.scratch.extend_from_slice(rp.as_bytes());
        // Both parts are &str, so the joined bytes are UTF-8.
        let text = std::str::from_utf8(&self.scratch).unwrap_or_default();
        id(self.strings.get_or_intern(text))
    }

    /// Adds every field of `line` (ingested at `ingest` ns) to the open
    /// windows of `partition`.
    pub fn add(&mut self, partition: i32, target: u32, line: &Line<'_>, ingest: i64) {
        let Some(ts) = line.timestamp() else { return };
        if ts > ingest.saturating_add(self.settings.future_skew) {
            self.counters.future += 1;
            return;
        }
        self.scratch.clear();
        line.series_key_into(&mut self.scratch);
        let series = match std::str::from_utf8(&self.scratch) {
            Ok(key) => id(self.strings.get_or_intern(key)),
            Err(_) => return,
        };
        let sizes = self.settings.windows.len();
        let partition = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                newest: i64::MIN,
                sizes: (0..sizes)
                    .map(|_| SizeState {
                        open: BTreeMap::new(),
                        closed_before: i64::MIN,
                    })
                    .collect(),
            });
        partition.newest = partition.newest.max(ts);
        for (key, value) in line.fields() {
            let field = id(self.strings.get_or_intern(key.raw()));
            for (size, state) in self.settings.windows.iter().zip(&mut partition.sizes) {
                let start = ts.div_euclid(*size) * size;
                if start < state.closed_before {
                    self.counters.late += 1;
                    continue;
                }
                let window = state.open.entry(start).or_default();
                match window.entry((target, series, field)) {
                    hashbrown::hash_map::Entry::Occupied(mut agg) => {
                        if !agg.get_mut().add(ts, &value) {
                            self.counters.type_conflicts += 1;
                        }
                    }
                    hashbrown::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Agg::new(ts, &value));
                    }
                }
            }
        }
    }

    /// Closes the windows of `partition` that the watermark has passed,
    /// oldest first; those that may hold partial data are dropped.
    pub fn close(&mut self, partition: i32) -> Vec<Emitted> {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Vec::new();
        };
        if state.newest == i64::MIN {
            return Vec::new();
        }
        let watermark = state.newest.saturating_sub(self.settings.lateness);
        let mut out = Vec::new();
        for (index, (size, sizes)) in self
            .settings
            .windows
            .iter()
            .zip(&mut state.sizes)
            .enumerate()
        {
            let closed_before = watermark.div_euclid(*size) * size;
            while let Some((&start, _)) = sizes.open.first_key_value() {
                if start >= closed_before {
                    break;
                }
                let Some((start, window)) = sizes.open.pop_first() else {
                    break;
                };
                if start < self.settings.emit_from {
                    self.counters.withheld += 1;
                    continue;
                }
                self.counters.emitted += 1;
                out.extend(render(
                    &self.strings,
                    self.settings.aggregates,
                    index,
                    start,
                    window,
                ));
            }
            sizes.closed_before = sizes.closed_before.max(closed_before);
        }
        out
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Distinct strings interned.
    pub fn interned(&self) -> usize {
        self.strings.len()
    }

    /// Windows open, over all partitions and sizes.
    pub fn open_windows(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| p.sizes.iter())
            .map(|s| s.open.len())
            .sum()
    }
}

/// One window as lines, one per (target, series), grouped per target.
fn render(
    strings: &StringInterner<DefaultBackend>,
    aggregates: Aggregates,
    index: usize,
    start: i64,
    window: HashMap<Key, Agg>,
) -> Vec<Emitted> {
    let resolve = |symbol: u32| {
        DefaultSymbol::try_from_usize(symbol as usize)
            .and_then(|s| strings.resolve(s))
            .unwrap_or_default()
    };
    let mut entries: Vec<(Key, Agg)> = window.into_iter().collect();
    // By target, series, then field name: deterministic output.
    entries.sort_by(|a, b| {
        (a.0.0, resolve(a.0.1), resolve(a.0.2)).cmp(&(b.0.0, resolve(b.0.1), resolve(b.0.2)))
    });
    let mut out: Vec<Emitted> = Vec::new();
    let mut current: Option<(u32, u32)> = None;
    for ((target, series, field), agg) in entries {
        if current != Some((target, series)) {
            if current.is_some()
                && let Some(last) = out.last_mut()
            {
                let _ = writeln!(last.lines, " {start}");
            }
            if current.map(|c| c.0) != Some(target) {
                out.push(Emitted {
                    target: resolve(target).to_owned(),
                    window: index,
                    start,
                    lines: String::new(),
                });
            }
            if let Some(last) = out.last_mut() {
                last.lines.push_str(resolve(series));
                last.lines.push(' ');
            }
            current = Some((target, series));
        }
        if let Some(last) = out.last_mut() {
            agg.write_fields(resolve(field), aggregates, &mut last.lines);
        }
    }
    if current.is_some()
        && let Some(last) = out.last_mut()
    {
        let _ = writeln!(last.lines, " {start}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    fn all() -> Aggregates {
        Aggregates::from_names(
            &["count", "sum", "min", "max", "mean", "first", "last"].map(str::to_owned),
        )
        .unwrap()
    }

    fn rollups(emit_from: i64) -> Rollups {
        Rollups::new(Settings {
            windows: vec![MIN, 5 * MIN],
            lateness: 10_000_000_000,
            future_skew: MIN,
            emit_from,
            aggregates: all(),
        })
    }

    fn add(r: &mut Rollups, partition: i32, text: &str) {
        let target = r.target("db", "");
        for line in trident_line_protocol::parse_lines(text.as_bytes()) {
            let line = line.unwrap();
            r.add(partition, target, &line, line.timestamp().unwrap());
        }
    }

    #[test]
    fn a_window_closes_once_the_watermark_passes_its_end_with_every_aggregate() {
        let mut r = rollups(i64::MIN);
        add(
            &mut r,
            0,
            &format!(
                "cpu,host=a v=2,n=5i {}\ncpu,host=a v=4,n=1i {}\ncpu,host=a v=3,n=3i {}\n",
                10 * 1_000_000_000i64,
                50 * 1_000_000_000i64,
                20 * 1_000_000_000i64
            ),
        );
        assert!(r.close(0).is_empty(), "newest 50 s − 10 s lateness < 60 s");
        add(
            &mut r,
            0,
            &format!("cpu,host=a v=9 {}\n", 71 * 1_000_000_000i64),
        );
        let out = r.close(0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].target, "db\0");
        assert_eq!(out[0].window, 0);
        assert_eq!(
            out[0].lines,
            "cpu,host=a n_count=3i,n_sum=9i,n_min=1i,n_max=5i,n_mean=3,n_first=5i,n_last=1i,\
             v_count=3i,v_sum=9,v_min=2,v_max=4,v_mean=3,v_first=2,v_last=4 0\n"
        );
        assert_eq!(r.counters().emitted, 1);
        // A point for the closed window is late; the 5-minute window is open.
        add(
            &mut r,
            0,
            &format!("cpu,host=a v=1 {}\n", 30 * 1_000_000_000i64),
        );
        assert_eq!(r.counters().late, 1);
        assert_eq!(r.open_windows(), 2, "[60 s, 120 s) and [0, 5 min)");
    }

    #[test]
    fn the_replay_rule_withholds_windows_that_start_too_early() {
        let mut r = rollups(MIN);
        add(
            &mut r,
            1,
            &format!("m v=1 {}\nm v=2 {}\n", 30_000_000_000i64, 90_000_000_000i64),
        );
        add(&mut r, 1, &format!("m v=3 {}\n", 200_000_000_000i64));
        let out = r.close(1);
        assert_eq!(out.len(), 1, "[0, 60 s) withheld, [60 s, 120 s) emitted");
        assert_eq!(out[0].start, MIN);
        assert_eq!(r.counters().withheld, 1);
    }

    #[test]
    fn partitions_have_their_own_watermarks_and_future_points_are_dropped() {
        let mut r = rollups(i64::MIN);
        add(&mut r, 0, &format!("m v=1 {}\n", 10_000_000_000i64));
        add(&mut r, 1, &format!("m v=1 {}\n", 500_000_000_000i64));
        assert!(
            r.close(0).is_empty(),
            "partition 1's time does not close 0's windows"
        );
        let target = r.target("db", "");
        let line = trident_line_protocol::parse_lines(b"m v=1 1000000000000")
            .next()
            .unwrap()
            .unwrap();
        r.add(0, target, &line, 0);
        assert_eq!(r.counters().future, 1);
    }

    #[test]
    fn strings_booleans_and_type_conflicts() {
        let mut r = rollups(i64::MIN);
        add(
            &mut r,
            0,
            "s,k=1 msg=\"a\\\"b\",ok=true 1\ns,k=1 msg=\"c\",ok=false 2\ns,k=1 ok=3 3\n",
        );
        add(
            &mut r,
            0,
            &format!("s,k=2 x=1 {}\n", 100 * 1_000_000_000i64),
        );
        let out = r.close(0);
        assert_eq!(
            out[0].lines,
            "s,k=1 msg_count=2i,msg_last=\"c\",ok_count=2i,ok_last=false 0\n"
        );
        assert_eq!(r.counters().type_conflicts, 2, "once per window size");
        // Each line parses back.
        for line in trident_line_protocol::parse_lines(out[0].lines.as_bytes()) {
            line.unwrap();
        }
    }

    #[test]
    fn two_series_and_two_targets_make_separate_lines() {
        let mut r = rollups(i64::MIN);
        let (a, b) = (r.target("one", ""), r.target("two", "week"));
        for (target, text) in [(a, "m,h=x v=1 1"), (a, "m,h=y v=2 2"), (b, "m,h=x v=3 3")] {
            let line = trident_line_protocol::parse_lines(text.as_bytes())
                .next()
                .unwrap()
                .unwrap();
            r.add(0, target, &line, 3);
        }
        add(
            &mut r,
            0,
            &format!("m,h=z v=1 {}\n", 100 * 1_000_000_000i64),
        );
        let mut out = r.close(0);
        out.sort_by(|x, y| x.target.cmp(&y.target));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].target, "one\0");
        assert_eq!(out[0].lines.lines().count(), 2);
        assert_eq!(out[1].target, "two\0week");
        assert!(out[1].lines.starts_with("m,h=x v_count=1i,"));
    }
}
