//! Where accepted lines go. Today: the InfluxDB cluster ([`influx`]). The
//! Kafka raw topic and the alert stream come with the rest of issue #4.

pub mod influx;
