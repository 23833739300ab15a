//! Test fixtures for floodwall, not published: brute-force reference models of the algorithms,
//! and guards that run real `redis-server` processes (one node, a cluster, or a master with replicas behind sentinels) on free loopback
//! ports and clean up after themselves.

mod cluster;
pub mod quota_model;
pub mod reference;
mod sentinel;
mod server;
mod tls;

pub use cluster::RedisCluster;
pub use quota_model::QuotaModel;
pub use reference::ReferenceModel;
pub use sentinel::RedisSentinels;
pub use server::{Endpoint, RedisServer, RedisServerBuilder, wait_until};
