//! Component health, as served on `/health`.
//!
//! Each part of a service (an InfluxDB node, a Kafka sink, a consumer) sets
//! its own entry; the document's overall status is the worst of them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// The state of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working.
    Up,
    /// Working with reduced guarantees (e.g. spooling to disk).
    Degraded,
    /// Not working.
    Down,
}

/// One component's entry in the health document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// The state.
    pub status: Status,
    /// What a person needs to know, e.g. the last error.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The document served on `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The service's name.
    pub service: &'static str,
    /// The service's version.
    pub version: &'static str,
    /// The worst component status (`up` when there are none).
    pub status: Status,
    /// Every component by name.
    pub components: BTreeMap<String, Component>,
}

/// A cheap-to-clone registry components report into.
#[derive(Debug, Clone)]
pub struct Health {
    service: &'static str,
    version: &'static str,
    components: Arc<RwLock<BTreeMap<String, Component>>>,
}

impl Health {
    /// An empty registry for `service` at `version`.
    pub fn new(service: &'static str, version: &'static str) -> Self {
        Self {
            service,
            version,
            components: Arc::default(),
        }
    }

    /// Sets the state of `component`.
    pub fn set(&self, component: impl Into<String>, status: Status, detail: impl Into<String>) {
        let entry = Component {
            status,
            detail: detail.into(),
        };
        // A poisoned lock only means a writer panicked mid-insert of a plain
        // value; the map is still consistent.
        let mut map = self.components.write().unwrap_or_else(|e| e.into_inner());
        map.insert(component.into(), entry);
    }

    /// The current document.
    pub fn report(&self) -> Report {
        let components = self
            .components
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = components
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Up);
        Report {
            service: self.service,
            version: self.version,
            status,
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_status_is_the_worst_component() {
        let health = Health::new("test", "0");
        assert_eq!(health.report().status, Status::Up);
        health.set("influx:1", Status::Up, "");
        health.set("kafka", Status::Degraded, "spooling: broker unreachable");
        assert_eq!(health.report().status, Status::Degraded);
        health.set("influx:2", Status::Down, "connection refused");
        assert_eq!(health.report().status, Status::Down);
        health.set("influx:2", Status::Up, "");
        assert_eq!(health.report().status, Status::Degraded);
    }
}
