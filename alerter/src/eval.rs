//! Rule evaluation: points in, alert transitions out. No I/O.
//!
//! ```text
//! point ──matching rules──► group (group_by tags, or the series)
//!       ──sliding event-time window──► aggregate ──op threshold──► true/false
//!       ──state machine──► inactive → pending (for) → firing
//!                          → (keep_firing_for) → resolved → inactive
//! tick(now) ──absence rules──► firing when a group sent nothing for absent_for
//! ```
//!
//! Time is the points' own: a group's window and `for` advance with its
//! points. Absence is measured on the wall clock against the ingest time of
//! the group's last point, so a silent source is noticed even when nothing
//! else arrives.

use std::collections::{BTreeMap, HashMap, VecDeque};

use trident_alert_rules::{Aggregate, Condition, Rule, RuleSet};
use trident_line_protocol::{FieldValue, Line};

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, for less than `for`.
    Pending,
    /// Firing.
    Firing,
}

/// A change to notify.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Fired (`true`) or resolved.
    pub firing: bool,
    /// The alert.
    pub alert: Alert,
}

/// One alert: a rule and a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Rule name.
    pub rule: String,
    /// alertname, the rule's labels and the group's tags.
    pub labels: BTreeMap<String, String>,
    /// Rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its state.
    pub state: State,
    /// The last value the condition was checked with.
    pub value: f64,
    /// When it started firing (or became pending), ns.
    pub active_since: i64,
    /// When it resolved, ns (0 while active).
    pub resolved_at: i64,
}

#[derive(Debug)]
struct Group {
    labels: BTreeMap<String, String>,
    points: VecDeque<(i64, f64)>,
    state: State,
    pending_since: i64,
    fired_at: i64,
    last_true: i64,
    value: f64,
    last_seen_ingest: i64,
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    /// The rule's definition as text, to tell an unchanged rule on reload.
    definition: String,
    groups: HashMap<String, Group>,
}

/// Every rule's groups.
#[derive(Debug, Default)]
pub struct Engine {
    rules: Vec<RuleState>,
    set: RuleSet,
}

fn value_of(value: &FieldValue<'_>) -> Option<f64> {
    match value {
        FieldValue::Float(v) => Some(*v),
        FieldValue::Integer(v) => Some(*v as f64),
        FieldValue::UInteger(v) => Some(*v as f64),
        FieldValue::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
        FieldValue::String(_) => None,
    }
}

/// The aggregate of `points` (oldest first); `None` when it has no value
/// (e.g. a rate of one point).
pub fn aggregate(kind: Aggregate, points: &VecDeque<(i64, f64)>) -> Option<f64> {
    let last = points.back()?;
    let values = points.iter().map(|p| p.1);
    Some(match kind {
        Aggregate::Last => last.1,
        Aggregate::Avg => values.sum::<f64>() / points.len() as f64,
        Aggregate::Min => values.fold(f64::INFINITY, f64::min),
        Aggregate::Max => values.fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Sum => values.sum(),
        Aggregate::Count => points.len() as f64,
        Aggregate::Rate => {
            let first = points.front()?;
            let seconds = (last.0 - first.0) as f64 / 1e9;
            if points.len() < 2 || seconds <= 0.0 {
                return None;
            }
            (last.1 - first.1) / seconds
        }
        Aggregate::Percentile(q) => {
            // Nearest rank, as InfluxQL's percentile().
            let mut sorted: Vec<f64> = values.collect();
            sorted.sort_by(f64::total_cmp);
            let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        }
    })
}

fn render(rule: &Rule, labels: &BTreeMap<String, String>, value: f64) -> BTreeMap<String, String> {
    rule.annotations
        .iter()
        .map(|(k, t)| (k.clone(), t.render(labels, value)))
        .collect()
}

impl Engine {
    /// An engine for `set`.
    pub fn new(set: RuleSet) -> Self {
        let mut engine = Self::default();
        engine.replace(set);
        engine
    }

    /// Switches to `set`, keeping the state of every rule whose definition
    /// did not change.
    pub fn replace(&mut self, set: RuleSet) {
        let mut old: HashMap<String, RuleState> = self
            .rules
            .drain(..)
            .map(|r| (r.definition.clone(), r))
            .collect();
        self.rules = set
            .rules()
            .iter()
            .map(|rule| {
                let definition = format!("{rule:?}");
                old.remove(&definition).unwrap_or(RuleState {
                    rule: rule.clone(),
                    definition,
                    groups: HashMap::new(),
                })
            })
            .collect();
        self.set = set;
    }

    /// How many rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Groups tracked over all rules.
    pub fn groups(&self) -> usize {
        self.rules.iter().map(|r| r.groups.len()).sum()
    }

