//! # trident-influxql
//!
//! The read side of Trident's InfluxDB cluster, as pure logic: which nodes
//! an InfluxQL statement needs, what each of them runs, and how their
//! answers become the one answer a single InfluxDB node holding all the
//! data would give.
//!
//! ```text
//! q ──statement::parse──► [Statement] ──plan::plan(placement, db)──► Plan
//!   Plan::Forward  one owner set (measurement strategies, pinned tags): the
//!                  statement as sent, to the first owner that answers
//!   Plan::Fanout   every node runs a rewrite (GROUP BY *, mean → sum+count,
//!                  LIMIT+OFFSET, fill(null)); merge::merge folds the
//!                  answers: replicas de-duplicated per series, groups
//!                  regrouped, aggregates combined, fill/ORDER/LIMIT applied
//!   Plan::Everywhere  DDL on every node;  Plan::AnyNode  one node answers
//! ```
//!
//! What cannot be merged exactly (percentiles, distinct, transformations,
//! subqueries, `SELECT INTO` …) is answered when one owner holds all the
//! data and otherwise refused with an error saying why; nothing is
//! approximated. The I/O lives in the gateway.
//!
//! # Layout
//! - [`lex`]: tokens with byte spans.
//! - [`statement`]: statements and the clauses of a `SELECT`.
//! - [`plan`]: routing and the per-node rewrite.
//! - [`merge`]: folding node answers; [`time`] formats timestamps.

pub mod lex;
pub mod merge;
pub mod plan;
pub mod statement;
pub mod time;

pub use merge::{Owns, merge};
pub use plan::{Plan, plan};
pub use statement::{Statement, parse};

/// Why a query cannot be answered as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text is not InfluxQL this gateway understands; worded as
    /// InfluxDB words its parse errors.
    #[error("error parsing query: {message} at line {line}, char {column}")]
    Parse {
        /// What is wrong.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based character in the line.
        column: usize,
    },
    /// The statement is valid but cannot be answered exactly across nodes.
    #[error("{0}")]
    Unsupported(String),
    /// A node answered something that is not an InfluxDB query result.
    #[error("a node's answer cannot be merged: {0}")]
    BadAnswer(String),
}

impl Error {
    /// A parse error at byte `at` of `src`.
    pub(crate) fn parse(src: &str, at: usize, message: &str) -> Self {
        let before = src.get(..at).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Error::Parse {
            message: message.to_owned(),
            line,
            column,
        }
    }
}
