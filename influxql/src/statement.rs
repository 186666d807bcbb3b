//! Statements, and the clauses of a `SELECT` as far as routing and merging
//! need them. Clause texts are cut from the statement as sent (spans), so a
//! node runs exactly the expressions the client wrote.

use std::ops::Range;

use crate::Error;
use crate::lex::{Kind, Token, tokenize};

/// One statement of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The statement's text.
    pub text: String,
    /// What must be done with it.
    pub kind: StatementKind,
}

/// How a statement is answered by a cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementKind {
    /// A `SELECT`.
    Select(Box<Select>),
    /// A `SHOW` whose answers are merged from every node.
    Show(Show),
    /// Changes every node must make (`CREATE DATABASE`, `DROP SERIES` …).
    Everywhere,
    /// Metadata every node holds alike (`SHOW RETENTION POLICIES`).
    AnyNode,
    /// Valid, but not something the gateway answers; why.
    Unsupported(String),
}

/// A `SHOW` merged across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Show {
    /// Which one.
    pub what: ShowWhat,
    /// The statement without `LIMIT`/`OFFSET` (applied after the merge).
    pub node_text: String,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// `OFFSET`.
    pub offset: Option<u64>,
}

/// The `SHOW` statements that merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowWhat {
    /// `SHOW DATABASES`: first-seen order, like a node's creation order.
    Databases,
    /// `SHOW MEASUREMENTS`, `TAG KEYS`, `TAG VALUES`, `FIELD KEYS`,
    /// `SERIES`: sorted, de-duplicated.
    Sorted,
}

/// A `SELECT`'s clauses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Select {
    /// The projections, in order.
    pub fields: Vec<Field>,
    /// Has `INTO`.
    pub into: bool,
    /// The `FROM` sources.
    pub sources: Vec<Source>,
    /// Text of the `FROM` clause (without the keyword).
    pub from: String,
    /// Text of the `WHERE` condition, if any.
    pub condition: Option<String>,
    /// `tag = 'value'` terms of the condition's top-level `AND`s (none if
    /// it has a top-level `OR`).
    pub pins: Vec<(String, String)>,
    /// `time(…)` of `GROUP BY`, as written.
    pub group_time: Option<String>,
    /// Tag dimensions of `GROUP BY`.
    pub group_tags: Vec<GroupTag>,
    /// `fill(…)`.
    pub fill: Fill,
    /// `ORDER BY time DESC`.
    pub descending: bool,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// `OFFSET`.
    pub offset: Option<u64>,
    /// `SLIMIT`.
    pub slimit: Option<u64>,
    /// `SOFFSET`.
    pub soffset: Option<u64>,
    /// `tz(…)`, as written.
    pub tz: Option<String>,
}

/// One projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The expression as written (without `AS …`).
    pub expr: String,
    /// `AS` name.
    pub alias: Option<String>,
    /// What the expression is.
    pub kind: FieldKind,
}

/// The shapes of projection the merge tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// `func(arg)` with one plain argument; `func` lower-cased.
    Call {
        /// The function.
        func: String,
        /// The argument as written.
        arg: String,
    },
    /// An expression of fields, tags and literals, without calls.
    Plain,
    /// `*`.
    Wildcard,
    /// A regex over keys, e.g. `/^usage/`.
    Regex,
    /// Anything else with a call in it (nested, several arguments, math).
    Complex,
}

/// A `FROM` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A measurement, with the database it names if it names one.
    Measurement {
        /// `db` of `db.rp.m`.
        database: Option<String>,
        /// The measurement.
        name: String,
    },
    /// `/regex/`.
    Regex,
    /// `(SELECT …)`.
    Subquery,
}

/// A `GROUP BY` tag dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupTag {
    /// `*`.
    All,
    /// One tag key.
    Key(String),
    /// Tag keys matching a regex (the pattern).
    Regex(String),
}

/// `fill(…)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Fill {
    /// `fill(null)`, the default.
    #[default]
    Null,
    /// `fill(none)`.
    None,
    /// `fill(previous)`.
    Previous,
    /// `fill(linear)`.
    Linear,
    /// `fill(<number>)`.
    Number(f64),
}