    /// Evaluates the rules that look at `line`, ingested at `ingest` ns.
    pub fn observe(&mut self, line: &Line<'_>, ingest: i64) -> Vec<Transition> {
        let Some(ts) = line.timestamp() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for state in &mut self.rules {
            let rule = &state.rule;
            if !rule.selector.matches(line) {
                continue;
            }
            let Some(value) = line
                .fields()
                .find(|(k, _)| k.eq_str(rule.selector.field.as_str()))
                .and_then(|(_, v)| value_of(&v))
            else {
                continue;
            };
            let (key, labels) = group_of(rule, line);
            let group = state.groups.entry(key).or_insert_with(|| Group {
                labels,
                points: VecDeque::new(),
                state: State::Inactive,
                pending_since: 0,
                fired_at: 0,
                last_true: 0,
                value: 0.0,
                last_seen_ingest: 0,
            });
            group.last_seen_ingest = group.last_seen_ingest.max(ingest);
            match &rule.condition {
                Condition::Absent { .. } => {
                    group.value = value;
                    if group.state == State::Firing {
                        group.state = State::Inactive;
                        out.push(Transition {
                            firing: false,
                            alert: alert(rule, group, ts),
                        });
                    }
                }
                Condition::Threshold {
                    aggregate: kind,
                    window,
                    op,
                    threshold,
                } => {
                    // Keep the window's points, in time order.
                    let at = group.points.partition_point(|p| p.0 <= ts);
                    group.points.insert(at, (ts, value));
                    let newest = group.points.back().map_or(ts, |p| p.0);
                    match window {
                        Some(w) => {
                            let from = newest - i64::try_from(w.as_nanos()).unwrap_or(i64::MAX);
                            while group.points.front().is_some_and(|p| p.0 <= from) {
                                group.points.pop_front();
                            }
                        }
                        None => {
                            while group.points.len() > 1 {
                                group.points.pop_front();
                            }
                        }
                    }
                    let result = aggregate(*kind, &group.points);
                    let holds = result.is_some_and(|v| op.holds(v, *threshold));
                    if let Some(v) = result {
                        group.value = v;
                    }
                    if let Some(t) = step(rule, group, holds, newest) {
                        out.push(t);
                    }
                }
            }
        }
        out
    }

    /// Absence rules against the wall clock `now` (ns).
    pub fn tick(&mut self, now: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for state in &mut self.rules {
            let Condition::Absent { after } = state.rule.condition else {
                continue;
            };
            let after = i64::try_from(after.as_nanos()).unwrap_or(i64::MAX);
            for group in state.groups.values_mut() {
                if group.state != State::Firing && now - group.last_seen_ingest >= after {
                    group.state = State::Firing;
                    group.fired_at = now;
                    out.push(Transition {
                        firing: true,
                        alert: alert(&state.rule, group, 0),
                    });
                }
            }
        }
        out
    }

    /// Every alert that is pending or firing.
    pub fn alerts(&self) -> Vec<Alert> {
        self.rules
            .iter()
            .flat_map(|r| {
                r.groups
                    .values()
                    .filter(|g| g.state != State::Inactive)
                    .map(|g| alert(&r.rule, g, 0))
            })
            .collect()
    }
}

/// The group a point falls in and its labels.
fn group_of(rule: &Rule, line: &Line<'_>) -> (String, BTreeMap<String, String>) {
    let mut labels: BTreeMap<String, String> = rule.labels.clone();
    labels.insert("alertname".into(), rule.name.clone());
    if rule.group_by.is_empty() {
        for (k, v) in line.tags() {
            labels.insert(k.as_str().into_owned(), v.as_str().into_owned());
        }
        return (line.series_key(), labels);
    }
    let mut key = String::new();
    for tag in &rule.group_by {
        let value = line
            .tag(tag)
            .map(|v| v.as_str().into_owned())
            .unwrap_or_default();
        key.push_str(&value);
        key.push('\0');
        labels.insert(tag.clone(), value);
    }
    (key, labels)
}

/// The state machine for a threshold rule at event time `now`.
fn step(rule: &Rule, group: &mut Group, holds: bool, now: i64) -> Option<Transition> {
    let for_ = i64::try_from(rule.for_.as_nanos()).unwrap_or(i64::MAX);
    let keep = i64::try_from(rule.keep_firing_for.as_nanos()).unwrap_or(i64::MAX);
    if holds {
        group.last_true = now;
        match group.state {
            State::Inactive => {
                group.pending_since = now;
                group.state = State::Pending;
            }
            State::Pending | State::Firing => {}
        }
        if group.state == State::Pending && now - group.pending_since >= for_ {
            group.state = State::Firing;
            group.fired_at = now;
            return Some(Transition {
                firing: true,
                alert: alert(rule, group, 0),
            });
        }
        return None;
    }
    match group.state {
        State::Pending => {
            group.state = State::Inactive;
            None
        }
        State::Firing if now - group.last_true >= keep => {
            group.state = State::Inactive;
            Some(Transition {
                firing: false,
                alert: alert(rule, group, now),
            })
        }
        _ => None,
    }
}

