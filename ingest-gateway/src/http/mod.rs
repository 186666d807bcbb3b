//! The HTTP edge of the gateway: what a write request asks for, as
//! InfluxDB reads it. The axum handlers (issue #4) call into this; it has
//! no HTTP-server types of its own so every rule is tested directly.

pub mod request;