/// The statements of query text `q`.
pub fn parse(q: &str) -> Result<Vec<Statement>, Error> {
    let tokens = tokenize(q)?;
    let mut out = Vec::new();
    for part in tokens.split(|t| t.is_punct(q, ";")) {
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            continue;
        };
        let text = &q[first.start..last.end];
        let kind = classify(q, part)?;
        out.push(Statement {
            text: text.to_owned(),
            kind,
        });
    }
    if out.is_empty() {
        return Err(Error::parse(
            q,
            q.len(),
            "found EOF, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL",
        ));
    }
    Ok(out)
}

/// What words `tokens[i..]` start with, upper-cased, up to `n`.
fn words(src: &str, tokens: &[Token], n: usize) -> Vec<String> {
    tokens
        .iter()
        .take(n)
        .take_while(|t| t.kind == Kind::Ident)
        .map(|t| t.text(src).to_ascii_uppercase())
        .collect()
}

fn classify(src: &str, tokens: &[Token]) -> Result<StatementKind, Error> {
    let w = words(src, tokens, 3);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let unsupported = |what: &str| {
        Ok(StatementKind::Unsupported(format!(
            "{what} is not answered by the gateway: run it on each InfluxDB node"
        )))
    };
    match w.as_slice() {
        ["SELECT", ..] => Ok(StatementKind::Select(Box::new(select(src, tokens)?))),
        ["SHOW", "DATABASES", ..] => Ok(show(src, tokens, ShowWhat::Databases)),
        ["SHOW", "RETENTION", "POLICIES"] => Ok(StatementKind::AnyNode),
        ["SHOW", _, "CARDINALITY"] | ["SHOW", _, _] if cardinality(src, tokens) => {
            Ok(StatementKind::Unsupported(
                "cardinality cannot be summed across replicated nodes exactly: run SHOW SERIES or SHOW TAG VALUES and count".into(),
            ))
        }
        ["SHOW", "MEASUREMENTS", ..]
        | ["SHOW", "TAG", "KEYS" | "VALUES"]
        | ["SHOW", "FIELD", "KEYS"]
        | ["SHOW", "SERIES", ..] => Ok(show(src, tokens, ShowWhat::Sorted)),
        ["SHOW", ..] => unsupported(&format!("SHOW {}", w.get(1).unwrap_or(&""))),
        ["CREATE" | "DROP", "DATABASE", ..]
        | ["CREATE" | "DROP" | "ALTER", "RETENTION", "POLICY"]
        | ["DROP", "MEASUREMENT" | "SERIES", ..]
        | ["DELETE", ..] => Ok(StatementKind::Everywhere),
        ["CREATE" | "DROP" | "GRANT" | "REVOKE" | "ALTER" | "SET" | "KILL" | "EXPLAIN", ..] => {
            unsupported(&w.join(" "))
        }
        _ => {
            let found = tokens.first().map_or("EOF", |t| t.text(src));
            Err(Error::parse(
                src,
                tokens.first().map_or(src.len(), |t| t.start),
                &format!(
                    "found {found}, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL"
                ),
            ))
        }
    }
}

fn cardinality(src: &str, tokens: &[Token]) -> bool {
    tokens.iter().any(|t| t.is_keyword(src, "CARDINALITY"))
}

/// A mergeable `SHOW`: its top-level `LIMIT n` / `OFFSET n` cut out.
fn show(src: &str, tokens: &[Token], what: ShowWhat) -> StatementKind {
    let mut cut: Vec<Range<usize>> = Vec::new();
    let (mut limit, mut offset) = (None, None);
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let n = tokens
            .get(i + 1)
            .filter(|n| n.kind == Kind::Number)
            .and_then(|n| n.text(src).parse::<u64>().ok());
        if let Some(n) = n {
            if t.is_keyword(src, "LIMIT") {
                limit = Some(n);
            } else if t.is_keyword(src, "OFFSET") {
                offset = Some(n);
            } else {
                i += 1;
                continue;
            }
            cut.push(t.start..tokens[i + 1].end);
            i += 2;
            continue;
        }
        i += 1;
    }
    let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
        return StatementKind::Unsupported("an empty SHOW".into());
    };
    let mut node_text = String::with_capacity(last.end - first.start);
    let mut at = first.start;
    for r in &cut {
        node_text.push_str(&src[at..r.start]);
        at = r.end;
    }
    node_text.push_str(&src[at..last.end]);
    StatementKind::Show(Show {
        what,
        node_text: node_text.trim().to_owned(),
        limit,
        offset,
    })
}

