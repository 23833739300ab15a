//! The pure core of floodwall: policies, decisions, clocks, key encoding, the five rate-limiting
//! algorithms and the in-flight limit (`concurrency`).
//!
//! Nothing here performs I/O, spawns, or reads a clock of its own: every function takes `now` as
//! an argument (integer microseconds since the Unix epoch) and returns data. Stores in the
//! `floodwall` crate run these functions under a lock in memory; the Redis scripts mirror them line
//! for line; property tests hold all of them to brute-force reference models.

pub mod algorithm;
mod calendar;
mod clock;
mod decision;
mod error;
pub mod key;
mod period;
mod policy;
pub mod quota;
mod rate;

pub use algorithm::{Evaluation, Holder, Meter, Outcome, State};
pub use clock::{Clock, ManualClock, SystemClock, ceil_micros};
pub use decision::Decision;
pub use error::{CostError, ParseAlgorithmError, ParsePeriodError, PolicyError};
pub use period::{parse_calendar_months, parse_period};
pub use policy::{
    Algorithm, CALENDAR_MONTHS, Calendar, EXACT_ARITHMETIC_BOUND, MAX_LIMIT, MAX_LOG_LIMIT,
    MAX_PERIOD, MIN_PERIOD, Mode, NOMINAL_MONTH, OnError, Policy,
};
pub use rate::{ParseRateError, Rate, parse_rate};
