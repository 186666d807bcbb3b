use std::path::PathBuf;

/// Everything that can go wrong in the shared service plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file does not exist or cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Figment could not merge or deserialize the layers (bad TOML, wrong
    /// type, unknown key). Its message names the key and the layer it came from.
    #[error("invalid configuration: {0}")]
    ConfigParse(#[from] Box<figment::Error>),
    /// A value parsed but is not usable; the message names the key.
    #[error("invalid configuration: `{key}` {reason}")]
    ConfigInvalid { key: String, reason: String },
    /// The log filter (`telemetry.log` or `RUST_LOG`) does not parse.
    #[error("invalid log filter `{filter}`: {reason}")]
    LogFilter { filter: String, reason: String },
    /// A second metrics recorder was installed in this process.
    #[error("cannot install the Prometheus metrics recorder: {0}")]
    Metrics(String),
    /// Binding or serving an HTTP listener failed.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
    /// The cluster topology cannot be read from its source.
    #[error("{0}")]
    Topology(String),
    /// The broker could not be asked or the partitions assigned.
    #[error("Kafka: {0}")]
    Kafka(String),
    /// The effective configuration could not be printed.
    #[error("cannot print the configuration: {0}")]
    Print(String),
    /// Installing a signal handler failed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