/// Where each top-level clause of a `SELECT` starts: (keyword, token index).
fn clauses(src: &str, tokens: &[Token]) -> Vec<(&'static str, usize)> {
    const CLAUSES: [&str; 11] = [
        "INTO", "FROM", "WHERE", "GROUP", "FILL", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET",
        "TZ",
    ];
    let mut depth = 0i32;
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct(src, "(") {
            depth += 1;
        } else if t.is_punct(src, ")") {
            depth -= 1;
        } else if depth == 0
            && let Some(k) = CLAUSES.iter().find(|k| t.is_keyword(src, k))
        {
            let next_is_paren = tokens.get(i + 1).is_some_and(|n| n.is_punct(src, "("));
            // fill and tz are clauses only as calls.
            if (*k == "FILL" || *k == "TZ") && !next_is_paren {
                continue;
            }
            found.push((*k, i));
        }
    }
    found
}

fn span(src: &str, tokens: &[Token]) -> String {
    match (tokens.first(), tokens.last()) {
        (Some(a), Some(b)) => src[a.start..b.end].to_owned(),
        _ => String::new(),
    }
}

/// Splits `tokens` where `sep` holds outside parentheses.
fn split_top<'t>(src: &str, tokens: &'t [Token], sep: impl Fn(&Token) -> bool) -> Vec<&'t [Token]> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct(src, "(") {
            depth += 1;
        } else if t.is_punct(src, ")") {
            depth -= 1;
        } else if depth == 0 && sep(t) {
            out.push(&tokens[from..i]);
            from = i + 1;
        }
    }
    out.push(&tokens[from..]);
    out
}

/// Splits `tokens` at top-level commas.
fn split_commas<'t>(src: &str, tokens: &'t [Token]) -> Vec<&'t [Token]> {
    split_top(src, tokens, |t| t.is_punct(src, ","))
}

fn expected(src: &str, tokens: &[Token], at: usize, what: &str) -> Error {
    let (found, pos) = tokens
        .get(at)
        .map_or(("EOF", src.len()), |t| (t.text(src), t.start));
    Error::parse(src, pos, &format!("found {found}, expected {what}"))
}

fn number(src: &str, tokens: &[Token], at: usize) -> Result<u64, Error> {
    tokens
        .get(at)
        .filter(|t| t.kind == Kind::Number)
        .and_then(|t| t.text(src).parse().ok())
        .ok_or_else(|| expected(src, tokens, at, "integer"))
}

