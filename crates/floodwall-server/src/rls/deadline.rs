//! The caller's deadline: gRPC's `grpc-timeout` header, which Envoy sets from its rate-limit
//! filter's `timeout` (20 ms unless configured). An answer after it is one Envoy no longer
//! reads, so the service answers before it, per `on_error` if the store has not answered.

use std::time::Duration;

use tokio::time::Instant;

/// The longest margin kept for the answer's way back over the wire.
const MOST_MARGIN: Duration = Duration::from_millis(5);

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
/// `None` for anything else, which gRPC says to treat as no deadline.
pub(super) fn parse(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount.checked_mul(3_600)?),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// When to have answered a call that arrived at `received` with `timeout`: the caller's
/// deadline less a margin for the answer's way back and a busy scheduler (a quarter of the
/// timeout, from 1 ms up to 5 ms, and never more than half of it).
pub(super) fn answer_by(received: Instant, timeout: Duration) -> Instant {
    let margin = (timeout / 4)
        .clamp(Duration::from_millis(1), MOST_MARGIN)
        .min(timeout / 2);
    received + timeout - margin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_and_refuses_the_rest() {
        assert_eq!(parse(b"20m"), Some(Duration::from_millis(20)));
        assert_eq!(parse(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse(b"1H"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse(b"250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [
            &b""[..],
            b"m",
            b"20",
            b"20x",
            b"123456789m",
            b"-1m",
            b"2 m",
            b"\xffm",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keeps_a_margin_for_the_wire() {
        let now = Instant::now();
        let by = |ms| answer_by(now, Duration::from_millis(ms)) - now;
        assert_eq!(by(20), Duration::from_millis(15));
        assert_eq!(by(5), Duration::from_millis(3) + Duration::from_micros(750));
        assert_eq!(by(1000), Duration::from_millis(995));
        assert_eq!(by(1), Duration::from_micros(500));
    }
}
