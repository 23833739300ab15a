//! Test fixtures for floodgate, not published: brute-force reference models of the algorithms,
//! and guards that run real `redis-server` processes (one node or a cluster) on free loopback
//! ports and clean up after themselves.

pub mod reference;

pub use reference::ReferenceModel;