fn select(src: &str, tokens: &[Token]) -> Result<Select, Error> {
    let found = clauses(src, tokens);
    let end_of = |i: usize| {
        found
            .iter()
            .map(|&(_, at)| at)
            .find(|&at| at > i)
            .unwrap_or(tokens.len())
    };
    let mut s = Select::default();
    let fields_end = found.first().map_or(tokens.len(), |&(_, at)| at);
    let field_tokens = &tokens[1..fields_end];
    if field_tokens.is_empty() {
        return Err(expected(src, tokens, 1, "identifier, string, number, bool"));
    }
    s.fields = split_commas(src, field_tokens)
        .into_iter()
        .map(|f| field(src, f))
        .collect::<Result<_, _>>()?;
    if !found.iter().any(|&(k, _)| k == "FROM") {
        return Err(expected(src, tokens, fields_end, "FROM"));
    }
    for &(k, at) in &found {
        let body = &tokens[at + 1..end_of(at)];
        match k {
            "INTO" => s.into = true,
            "FROM" => {
                s.from = span(src, body);
                s.sources = split_commas(src, body)
                    .into_iter()
                    .map(|t| source(src, t))
                    .collect();
                if body.is_empty() {
                    return Err(expected(src, tokens, at + 1, "identifier, regex"));
                }
            }
            "WHERE" => {
                s.pins = pins(src, body);
                s.condition = Some(span(src, body));
            }
            "GROUP" => {
                if !body.first().is_some_and(|t| t.is_keyword(src, "BY")) {
                    return Err(expected(src, tokens, at + 1, "BY"));
                }
                for dim in split_commas(src, &body[1..]) {
                    group_dimension(src, dim, &mut s)?;
                }
            }
            "FILL" => s.fill = fill(src, body)?,
            "ORDER" => {
                let words = words(src, body, 3).join(" ");
                s.descending = match words.as_str() {
                    "BY TIME DESC" => true,
                    "BY TIME" | "BY TIME ASC" => false,
                    _ => {
                        return Err(Error::parse(
                            src,
                            tokens[at].start,
                            "only ORDER BY time supported at this time",
                        ));
                    }
                };
            }
            "LIMIT" => s.limit = Some(number(src, tokens, at + 1)?),
            "OFFSET" => s.offset = Some(number(src, tokens, at + 1)?),
            "SLIMIT" => s.slimit = Some(number(src, tokens, at + 1)?),
            "SOFFSET" => s.soffset = Some(number(src, tokens, at + 1)?),
            "TZ" => s.tz = Some(span(src, &tokens[at..end_of(at)])),
            _ => {}
        }
    }
    Ok(s)
}

fn field(src: &str, tokens: &[Token]) -> Result<Field, Error> {
    let (expr, alias) = match tokens {
        [rest @ .., as_, name] if as_.is_keyword(src, "AS") => {
            let alias = name
                .ident_value(src)
                .ok_or_else(|| Error::parse(src, name.start, "found AS, expected identifier"))?;
            (rest, Some(alias))
        }
        _ => (tokens, None),
    };
    let Some(first) = expr.first() else {
        return Err(Error::parse(
            src,
            tokens.first().map_or(0, |t| t.start),
            "found ,, expected identifier, string, number, bool",
        ));
    };
    let has_call = expr
        .windows(2)
        .any(|w| w[0].kind == Kind::Ident && w[1].is_punct(src, "("));
    let kind = match expr {
        [t] if t.is_punct(src, "*") => FieldKind::Wildcard,
        [t] if t.kind == Kind::Regex => FieldKind::Regex,
        [f, open, arg @ .., close]
            if f.kind == Kind::Ident
                && open.is_punct(src, "(")
                && close.is_punct(src, ")")
                && plain_argument(src, arg) =>
        {
            FieldKind::Call {
                func: f.text(src).to_ascii_lowercase(),
                arg: span(src, arg),
            }
        }
        _ if has_call => FieldKind::Complex,
        _ => FieldKind::Plain,
    };
    let _ = first;
    Ok(Field {
        expr: span(src, expr),
        alias,
        kind,
    })
}

/// One field key, maybe cast: `x`, `"x"`, `x::field`.
fn plain_argument(src: &str, arg: &[Token]) -> bool {
    match arg {
        [t] => matches!(t.kind, Kind::Ident | Kind::QuotedIdent),
        [t, cast, ty] => {
            matches!(t.kind, Kind::Ident | Kind::QuotedIdent)
                && cast.is_punct(src, "::")
                && ty.kind == Kind::Ident
        }
        _ => false,
    }
}

fn source(src: &str, tokens: &[Token]) -> Source {
    match tokens {
        [t] if t.kind == Kind::Regex => Source::Regex,
        [t, ..] if t.is_punct(src, "(") => Source::Subquery,
        _ => {
            // db.rp.m, db..m, rp.m or m; any part may be a regex.
            let parts: Vec<Option<String>> = tokens
                .split(|t| t.is_punct(src, "."))
                .map(|p| p.first().and_then(|t| t.ident_value(src)))
                .collect();
            if tokens.iter().any(|t| t.kind == Kind::Regex) {
                return Source::Regex;
            }
            let name = parts.last().cloned().flatten().unwrap_or_default();
            let database = (parts.len() == 3).then(|| parts[0].clone()).flatten();
            Source::Measurement { database, name }
        }
    }
}

