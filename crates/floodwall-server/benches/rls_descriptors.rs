//! How a RateLimitService call's cost grows with its descriptors: a closed-loop load of
//! `ShouldRateLimit` calls, each with N `remote_address` descriptors (random among 10 000
//! addresses), on 64 callers over 4 HTTP/2 connections, against a running server.
//!
//! `bench/rls-growth.sh` starts the server and runs this for 1, 4 and 16 descriptors:
//!
//! `rls_descriptors --addr http://127.0.0.1:PORT --descriptors N [--duration SECONDS]`
//!
//! One JSON line: calls/s, descriptors/s and latency percentiles. Run without `--addr` (as
//! `cargo bench` does), it only says how to run it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
// A load generator measures wall time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic::transport::Channel;

const CALLERS: usize = 64;
const CONNECTIONS: usize = 4;
const KEYS: u64 = 10_000;

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn main() {
    let Some(addr) = flag("--addr") else {
        eprintln!("rls_descriptors: run by bench/rls-growth.sh (needs --addr of a running server)");
        return;
    };
    let descriptors: usize = flag("--descriptors").map_or(1, |n| n.parse().unwrap());
    let seconds: u64 = flag("--duration").map_or(10, |n| n.parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(load(addr, descriptors, seconds));
}

async fn load(addr: String, descriptors: usize, seconds: u64) {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(addr.clone()).unwrap();
        channels.push(channel.connect().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client = RateLimitServiceClient::new(channels[caller % CONNECTIONS].clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            let (mut ok, mut over, mut errors) = (0_u64, 0_u64, 0_u64);
            // xorshift: a cheap, deterministic address sequence per caller.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (caller as u64 + 1);
            while Instant::now() < deadline {
                let descriptors = (0..descriptors)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let n = x % KEYS;
                        RateLimitDescriptor {
                            entries: vec![Entry {
                                key: "remote_address".to_owned(),
                                value: format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
                            }],
                            ..RateLimitDescriptor::default()
                        }
                    })
                    .collect();
                let request = RateLimitRequest {
                    domain: "edge".to_owned(),
                    descriptors,
                    hits_addend: 1,
                };
                let started = Instant::now();
                match client.should_rate_limit(request).await {
                    Ok(answer) if answer.get_ref().overall_code == Code::OverLimit as i32 => {
                        over += 1;
                    }
                    Ok(_) => ok += 1,
                    Err(_) => errors += 1,
                }
                latencies_us.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            (latencies_us, ok, over, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let (mut ok, mut over, mut errors) = (0, 0, 0);
    for task in tasks {
        let (these, o, v, e) = task.await.unwrap();
        latencies_us.extend(these);
        (ok, over, errors) = (ok + o, over + v, errors + e);
    }
    latencies_us.sort_unstable();
    let at = |q: f64| {
        let i =
            ((latencies_us.len() as f64 * q) as usize).min(latencies_us.len().saturating_sub(1));
        f64::from(latencies_us.get(i).copied().unwrap_or(0)) / 1000.0
    };
    let calls = (ok + over + errors) as f64 / seconds as f64;
    println!(
        "{{\"bench\": \"rls-descriptors\", \"descriptors\": {descriptors}, \"calls_per_s\": {calls:.0}, \
         \"descriptors_per_s\": {:.0}, \"ok\": {ok}, \"over_limit\": {over}, \"errors\": {errors}, \
         \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
        calls * descriptors as f64,
        at(0.5),
        at(0.99),
    );
}
