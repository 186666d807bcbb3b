//! Where accepted lines go: the InfluxDB cluster ([`influx`]) and the raw
//! topic ([`kafka`]), both required. The alert stream comes with the rest
//! of issue #4.

pub mod influx;
pub mod kafka;
