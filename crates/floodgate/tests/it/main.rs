//! Integration tests of the floodgate library: the memory store against the reference models,
//! under concurrency and under key floods, and the limiter's failure and waiting behaviour.

mod boundedness;
mod concurrency;
mod differential;
mod limiter;
