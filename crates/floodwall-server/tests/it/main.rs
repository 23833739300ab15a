//! Integration tests of the service: configuration errors; the router in process (`oneshot`);
//! `run` on port 0 over real sockets; and the real `floodwall` binary where a process is the
//! point (command line, signals, exit codes, process-wide metrics, two processes on one Redis).

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admin_keys;
mod app;
mod binary;
mod check_api;
mod check_settle;
mod connections;
mod controls;
#[path = "../fixtures/envoy_files.rs"]
mod envoy_files;
mod fake_envoy;
mod framing;
mod in_process;
mod leases;
mod logs;
mod operations;
mod otlp;
mod outages;
mod paths;
mod proxy;
mod rlqs;
mod rls;
mod rls_envoy_config;
mod rls_settle;
mod sentinel;
mod service;
mod settle_routes;
mod walk_away;
