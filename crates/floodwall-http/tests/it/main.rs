//! Integration tests of the HTTP layer: answers and headers through `oneshot`, client identity
//! tables, and the example app over real sockets against a real redis-server.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_ip;
mod headers;
mod in_flight;
mod layer;
mod outage;
mod real_socket;
mod settle;
mod support;