/// `tag = 'value'` terms joined by top-level `AND` (none under an `OR`).
fn pins(src: &str, tokens: &[Token]) -> Vec<(String, String)> {
    if split_top(src, tokens, |t| t.is_keyword(src, "OR")).len() > 1 {
        return Vec::new();
    }
    let terms = split_top(src, tokens, |t| t.is_keyword(src, "AND"));
    let key = |t: &[Token]| match t {
        [k] => k.ident_value(src),
        [k, c, ty] if c.is_punct(src, "::") && ty.is_keyword(src, "tag") => k.ident_value(src),
        _ => None,
    };
    terms
        .into_iter()
        .filter_map(|term| {
            let eq = term.iter().position(|t| t.is_punct(src, "="))?;
            let (l, r) = (&term[..eq], &term[eq + 1..]);
            let (k, v) = match (key(l), r) {
                (Some(k), [v]) if v.kind == Kind::Str => (k, v.string_value(src)?),
                _ => match (l, key(r)) {
                    ([v], Some(k)) if v.kind == Kind::Str => (k, v.string_value(src)?),
                    _ => return None,
                },
            };
            (!k.eq_ignore_ascii_case("time")).then_some((k, v))
        })
        .collect()
}

fn group_dimension(src: &str, dim: &[Token], s: &mut Select) -> Result<(), Error> {
    match dim {
        [t] if t.is_punct(src, "*") => s.group_tags.push(GroupTag::All),
        [t] if t.kind == Kind::Regex => {
            let text = t.text(src);
            let pattern = text.get(1..text.len().saturating_sub(1)).unwrap_or("");
            s.group_tags
                .push(GroupTag::Regex(pattern.replace("\\/", "/")));
        }
        [t, open, .., close]
            if t.is_keyword(src, "time") && open.is_punct(src, "(") && close.is_punct(src, ")") =>
        {
            s.group_time = Some(span(src, dim));
        }
        [t] | [t, _, _] if t.ident_value(src).is_some() => {
            s.group_tags
                .push(GroupTag::Key(t.ident_value(src).unwrap_or_default()));
        }
        _ => {
            return Err(expected(
                src,
                dim,
                0,
                "identifier, time(), * or a regular expression in GROUP BY",
            ));
        }
    }
    Ok(())
}

