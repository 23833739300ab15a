//! Integration tests of the service: configuration errors, and the real `floodwall` binary over
//! real sockets, alone and two processes sharing one redis-server.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod binary;
mod config;
mod operations;
mod proxy;
mod service;