fn alert(rule: &Rule, group: &Group, resolved_at: i64) -> Alert {
    Alert {
        rule: rule.name.clone(),
        labels: group.labels.clone(),
        annotations: render(rule, &group.labels, group.value),
        state: group.state,
        value: group.value,
        active_since: if group.state == State::Pending {
            group.pending_since
        } else {
            group.fired_at
        },
        resolved_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn engine(rules: &str) -> Engine {
        Engine::new(RuleSet::parse(rules, "rules.toml").unwrap())
    }

    fn feed(engine: &mut Engine, text: &str) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        for line in trident_line_protocol::parse_lines(text.as_bytes()) {
            let line = line.unwrap();
            let ts = line.timestamp().unwrap();
            for t in engine.observe(&line, ts) {
                out.push((
                    t.firing,
                    t.alert.labels.get("host").cloned().unwrap_or_default(),
                ));
            }
        }
        out
    }

    #[test]
    fn for_delays_firing_and_keep_firing_for_holds_it_through_a_dip() {
        let mut e = engine(
            "[[rules]]\nname = \"Hot\"\nmeasurement = \"cpu\"\nfield = \"v\"\nop = \">\"\nthreshold = 90\nfor = \"10s\"\nkeep_firing_for = \"5s\"\nlabels = { severity = \"page\" }\nannotations = { s = \"{{ $labels.host }} at {{ $value }}\" }\n",
        );
        let text = |v: f64, t: i64| format!("cpu,host=a v={v} {}\n", t * S);
        assert!(feed(&mut e, &text(95.0, 0)).is_empty(), "pending");
        assert!(feed(&mut e, &text(96.0, 5)).is_empty());
        assert_eq!(feed(&mut e, &text(97.0, 10)), [(true, "a".into())]);
        let firing = e.alerts();
        assert_eq!(firing[0].state, State::Firing);
        assert_eq!(firing[0].labels["severity"], "page");
        assert_eq!(firing[0].labels["alertname"], "Hot");
        assert_eq!(firing[0].annotations["s"], "a at 97");
        assert!(feed(&mut e, &text(50.0, 12)).is_empty(), "kept firing");
        assert!(feed(&mut e, &text(99.0, 13)).is_empty(), "no refire");
        assert!(feed(&mut e, &text(50.0, 16)).is_empty(), "3 s below");
        assert_eq!(feed(&mut e, &text(50.0, 18)), [(false, "a".into())]);
        assert!(e.alerts().is_empty());
    }

    #[test]
    fn window_aggregates_and_group_by() {
        let mut e = engine(
            "[[rules]]\nname = \"Avg\"\nmeasurement = \"m\"\nfield = \"v\"\naggregate = \"avg\"\nwindow = \"10s\"\nop = \">=\"\nthreshold = 10\ngroup_by = [\"dc\"]\n",
        );
        // Two hosts of one dc make one group: avg over both.
        let out = feed(
            &mut e,
            &format!("m,dc=x,host=a v=5 {}\nm,dc=x,host=b v=15 {}\n", S, 2 * S),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(e.alerts()[0].labels.get("host"), None);
        assert_eq!(e.alerts()[0].labels["dc"], "x");
        let points: VecDeque<(i64, f64)> = [(0, 1.0), (S, 2.0), (2 * S, 4.0), (3 * S, 3.0)].into();
        assert_eq!(aggregate(Aggregate::Max, &points), Some(4.0));
        assert_eq!(aggregate(Aggregate::Min, &points), Some(1.0));
        assert_eq!(aggregate(Aggregate::Sum, &points), Some(10.0));
        assert_eq!(aggregate(Aggregate::Count, &points), Some(4.0));
        assert_eq!(aggregate(Aggregate::Rate, &points), Some(2.0 / 3.0));
        assert_eq!(aggregate(Aggregate::Percentile(50.0), &points), Some(2.0));
        assert_eq!(aggregate(Aggregate::Percentile(99.0), &points), Some(4.0));
        assert_eq!(aggregate(Aggregate::Rate, &[(0, 1.0)].into()), None);
    }

    #[test]
    fn absence_fires_on_the_wall_clock_and_resolves_when_data_returns() {
        let mut e = engine(
            "[[rules]]\nname = \"Gone\"\nmeasurement = \"m\"\nfield = \"v\"\nabsent_for = \"30s\"\n",
        );
        feed(&mut e, &format!("m,host=a v=1 {}\n", 100 * S));
        assert!(e.tick(120 * S).is_empty());
        let fired = e.tick(131 * S);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].firing);
        assert!(e.tick(140 * S).is_empty(), "fires once");
        assert_eq!(
            feed(&mut e, &format!("m,host=a v=1 {}\n", 150 * S)),
            [(false, "a".into())]
        );
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_rules() {
        let one = "[[rules]]\nname = \"A\"\nmeasurement = \"m\"\nfield = \"v\"\nop = \">\"\nthreshold = 1\n";
        let mut e = engine(one);
        assert_eq!(feed(&mut e, &format!("m,host=a v=5 {S}\n")).len(), 1);
        let two = format!(
            "{one}[[rules]]\nname = \"B\"\nmeasurement = \"m\"\nfield = \"v\"\nop = \">\"\nthreshold = 2\n"
        );
        e.replace(RuleSet::parse(&two, "r").unwrap());
        assert_eq!(e.rule_count(), 2);
        assert_eq!(e.alerts().len(), 1, "A still firing, not re-fired");
        let out = feed(&mut e, &format!("m,host=a v=5 {}\n", 2 * S));
        assert_eq!(out.len(), 1, "only B fires");
    }
}
