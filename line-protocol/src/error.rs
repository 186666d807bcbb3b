use std::fmt;
use std::ops::Range;

/// Why one line was rejected, and where: `line` and `column` are 1-based, the
/// column counts bytes from the start of the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// Line number in the request body, from 1.
    pub line: usize,
    /// Byte column within the line, from 1.
    pub column: usize,
    /// What is wrong.
    pub kind: ErrorKind,
    /// Byte range of the whole line in the body, to quote it back.
    pub span: Range<usize>,
}

/// What is wrong with a line, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The line starts with a comma or has no name before it.
    #[error("missing measurement: a line must start with a measurement name")]
    MissingMeasurement,
    /// `cpu,=x` or `cpu, ...`.
    #[error("missing tag key: expected `key=value` after `,`")]
    MissingTagKey,
    /// `cpu,host value=1` or `cpu,host= value=1`.
    #[error(
        "missing tag value: every tag needs `key=value` with a non-empty value; leave the tag out instead"
    )]
    MissingTagValue,
    /// `cpu,host=a=b value=1`.
    #[error("invalid tag: unescaped `=` in a tag value; write it as `\\=`")]
    InvalidTagFormat,
    /// The same tag key twice on one line.
    #[error("duplicate tag key `{0}`: each tag may appear once per line")]
    DuplicateTag(String),
    /// No field set after the measurement and tags.
    #[error(
        "missing fields: a line needs at least one field (e.g. `value=1`) after the tags, separated by a space"
    )]
    MissingFields,
    /// `cpu =1` or `cpu a=1,=2`.
    #[error("missing field key before `=`")]
    MissingFieldKey,
    /// `cpu value=` or `cpu value=,b=1`.
    #[error("missing value for field `{0}`")]
    MissingFieldValue(String),
    /// `cpu a=1,b` (a key without `=value`).
    #[error("invalid field `{0}`: expected `key=value`")]
    InvalidFieldFormat(String),
    /// A value that starts like a number but is not one.
    #[error(
        "invalid number for field `{0}`: write floats as 1.5 or -2e3, integers as 42i, unsigned as 42u"
    )]
    InvalidNumber(String),
    /// An `i` integer outside the 64-bit signed range.
    #[error(
        "integer field `{0}` is out of range: integers must fit in 64 bits (-9223372036854775808i to 9223372036854775807i)"
    )]
    IntegerOutOfRange(String),
    /// A `u` integer outside the 64-bit unsigned range.
    #[error("unsigned field `{0}` is out of range: must be 0u to 18446744073709551615u")]
    UnsignedOutOfRange(String),
    /// A `u` integer while unsigned support is off (InfluxDB 1.x default).
    #[error(
        "unsigned field `{0}` (suffix `u`) is not accepted by this server; write it as an integer with suffix `i`"
    )]
    UnsignedDisabled(String),
    /// A float that overflows 64 bits.
    #[error("float field `{0}` is out of range for a 64-bit float")]
    FloatOutOfRange(String),
    /// A bare word that is not a boolean.
    #[error(
        "invalid value for field `{0}`: booleans are t, T, true, True, TRUE, f, F, false, False, FALSE; strings need double quotes"
    )]
    InvalidBoolean(String),
    /// A string value without its closing quote.
    #[error(
        "unbalanced quotes in string field `{0}`: close it with `\"` and escape inner quotes as `\\\"`"
    )]
    UnbalancedQuotes(String),
    /// A string value over the limit.
    #[error("string field `{key}` is {len} bytes; the limit is {max} bytes")]
    StringTooLong {
        /// The field key.
        key: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `time`, `_field` or `_measurement` used as a tag or field key.
    #[error(
        "`{key}` cannot be a {role} key: InfluxDB reserves `time`, `_field` and `_measurement`"
    )]
    ReservedKey {
        /// `tag` or `field`.
        role: KeyRole,
        /// The key.
        key: String,
    },
    /// The timestamp is not an integer.
    #[error(
        "invalid timestamp: expected an integer number of nanoseconds (or of the unit given by `precision`)"
    )]
    BadTimestamp,
    /// The timestamp does not fit in InfluxDB's range once in nanoseconds.
    #[error(
        "timestamp is out of range: in nanoseconds it must lie between 1677-09-21 and 2262-04-11"
    )]
    TimestampOutOfRange,
    /// Anything after the timestamp other than spaces.
    #[error("unexpected text after the timestamp")]
    TrailingData,
    /// Measurement, tags and a field key together exceed InfluxDB's key limit.
    #[error(
        "series key of {len} bytes exceeds the limit of {max} bytes (measurement, tags and field key together)"
    )]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The line exceeds the configured limit.
    #[error("line of {len} bytes exceeds the limit of {max} bytes")]
    LineTooLong {
        /// The line's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The line is not UTF-8.
    #[error("the line is not valid UTF-8")]
    InvalidUtf8,
}

