//! The rules file: every key read, every mistake reported at its line and
//! column, and selectors that pick exactly the points their rules look at.

use std::time::Duration;

use trident_alert_rules::{Aggregate, Comparison, Condition, Error, RuleSet};

const EXAMPLE: &str = r#"
[[rules]]
name = "HighCpu"
measurement = "cpu"
field = "usage_user"
where = [
  { tag = "host", op = "=~", value = "^web-" },
  { tag = "env", op = "!=", value = "test" },
]
aggregate = "avg"
window = "1m"
op = ">"
threshold = 90.0
for = "30s"
keep_firing_for = "15s"
group_by = ["host"]
labels = { severity = "page" }
annotations = { summary = "CPU of {{ $labels.host }} at {{ $value }}" }

[[rules]]
name = "HostSilent"
measurement = "cpu"
field = "usage_user"
absent_for = "2m"

[[rules]]
name = "SlowRequests"
measurement = "http"
field = "latency_ms"
aggregate = "p99.9"
window = "5m"
op = ">="
threshold = 250
"#;

fn lines(text: &str) -> Vec<trident_line_protocol::Line<'_>> {
    trident_line_protocol::parse_lines(text.as_bytes())
        .map(|r| r.expect("valid line"))
        .collect()
}

fn error(text: &str) -> (usize, usize, String) {
    match RuleSet::parse(text, "rules.toml").expect_err("an invalid file") {
        Error::Invalid {
            line,
            column,
            message,
            ..
        } => (line, column, message),
        other => panic!("{other}"),
    }
}

#[test]
fn the_documented_example_reads_completely() {
    let set = RuleSet::parse(EXAMPLE, "rules.toml").expect("valid");
    let rules = set.rules();
    assert_eq!(rules.len(), 3);
    let cpu = &rules[0];
    assert_eq!(cpu.name, "HighCpu");
    assert_eq!(cpu.selector.matchers.len(), 2);
    assert_eq!(
        cpu.condition,
        Condition::Threshold {
            aggregate: Aggregate::Avg,
            window: Some(Duration::from_secs(60)),
            op: Comparison::Gt,
            threshold: 90.0
        }
    );
    assert_eq!(cpu.for_, Duration::from_secs(30));
    assert_eq!(cpu.keep_firing_for, Duration::from_secs(15));
    assert_eq!(cpu.group_by, ["host"]);
    assert_eq!(cpu.labels["severity"], "page");
    let labels = [("host".to_owned(), "web-1".to_owned())].into();
    assert_eq!(
        cpu.annotations["summary"].render(&labels, 97.5),
        "CPU of web-1 at 97.5"
    );
    assert_eq!(
        rules[1].condition,
        Condition::Absent {
            after: Duration::from_secs(120)
        }
    );
    assert_eq!(rules[1].for_, Duration::ZERO);
    assert!(matches!(
        rules[2].condition,
        Condition::Threshold { aggregate: Aggregate::Percentile(q), op: Comparison::Ge, .. } if q == 99.9
    ));
    assert!(RuleSet::parse("", "empty.toml").expect("empty").is_empty());
}

#[test]
fn selectors_pick_exactly_their_points() {
    let set = RuleSet::parse(EXAMPLE, "rules.toml").expect("valid");
    let body = "cpu,host=web-1,env=prod usage_user=95 1\n\
                cpu,host=db-1,env=prod usage_user=95 2\n\
                cpu,host=web-2,env=test usage_user=95 3\n\
                cpu,host=web-3 usage_user=1,usage_system=2 4\n\
                cpu,host=web-4 usage_system=2 5\n\
                mem,host=web-1 usage_user=1 6\n\
                http,app=shop latency_ms=12i 7\n\
                c\\ pu,host=web-1 usage_user=1 8\n";
    let parsed = lines(body);
    let wanted: Vec<bool> = parsed.iter().map(|l| set.wants(l)).collect();
    // db-1 passes HostSilent (no matchers); web-4 has no usage_user field;
    // mem and "c pu" have no rule.
    assert_eq!(
        wanted,
        [true, true, true, true, false, false, true, false],
        "{body}"
    );
    let names =
        |i: usize| -> Vec<String> { set.matching(&parsed[i]).map(|r| r.name.clone()).collect() };
    assert_eq!(names(0), ["HighCpu", "HostSilent"]);
    assert_eq!(names(1), ["HostSilent"], "=~ ^web- refuses db-1");
    assert_eq!(names(2), ["HostSilent"], "env != test refuses test");
    assert_eq!(
        names(3),
        ["HighCpu", "HostSilent"],
        "a missing env tag is the empty value, which is != test"
    );
    assert_eq!(names(6), ["SlowRequests"]);
}