fn fill(src: &str, body: &[Token]) -> Result<Fill, Error> {
    // body: ( option )
    let inner: Vec<&Token> = body
        .iter()
        .filter(|t| !t.is_punct(src, "(") && !t.is_punct(src, ")"))
        .collect();
    let text: String = inner.iter().map(|t| t.text(src)).collect();
    Ok(match text.to_ascii_lowercase().as_str() {
        "null" => Fill::Null,
        "none" => Fill::None,
        "previous" => Fill::Previous,
        "linear" => Fill::Linear,
        other => Fill::Number(other.parse().map_err(|_| {
            Error::parse(
                src,
                body.first().map_or(0, |t| t.start),
                &format!("fill must be null, none, previous, linear or a number, not `{text}`"),
            )
        })?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_of(q: &str) -> Select {
        match parse(q).unwrap().remove(0).kind {
            StatementKind::Select(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_select_in_clauses() {
        let s = select_of(
            "SELECT mean(\"usage\") AS m, max(v::field), v * 2 FROM \"telegraf\".\"autogen\".cpu \
             WHERE host = 'a' AND 'x' = \"dc\" AND time > now() - 1h GROUP BY time(1m, 10s), \"host\", /^r/ \
             fill(previous) ORDER BY time DESC LIMIT 10 OFFSET 2 SLIMIT 3 SOFFSET 1 tz('Europe/Paris')",
        );
        assert_eq!(s.fields.len(), 3);
        assert_eq!(s.fields[0].alias.as_deref(), Some("m"));
        assert_eq!(
            s.fields[0].kind,
            FieldKind::Call {
                func: "mean".into(),
                arg: "\"usage\"".into()
            }
        );
        assert_eq!(
            s.fields[1].kind,
            FieldKind::Call {
                func: "max".into(),
                arg: "v::field".into()
            }
        );
        assert_eq!(s.fields[2].kind, FieldKind::Plain);
        assert_eq!(
            s.sources,
            vec![Source::Measurement {
                database: Some("telegraf".into()),
                name: "cpu".into()
            }]
        );
        assert_eq!(
            s.pins,
            vec![("host".into(), "a".into()), ("dc".into(), "x".into())]
        );
        assert_eq!(s.group_time.as_deref(), Some("time(1m, 10s)"));
        assert_eq!(
            s.group_tags,
            vec![GroupTag::Key("host".into()), GroupTag::Regex("^r".into())]
        );
        assert_eq!(s.fill, Fill::Previous);
        assert!(s.descending);
        assert_eq!(
            (s.limit, s.offset, s.slimit, s.soffset),
            (Some(10), Some(2), Some(3), Some(1))
        );
        assert_eq!(s.tz.as_deref(), Some("tz('Europe/Paris')"));
        assert_eq!(
            s.condition.as_deref(),
            Some("host = 'a' AND 'x' = \"dc\" AND time > now() - 1h")
        );
    }

    #[test]
    fn or_conditions_pin_nothing() {
        let s = select_of("SELECT v FROM m WHERE app = 'a' OR app = 'b'");
        assert!(s.pins.is_empty());
        let s = select_of("SELECT v FROM m WHERE (app = 'a' OR app = 'b') AND host = 'h'");
        assert_eq!(s.pins, vec![("host".into(), "h".into())]);
    }

    #[test]
    fn statements_are_classified() {
        let kinds: Vec<_> = parse(
            "SHOW DATABASES; show measurements limit 2 offset 1; SHOW RETENTION POLICIES ON x; \
             CREATE DATABASE x; DROP SERIES FROM cpu; SHOW USERS; SHOW SERIES CARDINALITY; \
             SELECT * FROM /c/, (SELECT v FROM m)",
        )
        .unwrap()
        .into_iter()
        .map(|s| s.kind)
        .collect();
        assert_eq!(
            kinds[1],
            StatementKind::Show(Show {
                what: ShowWhat::Sorted,
                node_text: "show measurements".into(),
                limit: Some(2),
                offset: Some(1)
            })
        );
        assert!(matches!(
            kinds[0],
            StatementKind::Show(Show {
                what: ShowWhat::Databases,
                ..
            })
        ));
        assert_eq!(kinds[2], StatementKind::AnyNode);
        assert_eq!(kinds[3], StatementKind::Everywhere);
        assert_eq!(kinds[4], StatementKind::Everywhere);
        assert!(matches!(&kinds[5], StatementKind::Unsupported(m) if m.contains("SHOW USERS")));
        assert!(matches!(&kinds[6], StatementKind::Unsupported(m) if m.contains("cardinality")));
        let StatementKind::Select(s) = &kinds[7] else {
            panic!()
        };
        assert_eq!(s.sources, vec![Source::Regex, Source::Subquery]);
    }

    #[test]
    fn errors_read_like_influxdb() {
        let e = parse("SELEC x").unwrap_err().to_string();
        assert_eq!(
            e,
            "error parsing query: found SELEC, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL at line 1, char 1"
        );
        assert!(
            parse("SELECT v")
                .unwrap_err()
                .to_string()
                .contains("expected FROM")
        );
        assert!(
            parse("SELECT v FROM m LIMIT x")
                .unwrap_err()
                .to_string()
                .contains("expected integer")
        );
        assert!(
            parse("SELECT v FROM m fill(sometimes)")
                .unwrap_err()
                .to_string()
                .contains("fill must be")
        );
        assert!(
            parse("SELECT v FROM m ORDER BY host")
                .unwrap_err()
                .to_string()
                .contains("ORDER BY time")
        );
        assert!(parse(";;").unwrap_err().to_string().contains("found EOF"));
    }
}
