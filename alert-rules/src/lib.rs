//! # trident-alert-rules
//!
//! The alert rules file, shared by the gateway (which sends the alert topic
//! only the points some rule can match) and the alerter (which evaluates
//! the rules). What flows through it:
//!
//! ```text
//! rules.toml ──RuleSet::parse──► [Rule] (or an error at line:column)
//! Line ──RuleSet::wants──► does any rule's selector match this point?
//! Template + labels + value ──render──► annotation text
//! ```
//!
//! Pure logic: no runtime, no network; [`RuleSet::load`] reads one file.
//! The file format, with every key, is in `docs/alert-rules.md`.

mod template;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;
use trident_line_protocol::{FieldKey, Line};

pub use template::Template;

/// Why a rules file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: cannot read the rules file: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// The file is not a valid rules file; `line` and `column` count from 1.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file, or `rules` for text without one.
        file: String,
        /// Line of the offending text.
        line: usize,
        /// Column (in characters) of the offending text.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// How a tag matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOp {
    /// `=`: equal.
    Eq,
    /// `!=`: not equal.
    Ne,
    /// `=~`: the regex matches somewhere in the value (InfluxQL's meaning:
    /// unanchored; write `^…$` for the whole value).
    Re,
    /// `!~`: the regex matches nowhere in the value.
    NotRe,
}

/// One condition on a tag. A point without the tag has the empty value.
#[derive(Debug, Clone)]
pub struct TagMatcher {
    /// The tag key.
    pub tag: String,
    /// The comparison.
    pub op: TagOp,
    /// The value or regex as written.
    pub value: String,
    regex: Option<Regex>,
}

impl TagMatcher {
    /// Whether a tag value (`None`: the point has no such tag) passes.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match (self.op, &self.regex) {
            (TagOp::Eq, _) => value == self.value,
            (TagOp::Ne, _) => value != self.value,
            (TagOp::Re, Some(re)) => re.is_match(value),
            (TagOp::NotRe, Some(re)) => !re.is_match(value),
            (TagOp::Re | TagOp::NotRe, None) => false,
        }
    }
}

/// Which points a rule looks at: one field of one measurement, with tag
/// conditions.
#[derive(Debug, Clone)]
pub struct Selector {
    /// The measurement (exact name).
    pub measurement: String,
    /// The field (exact key), with its search in a line prepared once:
    /// the gateway asks it of every point of the measurement.
    pub field: FieldKey,
    /// Tag conditions; all must hold.
    pub matchers: Vec<TagMatcher>,
}

impl Selector {
    /// Whether `line` carries this selector's field and passes its tag
    /// conditions (the measurement is the caller's to check).
    pub fn matches_fields_and_tags(&self, line: &Line<'_>) -> bool {
        line.has_field_key(&self.field)
            && self.matchers.iter().all(|m| {
                let value = line.tag(&m.tag);
                m.matches(value.as_ref().map(|v| v.as_str()).as_deref())
            })
    }

    /// Whether `line` is a point this selector looks at.
    pub fn matches(&self, line: &Line<'_>) -> bool {
        line.measurement().eq_str(&self.measurement) && self.matches_fields_and_tags(line)
    }
}

/// How the points in the window become one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregate {
    /// The latest value.
    Last,
    /// The mean.
    Avg,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// The sum.
    Sum,
    /// How many points.
    Count,
    /// Increase per second between the first and the last point.
    Rate,
    /// The q-th percentile, 0 < q < 100.
    Percentile(f64),
}

impl Aggregate {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "last" => Self::Last,
            "avg" | "mean" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "sum" => Self::Sum,
            "count" => Self::Count,
            "rate" => Self::Rate,
            other => {
                let q: f64 = other.strip_prefix('p')?.parse().ok()?;
                if !(q > 0.0 && q < 100.0) {
                    return None;
                }
                Self::Percentile(q)
            }
        })
    }
}

/// How the aggregate is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Comparison {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
            Self::Eq => value == threshold,
            Self::Ne => value != threshold,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "<" => Self::Lt,
            "<=" => Self::Le,
            "==" => Self::Eq,
            "!=" => Self::Ne,
            _ => return None,
        })
    }
}

/// What makes a rule's condition true.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The aggregate over the window compared with a threshold.
    Threshold {
        /// The aggregation.
        aggregate: Aggregate,
        /// The sliding event-time window (`None` only for `last`).
        window: Option<Duration>,
        /// The comparison.
        op: Comparison,
        /// The threshold.
        threshold: f64,
    },
    /// No point from a series (or group) for this long.
    Absent {
        /// How long the silence must last.
        after: Duration,
    },
}

