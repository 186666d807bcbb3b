//! InfluxQL tokens: enough to find statement boundaries, clauses, calls and
//! literals without evaluating anything. Every token keeps its byte span,
//! so the parts of a statement a node must run are cut from the text the
//! client sent, never re-printed.

use crate::Error;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An unquoted identifier or keyword (`SELECT`, `cpu`, `usage_idle`).
    Ident,
    /// A double-quoted identifier (`"my measurement"`).
    QuotedIdent,
    /// A single-quoted string literal.
    Str,
    /// An integer or decimal number.
    Number,
    /// A number with a duration unit (`5m`, `1h`, `100ms`).
    Duration,
    /// A regular expression literal (`/^cpu/`).
    Regex,
    /// A bound parameter (`$host`).
    Param,
    /// An operator or punctuation: `( ) , ; . :: = != <> < <= > >= =~ !~ + - * / % & | ^`.
    Punct,
}

/// One token: its kind and where it is in the statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: Kind,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Token {
    /// The token's text in `src`.
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }

    /// Whether this is the unquoted keyword `word` (any case).
    pub fn is_keyword(&self, src: &str, word: &str) -> bool {
        self.kind == Kind::Ident && self.text(src).eq_ignore_ascii_case(word)
    }

    /// Whether this is the punctuation `p`.
    pub fn is_punct(&self, src: &str, p: &str) -> bool {
        self.kind == Kind::Punct && self.text(src) == p
    }

    /// The name an identifier stands for: quotes and escapes removed.
    pub fn ident_value(&self, src: &str) -> Option<String> {
        match self.kind {
            Kind::Ident => Some(self.text(src).to_owned()),
            Kind::QuotedIdent => Some(unquote(self.text(src))),
            _ => None,
        }
    }

    /// The value of a string literal: quotes and escapes removed.
    pub fn string_value(&self, src: &str) -> Option<String> {
        (self.kind == Kind::Str).then(|| unquote(self.text(src)))
    }
}

/// `"a\"b"` or `'a\'b'` without its quotes and escapes.
fn unquote(quoted: &str) -> String {
    let inner = quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default();
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | '"' | '\'')) => out.push(n),
                Some('n') => out.push('\n'),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Duration units InfluxQL knows, longest first.
const UNITS: [&str; 9] = ["ns", "ms", "us", "µ", "u", "s", "m", "h", "d"];

/// The tokens of `src`, comments and whitespace skipped.
pub fn tokenize(src: &str) -> Result<Vec<Token>, Error> {
    let bytes = src.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("--") {
            i = src[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            continue;
        }
        if src[i..].starts_with("/*") {
            i = src[i + 2..]
                .find("*/")
                .map(|n| i + 2 + n + 2)
                .ok_or_else(|| Error::parse(src, i, "a comment opened with /* is never closed"))?;
            continue;
        }
        let start = i;
        let kind = match c {
            b'"' | b'\'' => {
                i = closing(bytes, i, c).ok_or_else(|| {
                    let what = if c == b'"' { "identifier" } else { "string" };
                    Error::parse(src, start, &format!("unterminated quoted {what}"))
                })?;
                if c == b'"' {
                    Kind::QuotedIdent
                } else {
                    Kind::Str
                }
            }
            b'/' if regex_allowed(src, &tokens) => {
                i = closing(bytes, i, b'/')
                    .ok_or_else(|| Error::parse(src, start, "unterminated regular expression"))?;
                Kind::Regex
            }
            b'0'..=b'9' => {
                i = number_end(bytes, i);
                duration_end(src, i).map_or(Kind::Number, |end| {
                    i = end;
                    Kind::Duration
                })
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = number_end(bytes, i);
                Kind::Number
            }
            b'$' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Kind::Param
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                Kind::Ident
            }
            _ => {
                const TWO: [&str; 7] = ["::", "!=", "<>", "<=", ">=", "=~", "!~"];
                if TWO.iter().any(|p| src[i..].starts_with(p)) {
                    i += 2;
                } else if b"(),;.=<>+-*/%&|^".contains(&c) {
                    i += 1;
                } else {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(Error::parse(
                        src,
                        i,
                        &format!("unexpected character `{ch}`"),
                    ));
                }
                Kind::Punct
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Ok(tokens)
}

/// One past the quote that closes the one at `open`, skipping escapes.
fn closing(bytes: &[u8], open: usize, quote: u8) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn number_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    i
}

/// Where a duration unit right after a number ends (`5m`, `1h30m`), if
/// there is one.
fn duration_end(src: &str, mut i: usize) -> Option<usize> {
    let mut found = None;
    loop {
        let rest = src.get(i..)?;
        let unit = UNITS.iter().find(|u| rest.starts_with(*u))?;
        let after = i + unit.len();
        // `5min` is not a duration: the unit must end the word.
        if src[after..]
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return found;
        }
        found = Some(after);
        let digits = number_end(src.as_bytes(), after);
        if digits == after {
            return found;
        }
        i = digits;
    }
}

