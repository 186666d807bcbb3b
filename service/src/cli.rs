//! The flags every Trident binary shares. Each `main.rs` flattens
//! [`CommonArgs`] into its own `clap` parser, so `--help` and `--version`
//! look the same for all four services.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, Service};
use crate::{Error, Result};

/// Flags shared by all services.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file (one file for all services, a section each).
    #[arg(long, short = 'c', env = "TRIDENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Load and validate the configuration, print the effective values
    /// (defaults < file < environment) as JSON, and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl CommonArgs {
    /// Loads and validates the configuration for `service`.
    pub fn load_config(&self, service: Service) -> Result<Config> {
        let config = Config::load(self.config.as_deref())?;
        config.validate(service)?;
        Ok(config)
    }

    /// The common start of every `main`: load and validate the
    /// configuration, start logging, and for `--check-config` print the
    /// effective configuration and answer `None` (the process is done).
    pub fn start(&self, service: Service) -> Result<Option<Config>> {
        let config = self.load_config(service)?;
        crate::telemetry::init_logs(&config.telemetry)?;
        if !self.check_config {
            return Ok(Some(config));
        }
        let json =
            serde_json::to_string_pretty(&config).map_err(|e| Error::Print(e.to_string()))?;
        println!("{json}");
        Ok(None)
    }
}