/// One alert rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name; the `alertname` label.
    pub name: String,
    /// The points it looks at.
    pub selector: Selector,
    /// When it is true.
    pub condition: Condition,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    /// How long a firing alert stays firing after the condition stops
    /// holding (no flapping at the threshold).
    pub keep_firing_for: Duration,
    /// Tags that make a group; empty: each series on its own.
    pub group_by: Vec<String>,
    /// Labels added to the alert.
    pub labels: BTreeMap<String, String>,
    /// Annotations, templated with the labels and the value.
    pub annotations: BTreeMap<String, Template>,
}

/// A checked rules file, indexed by measurement.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    by_measurement: ByMeasurement,
}

/// The indices of the rules on each measurement.
#[derive(Debug, Clone)]
enum ByMeasurement {
    /// In file order, while there are few enough measurements for
    /// comparing a line's with each to be cheaper than hashing it.
    Few(Vec<(String, Vec<usize>)>),
    Hashed(HashMap<String, Vec<usize>>),
}

impl Default for ByMeasurement {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

/// Distinct measurements up to which [`RuleSet`] compares rather than
/// hashes: a line's measurement is compared with a length check and a
/// short `memcmp` each, where SipHash costs ~20 ns (the gateway asks
/// about every point it receives).
const FEW_MEASUREMENTS: usize = 8;

impl RuleSet {
    /// Reads and checks the rules file at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks rules file `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, Error> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            Error::Invalid {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut names = HashSet::new();
        for rule in raw.rules {
            let rule_span = rule.span();
            let rule = rule.into_inner();
            let rule = check(rule, rule_span, &at)?;
            if !names.insert(rule.0.name.clone()) {
                return Err(at(
                    Some(rule.1),
                    format!(
                        "a second rule named \"{}\": rule names must be unique",
                        rule.0.name
                    ),
                ));
            }
            rules.push(rule.0);
        }
        let mut by_measurement: HashMap<String, Vec<usize>> = HashMap::new();
        let mut in_order: Vec<&str> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let measurement = &rule.selector.measurement;
            let of = by_measurement.entry(measurement.clone()).or_default();
            if of.is_empty() {
                in_order.push(measurement);
            }
            of.push(i);
        }
        let by_measurement = if in_order.len() <= FEW_MEASUREMENTS {
            ByMeasurement::Few(
                in_order
                    .iter()
                    .map(|&m| (m.to_owned(), by_measurement.remove(m).unwrap_or_default()))
                    .collect(),
            )
        } else {
            ByMeasurement::Hashed(by_measurement)
        };
        Ok(Self {
            rules,
            by_measurement,
        })
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether no rule is defined.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules whose selector matches `line`.
    pub fn matching<'s>(&'s self, line: &Line<'_>) -> impl Iterator<Item = &'s Rule> + 's {
        let matched: Vec<&Rule> = self
            .of_measurement(line)
            .iter()
            .map(|&i| &self.rules[i])
            .filter(|r| r.selector.matches_fields_and_tags(line))
            .collect();
        matched.into_iter()
    }

    /// Whether some rule looks at `line` (what the gateway's alert path
    /// asks of every point).
    pub fn wants(&self, line: &Line<'_>) -> bool {
        self.of_measurement(line)
            .iter()
            .any(|&i| self.rules[i].selector.matches_fields_and_tags(line))
    }

    /// The indices of the rules on `line`'s measurement.
    fn of_measurement(&self, line: &Line<'_>) -> &[usize] {
        let measurement = line.measurement();
        let found = match &self.by_measurement {
            ByMeasurement::Few(few) => few
                .iter()
                .find(|(m, _)| measurement.eq_str(m))
                .map(|(_, rules)| rules),
            ByMeasurement::Hashed(all) => all.get(measurement.as_str().as_ref()),
        };
        found.map(Vec::as_slice).unwrap_or_default()
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    measurement: Spanned<String>,
    field: Spanned<String>,
    #[serde(default, rename = "where")]
    matchers: Vec<RawMatcher>,
    aggregate: Option<Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    op: Option<Spanned<String>>,
    threshold: Option<f64>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    for_: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    keep_firing_for: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    absent_for: Option<Duration>,
    #[serde(default)]
    group_by: Vec<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    tag: Spanned<String>,
    op: Spanned<String>,
    value: Spanned<String>,
}

type At<'a> = dyn Fn(Option<Range<usize>>, String) -> Error + 'a;