#[test]
fn a_measurement_is_found_the_same_among_few_rules_and_among_many() {
    // Up to eight measurements are compared one by one, more are hashed:
    // both must find a rule whatever the line's escaping.
    let rule = |m: &str| {
        format!(
            "[[rules]]\nname = \"r {m}\"\nmeasurement = \"{m}\"\nfield = \"v\"\nop = \">\"\nthreshold = 0\n"
        )
    };
    let few: String = ["c pu", "mem"].iter().map(|m| rule(m)).collect();
    let many: String = ["c pu", "mem"]
        .iter()
        .map(|m| m.to_string())
        .chain((0..20).map(|i| format!("m{i}")))
        .map(|m| rule(&m))
        .collect();
    let body = "c\\ pu,h=a v=1 1\nmem v=1 2\nmem w=1 3\nm7 v=1 4\nm70 v=1 5\ncpu v=1 6\n";
    let parsed = lines(body);
    for (text, expected) in [
        (few, [true, true, false, false, false, false]),
        (many, [true, true, false, true, false, false]),
    ] {
        let set = RuleSet::parse(&text, "r.toml").expect("valid");
        let wanted: Vec<bool> = parsed.iter().map(|l| set.wants(l)).collect();
        assert_eq!(wanted, expected, "{} rules", set.rules().len());
        let matched: Vec<usize> = parsed.iter().map(|l| set.matching(l).count()).collect();
        assert_eq!(
            matched,
            expected.map(usize::from),
            "{} rules",
            set.rules().len()
        );
    }
}

#[test]
fn regexes_are_unanchored_like_influxql_and_not_regex_negates() {
    let set = RuleSet::parse(
        r#"
[[rules]]
name = "a"
measurement = "m"
field = "v"
op = ">"
threshold = 0
where = [{ tag = "dc", op = "!~", value = "eu" }, { tag = "host", op = "=~", value = "b" }]
"#,
        "r.toml",
    )
    .expect("valid");
    let parsed =
        lines("m,dc=us-east,host=abc v=1 1\nm,dc=eu-west,host=abc v=1 1\nm,host=xyz v=1 1\n");
    let wanted: Vec<bool> = parsed.iter().map(|l| set.wants(l)).collect();
    assert_eq!(wanted, [true, false, false]);
}

#[test]
fn every_mistake_is_reported_at_its_line_and_column() {
    let rule =
        |body: &str| format!("[[rules]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\n{body}");

    let (line, column, message) = error(&rule(
        "aggregate = \"average\"\nwindow = \"1m\"\nop = \">\"\nthreshold = 1\n",
    ));
    assert_eq!((line, column), (5, 13));
    assert!(
        message.contains("unknown aggregate \"average\""),
        "{message}"
    );
    assert!(message.starts_with("rule \"r\": "), "{message}");

    let (line, column, message) = error(&rule("op = \"=>\"\nthreshold = 1\n"));
    assert_eq!((line, column), (5, 6));
    assert!(message.contains("use >, >=, <, <=, == or !="), "{message}");

    let (line, column, message) = error(&rule(
        "op = \">\"\nthreshold = 1\nwhere = [{ tag = \"h\", op = \"=~\", value = \"(\" }]\n",
    ));
    assert_eq!(line, 7);
    assert_eq!(column, 42, "at the regex");
    assert!(message.contains("the regex does not compile"), "{message}");

    let (line, _, message) = error(&rule("op = \">\"\nthreshold = 1\nwindow = \"soon\"\n"));
    assert_eq!(line, 7);
    assert!(
        message.contains("soon") || message.contains("duration"),
        "{message}"
    );

    let (line, _, message) = error(&rule("op = \">\"\nthreshold = 1\ncolour = \"red\"\n"));
    assert_eq!(line, 7);
    assert!(message.contains("unknown field `colour`"), "{message}");

    let (_, _, message) = error(&rule("aggregate = \"avg\"\nop = \">\"\nthreshold = 1\n"));
    assert!(message.contains("needs a window"), "{message}");

    let (_, _, message) = error(&rule("absent_for = \"1m\"\nop = \">\"\n"));
    assert!(message.contains("absence rule"), "{message}");

    let (_, _, message) = error(&rule("threshold = 1\n"));
    assert!(message.contains("no op"), "{message}");

    let (line, column, message) = error(&rule(
        "op = \">\"\nthreshold = 1\nannotations = { s = \"{{ $lables.x }}\" }\n",
    ));
    assert_eq!((line, column), (7, 21));
    assert!(message.contains("unknown reference"), "{message}");

    let (_, _, message) = error(&rule(
        "op = \">\"\nthreshold = 1\nlabels = { alertname = \"x\" }\n",
    ));
    assert!(message.contains("not alertname"), "{message}");

    let twice = format!(
        "{}\n{}",
        rule("absent_for = \"1m\"\n"),
        rule("absent_for = \"1m\"\n")
    );
    let (line, column, message) = error(&twice);
    assert_eq!((line, column), (8, 8), "at the second name");
    assert!(message.contains("must be unique"), "{message}");

    let (line, _, message) = error("[[rules]]\nname = \"r\"\n");
    assert_eq!(line, 1);
    assert!(message.contains("missing field"), "{message}");

    let text = RuleSet::parse("rules = 3", "r.toml")
        .expect_err("invalid")
        .to_string();
    assert!(text.starts_with("r.toml:1:"), "{text}");
}

#[test]
fn a_missing_file_is_named() {
    let e = RuleSet::load(std::path::Path::new("/nonexistent/rules.toml")).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/rules.toml: cannot read"),
        "{e}"
    );
}