/// A `/` starts a regex unless it follows something that has a value.
fn regex_allowed(src: &str, tokens: &[Token]) -> bool {
    match tokens.last() {
        None => true,
        Some(t) => match t.kind {
            Kind::Ident => {
                // After a keyword such as FROM or BY, a value is expected.
                [
                    "FROM",
                    "BY",
                    "KEY",
                    "MEASUREMENT",
                    "WITH",
                    "AND",
                    "OR",
                    "SELECT",
                ]
                .iter()
                .any(|k| t.is_keyword(src, k))
            }
            Kind::Punct => !t.is_punct(src, ")"),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, &str)> {
        tokenize(src)
            .unwrap()
            .iter()
            .map(|t| (t.kind, t.text(src)))
            .collect()
    }

    #[test]
    fn tokens_of_a_select() {
        let src = "SELECT mean(\"v a\") / 2 FROM /^cpu/ WHERE host =~ /a\\/b/ AND time > now() - 5m -- c\n;";
        assert_eq!(
            kinds(src),
            vec![
                (Kind::Ident, "SELECT"),
                (Kind::Ident, "mean"),
                (Kind::Punct, "("),
                (Kind::QuotedIdent, "\"v a\""),
                (Kind::Punct, ")"),
                (Kind::Punct, "/"),
                (Kind::Number, "2"),
                (Kind::Ident, "FROM"),
                (Kind::Regex, "/^cpu/"),
                (Kind::Ident, "WHERE"),
                (Kind::Ident, "host"),
                (Kind::Punct, "=~"),
                (Kind::Regex, "/a\\/b/"),
                (Kind::Ident, "AND"),
                (Kind::Ident, "time"),
                (Kind::Punct, ">"),
                (Kind::Ident, "now"),
                (Kind::Punct, "("),
                (Kind::Punct, ")"),
                (Kind::Punct, "-"),
                (Kind::Duration, "5m"),
                (Kind::Punct, ";"),
            ]
        );
    }

    #[test]
    fn durations_strings_params_and_casts() {
        assert_eq!(
            kinds("time(1h30m, 10s) 'it\\'s' $host v::field 100ms 1.5 /* x */ 5min"),
            vec![
                (Kind::Ident, "time"),
                (Kind::Punct, "("),
                (Kind::Duration, "1h30m"),
                (Kind::Punct, ","),
                (Kind::Duration, "10s"),
                (Kind::Punct, ")"),
                (Kind::Str, "'it\\'s'"),
                (Kind::Param, "$host"),
                (Kind::Ident, "v"),
                (Kind::Punct, "::"),
                (Kind::Ident, "field"),
                (Kind::Duration, "100ms"),
                (Kind::Number, "1.5"),
                (Kind::Number, "5"),
                (Kind::Ident, "min"),
            ]
        );
        let src = "'it\\'s'";
        assert_eq!(
            tokenize(src).unwrap()[0].string_value(src).as_deref(),
            Some("it's")
        );
    }

    #[test]
    fn errors_say_where() {
        let e = tokenize("SELECT 'open").unwrap_err().to_string();
        assert!(
            e.contains("unterminated quoted string") && e.contains("char 8"),
            "{e}"
        );
        let e = tokenize("SELECT a FROM b WHERE c = #")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected character `#`"), "{e}");
    }
}
