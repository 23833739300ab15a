//! `[log]`: the log's format and the opt-in decision log.

use super::error::Diagnostics;
use super::raw::RawConfig;
use super::validate::{count, parse_or};

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// How each line is written. Fixed at start: a reload that changes it is logged and waits
    /// for a restart.
    pub format: LogFormat,
    /// Which decisions are logged, one line each.
    pub decisions: DecisionLogMode,
    /// The fraction of those decisions that are logged, from 0 (exclusive) to 1.
    pub sample: f64,
    /// The most decision lines per second; past it lines are counted and the count logged.
    pub max_per_second: usize,
    /// Log client keys as they are instead of their digest.
    pub raw_keys: bool,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log] decisions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecisionLogMode {
    /// No decision log (the default).
    #[default]
    Off,
    /// Denials (shadow denials and store failures included).
    Denied,
    /// Every decision.
    All,
}

/// The default `max_per_second` of the decision log.
pub const DEFAULT_DECISIONS_PER_SECOND: usize = 1_000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            decisions: DecisionLogMode::Off,
            sample: 1.0,
            max_per_second: DEFAULT_DECISIONS_PER_SECOND,
            raw_keys: false,
        }
    }
}

pub(super) fn log(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> LogConfig {
    let Some(section) = &raw.log else {
        return LogConfig::default();
    };
    let defaults = LogConfig::default();
    let format = section.format.as_ref().and_then(|format| {
        parse_or(
            diagnostics,
            format,
            |text| match text.as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(format!("unknown log format {other:?}")),
            },
            Some("text (the default) or json (one object per line)"),
        )
    });
    let decisions = section.decisions.as_ref().and_then(|decisions| {
        parse_or(
            diagnostics,
            decisions,
            |text| match text.as_str() {
                "off" => Ok(DecisionLogMode::Off),
                "denied" => Ok(DecisionLogMode::Denied),
                "all" => Ok(DecisionLogMode::All),
                other => Err(format!("unknown decisions {other:?}")),
            },
            Some("off (the default), denied, or all"),
        )
    });
    let sample = section.sample.as_ref().and_then(|sample| {
        parse_or(
            diagnostics,
            sample,
            |fraction| {
                Some(*fraction)
                    .filter(|f| *f > 0.0 && *f <= 1.0)
                    .ok_or(format!(
                        "sample {fraction} must be more than 0 and at most 1"
                    ))
            },
            Some("the fraction of decisions logged, e.g. 0.01 for one in a hundred"),
        )
    });
    let max_per_second = section.max_per_second.as_ref().and_then(|most| {
        parse_or(
            diagnostics,
            most,
            |most| count("max_per_second", *most, 1_000_000),
            Some("decision lines per second at most, e.g. 1000; past it they are counted, not written"),
        )
    });
    LogConfig {
        format: format.unwrap_or(defaults.format),
        decisions: decisions.unwrap_or(defaults.decisions),
        sample: sample.unwrap_or(defaults.sample),
        max_per_second: max_per_second.unwrap_or(defaults.max_per_second),
        raw_keys: section.raw_keys.unwrap_or(defaults.raw_keys),
    }
}