impl ErrorKind {
    /// A short, stable name for the kind of error: a metric label (never
    /// user data), e.g. `invalid_number`.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorKind::MissingMeasurement => "missing_measurement",
            ErrorKind::MissingTagKey => "missing_tag_key",
            ErrorKind::MissingTagValue => "missing_tag_value",
            ErrorKind::InvalidTagFormat => "invalid_tag_format",
            ErrorKind::DuplicateTag(_) => "duplicate_tag",
            ErrorKind::MissingFields => "missing_fields",
            ErrorKind::MissingFieldKey => "missing_field_key",
            ErrorKind::MissingFieldValue(_) => "missing_field_value",
            ErrorKind::InvalidFieldFormat(_) => "invalid_field_format",
            ErrorKind::InvalidNumber(_) => "invalid_number",
            ErrorKind::IntegerOutOfRange(_) => "integer_out_of_range",
            ErrorKind::UnsignedOutOfRange(_) => "unsigned_out_of_range",
            ErrorKind::UnsignedDisabled(_) => "unsigned_disabled",
            ErrorKind::FloatOutOfRange(_) => "float_out_of_range",
            ErrorKind::InvalidBoolean(_) => "invalid_boolean",
            ErrorKind::UnbalancedQuotes(_) => "unbalanced_quotes",
            ErrorKind::StringTooLong { .. } => "string_too_long",
            ErrorKind::ReservedKey { .. } => "reserved_key",
            ErrorKind::BadTimestamp => "bad_timestamp",
            ErrorKind::TimestampOutOfRange => "timestamp_out_of_range",
            ErrorKind::TrailingData => "trailing_data",
            ErrorKind::KeyTooLong { .. } => "key_too_long",
            ErrorKind::LineTooLong { .. } => "line_too_long",
            ErrorKind::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// Where a reserved key was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// A tag key.
    Tag,
    /// A field key.
    Field,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::Tag => "tag",
            KeyRole::Field => "field",
        })
    }
}

/// Every error of this crate. Parsing yields one [`ParseError`] per bad
/// line (so good lines can still be kept); the other variants come from
/// writing points and from request parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line was rejected.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// An unknown `precision` parameter.
    #[error("unknown precision `{0}`: use one of n, ns, u, us, ms, s, m, h")]
    UnknownPrecision(String),
    /// An empty measurement, tag key/value or field key.
    #[error("empty {0}: line protocol cannot carry an empty measurement, tag or field key")]
    Empty(&'static str),
    /// A token that line protocol cannot represent (e.g. ends in `\`).
    #[error("{what} `{token}` cannot be written as line protocol: {why}")]
    Unrepresentable {
        /// Which token.
        what: &'static str,
        /// The token.
        token: String,
        /// Why.
        why: &'static str,
    },
    /// NaN or an infinity.
    #[error("field `{0}` is NaN or infinite, which line protocol cannot carry")]
    NonFiniteFloat(String),
    /// A point without fields.
    #[error("a point needs at least one field")]
    NoFields,
    /// A timestamp that does not fit in nanoseconds.
    #[error("timestamp {0} is out of range once converted to nanoseconds")]
    TimestampOutOfRange(i64),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