fn non_empty(value: &Spanned<String>, what: &str, at: &At<'_>) -> Result<String, Error> {
    if value.get_ref().trim().is_empty() {
        return Err(at(Some(value.span()), format!("{what} must not be empty")));
    }
    Ok(value.get_ref().clone())
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Turns one raw rule into a checked one (and the span of its name).
fn check(rule: RawRule, span: Range<usize>, at: &At<'_>) -> Result<(Rule, Range<usize>), Error> {
    let name = non_empty(&rule.name, "name", at)?;
    let named = |message: &str| format!("rule \"{name}\": {message}");
    let measurement = non_empty(&rule.measurement, "measurement", at)?;
    let field = FieldKey::new(&non_empty(&rule.field, "field", at)?);

    let mut matchers = Vec::with_capacity(rule.matchers.len());
    for m in rule.matchers {
        let tag = non_empty(&m.tag, "where.tag", at)?;
        let op = match m.op.get_ref().as_str() {
            "=" => TagOp::Eq,
            "!=" => TagOp::Ne,
            "=~" => TagOp::Re,
            "!~" => TagOp::NotRe,
            other => {
                return Err(at(
                    Some(m.op.span()),
                    named(&format!(
                        "unknown tag operator \"{other}\": use =, !=, =~ or !~"
                    )),
                ));
            }
        };
        let regex = match op {
            TagOp::Re | TagOp::NotRe => Some(Regex::new(m.value.get_ref()).map_err(|e| {
                at(
                    Some(m.value.span()),
                    named(&format!("the regex does not compile: {e}")),
                )
            })?),
            TagOp::Eq | TagOp::Ne => None,
        };
        matchers.push(TagMatcher {
            tag,
            op,
            value: m.value.into_inner(),
            regex,
        });
    }

    let condition = match rule.absent_for {
        Some(after) => {
            if let Some(extra) = rule
                .aggregate
                .as_ref()
                .map(|a| ("aggregate", a.span()))
                .or(rule.op.as_ref().map(|o| ("op", o.span())))
            {
                return Err(at(
                    Some(extra.1),
                    named(&format!(
                        "an absence rule (absent_for) has no {}; remove it or make two rules",
                        extra.0
                    )),
                ));
            }
            if rule.threshold.is_some() || rule.window.is_some() {
                return Err(at(
                    Some(span.clone()),
                    named("an absence rule (absent_for) has no threshold or window"),
                ));
            }
            if after.is_zero() {
                return Err(at(
                    Some(span.clone()),
                    named("absent_for must be longer than 0s"),
                ));
            }
            Condition::Absent { after }
        }
        None => {
            let aggregate = match &rule.aggregate {
                None => Aggregate::Last,
                Some(a) => Aggregate::parse(a.get_ref()).ok_or_else(|| {
                    at(
                        Some(a.span()),
                        named(&format!(
                            "unknown aggregate \"{}\": use last, avg, min, max, sum, count, rate or a percentile such as p95 or p99.9",
                            a.get_ref()
                        )),
                    )
                })?,
            };
            let Some(op_text) = &rule.op else {
                return Err(at(
                    Some(span.clone()),
                    named("no op: give op (>, >=, <, <=, ==, !=) and threshold, or absent_for"),
                ));
            };
            let op = Comparison::parse(op_text.get_ref()).ok_or_else(|| {
                at(
                    Some(op_text.span()),
                    named(&format!(
                        "unknown op \"{}\": use >, >=, <, <=, == or !=",
                        op_text.get_ref()
                    )),
                )
            })?;
            let Some(threshold) = rule.threshold.filter(|t| t.is_finite()) else {
                return Err(at(
                    Some(span.clone()),
                    named("no threshold: give a finite number to compare with"),
                ));
            };
            let window = rule.window.filter(|w| !w.is_zero());
            if window.is_none() && aggregate != Aggregate::Last {
                return Err(at(
                    Some(rule.aggregate.as_ref().map_or(span.clone(), Spanned::span)),
                    named("this aggregate needs a window, e.g. window = \"1m\""),
                ));
            }
            Condition::Threshold {
                aggregate,
                window,
                op,
                threshold,
            }
        }
    };

    let mut group_by = Vec::with_capacity(rule.group_by.len());
    for tag in &rule.group_by {
        let tag_name = non_empty(tag, "group_by", at)?;
        if group_by.contains(&tag_name) {
            return Err(at(
                Some(tag.span()),
                named(&format!("group_by lists \"{tag_name}\" twice")),
            ));
        }
        group_by.push(tag_name);
    }
    for label in rule.labels.keys() {
        if !is_label_name(label) || label == "alertname" {
            return Err(at(
                Some(span.clone()),
                named(&format!(
                    "label \"{label}\": a label name is letters, digits and _, not starting with a digit, and not alertname"
                )),
            ));
        }
    }
    let mut annotations = BTreeMap::new();
    for (key, text) in rule.annotations {
        let template = Template::parse(text.get_ref()).map_err(|message| {
            at(
                Some(text.span()),
                named(&format!("annotation \"{key}\": {message}")),
            )
        })?;
        annotations.insert(key, template);
    }
    Ok((
        Rule {
            name,
            selector: Selector {
                measurement,
                field,
                matchers,
            },
            condition,
            for_: rule.for_.unwrap_or_default(),
            keep_firing_for: rule.keep_firing_for.unwrap_or_default(),
            group_by,
            labels: rule.labels,
            annotations,
        },
        rule.name.span(),
    ))
}
