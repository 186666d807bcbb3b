//! # alerter
//!
//! Streaming alert rules evaluated on the alert topic, notifying webhooks and Alertmanager.
//!
//! Data flow (to be built in issue #7; nothing of it exists yet):
//!
//! ```text
//! alert topic ─► rule selectors ─► sliding windows ─► state machine ─► webhooks / Alertmanager
//! ```
//!
//! What exists today is the shared edge every service has: configuration
//! (the `[alerter]` section of the one Trident file, see
//! [`trident_service::config`]), `--help`, `--version` and
//! `--check-config`. The binary refuses to start rather than pretend to work.

use trident_service::config::Service;

/// Which configuration sections this service validates.
pub const SERVICE: Service = Service::Alerter;

/// Why the binary does not start yet.
pub const NOT_BUILT: &str =
    "the alerter's data path is not built yet (issue #7); only --check-config works";
