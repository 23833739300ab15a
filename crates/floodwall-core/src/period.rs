//! Periods as the configuration writes them: `500ms`, `1m`, `1d`, `2w`, and calendar months.

use std::time::Duration;

use crate::error::ParsePeriodError;

/// Parses a human period: a whole number followed by `ms`, `s`, `m`, `h`, `d` or `w` (7 days).
/// Calendar months (`1mo`) have no constant length: see [`parse_calendar_months`]. Whether a
/// `fixed_window` of weeks starts on Mondays is the caller's choice: see
/// [`Policy::weekly`](crate::Policy::weekly).
///
/// ```
/// use std::time::Duration;
/// use floodwall_core::parse_period;
///
/// assert_eq!(parse_period("500ms")?, Duration::from_millis(500));
/// assert_eq!(parse_period("1m")?, Duration::from_secs(60));
/// assert_eq!(parse_period("1d")?, Duration::from_secs(86_400));
/// assert!(parse_period("10").is_err());
/// # Ok::<(), floodwall_core::ParsePeriodError>(())
/// ```
///
/// # Errors
///
/// [`ParsePeriodError`] for a missing number or unit, an unknown unit, or a number too large to
/// represent; its message lists the accepted forms.
pub fn parse_period(input: &str) -> Result<Duration, ParsePeriodError> {
    let error = || ParsePeriodError {
        input: input.to_owned(),
    };
    let digits_end = input
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(error)?;
    let (number, unit) = input.split_at(digits_end);
    if number.is_empty() {
        return Err(error());
    }
    let n: u64 = number.parse().map_err(|_| error())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(error()),
    };
    let millis = n.checked_mul(millis_per_unit).ok_or_else(error)?;
    Ok(Duration::from_millis(millis))
}

/// Parses a period of calendar months, `<n>mo` (e.g. `1mo`, `3mo`): `None` when `input` is not
/// written in months, so a caller can try [`parse_period`] next.
///
/// ```
/// use floodwall_core::parse_calendar_months;
///
/// assert_eq!(parse_calendar_months("1mo"), Some(1));
/// assert_eq!(parse_calendar_months("12mo"), Some(12));
/// assert_eq!(parse_calendar_months("1m"), None);
/// ```
pub fn parse_calendar_months(input: &str) -> Option<u32> {
    let number = input.strip_suffix("mo")?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_the_rest() {
        assert_eq!(parse_period("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_period("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_period("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_period("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in [
            "",
            "s",
            "1",
            "1 s",
            "1.5s",
            "-1s",
            "1mo",
            "1W",
            "1S",
            "99999999999999999999d",
        ] {
            let err = parse_period(bad).unwrap_err();
            assert!(err.to_string().contains("500ms, 1s, 1m, 1h, 1d"), "{err}");
        }
    }

    #[test]
    fn calendar_months_are_digits_only() {
        assert_eq!(parse_calendar_months("3mo"), Some(3));
        for input in ["mo", "+1mo", "-1mo", " 1mo", "1 mo", "1.5mo", "1MO"] {
            assert_eq!(parse_calendar_months(input), None, "{input}");
        }
    }
}
