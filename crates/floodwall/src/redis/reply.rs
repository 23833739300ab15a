//! Decoding the script's reply: pure, and strict, because a proxy or another program can answer
//! anything (nil, strings, negative or huge numbers, arrays of the wrong length).

use std::time::Duration;

use ::redis::Value;
use floodwall_core::{Decision, Policy};
use smallvec::SmallVec;

use crate::error::StoreError;
use crate::store::Answer;

fn malformed(detail: String) -> StoreError {
    StoreError::Reply { detail }
}

/// A reply's array of integers, read strictly.
struct Integers<'a>(&'a [Value]);

impl<'a> Integers<'a> {
    /// The array of `reply`, which must hold exactly `expected` items.
    fn of(reply: &'a Value, expected: usize, what: &str) -> Result<Self, StoreError> {
        let Value::Array(items) = reply else {
            return Err(malformed(format!("expected an array, got {reply:?}")));
        };
        Integers::exactly(items, expected, || what.to_owned())
    }

    /// `items`, which must be exactly `expected`; `what` names them in the error.
    fn exactly(
        items: &'a [Value],
        expected: usize,
        what: impl FnOnce() -> String,
    ) -> Result<Self, StoreError> {
        if items.len() != expected {
            return Err(malformed(format!(
                "expected {expected} integers for {}, got {}",
                what(),
                items.len()
            )));
        }
        Ok(Integers(items))
    }

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        match &self.0[i] {
            Value::Int(v) => Ok(*v),
            other => Err(malformed(format!(
                "item {i}: expected an integer, got {other:?}"
            ))),
        }
    }

    fn non_negative(&self, i: usize) -> Result<u64, StoreError> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| malformed(format!("item {i}: negative value {v}")))
    }

    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        match self.int(i)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(malformed(format!("item {i}: expected 0 or 1, got {v}"))),
        }
    }

    /// A wait at `i`: -1 (none) exactly when `admits`, else a non-negative µs count.
    fn retry_after(&self, i: usize, admits: bool) -> Result<Option<Duration>, StoreError> {
        match self.int(i)? {
            -1 if admits => Ok(None),
            _ if admits => Err(malformed(format!("item {i}: retry for an admission"))),
            _ => Ok(Some(Duration::from_micros(self.non_negative(i)?))),
        }
    }
}

/// The integers per policy in a decision script's reply.
pub(crate) const PER_POLICY: usize = 5;

/// Decodes `{ now_us, allowed, (allowed, remaining, reset_after_us, retry_after_us, debt)… }`.
pub(crate) fn decode(reply: &Value, policies: &[&Policy]) -> Result<Answer, StoreError> {
    let Value::Array(items) = reply else {
        return Err(malformed(format!("expected an array, got {reply:?}")));
    };
    match items.split_first() {
        Some((_now, fields)) => decode_fields(fields, policies),
        None => Err(malformed(
            "expected an array of integers, got none".to_owned(),
        )),
    }
}

/// Decodes a decision's fields without the `now_us` before them: `{ allowed, (allowed,
/// remaining, reset_after_us, retry_after_us, debt)… }`, one decision of a batch's reply.
pub(crate) fn decode_fields(fields: &[Value], policies: &[&Policy]) -> Result<Answer, StoreError> {
    let expected = 1 + PER_POLICY * policies.len();
    let items = Integers::exactly(fields, expected, || format!("{} policies", policies.len()))?;
    let allowed = items.flag(0)?;
    let mut decisions: SmallVec<[Decision; 2]> = SmallVec::new();
    for (n, policy) in policies.iter().enumerate() {
        let base = 1 + PER_POLICY * n;
        let admits = items.flag(base)?;
        decisions.push(Decision {
            allowed: admits,
            capacity: policy.capacity(),
            remaining: items.non_negative(base + 1)?,
            reset_after: Duration::from_micros(items.non_negative(base + 2)?),
            retry_after: items.retry_after(base + 3, admits)?,
            debt: items.non_negative(base + 4)?,
        });
    }
    Ok(Answer::from_store(allowed, decisions))
}

/// What the prefetch script did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moved {
    /// Units taken or given back; 0 when none moved.
    pub(crate) units: u64,
    /// Units left in the window after the move.
    pub(crate) remaining: u64,
    /// Time until the key is back at rest (the window's end when anything is counted).
    pub(crate) reset_after: Duration,
    /// For a take that moved nothing: how long until `fewest` units would be there.
    pub(crate) retry_after: Option<Duration>,
    /// The start of the window on Redis's clock when the script ran.
    pub(crate) window_start_us: u64,
}

/// Decodes the prefetch script's `{ now_us, moved, remaining, reset_after_us, retry_after_us,
/// window_start_us }`: a retry exactly when nothing moved on a take.
/// The quota script's reply: `{ per_period, max, expires_us }`, a bucket that holds nothing only
/// with a rate of nothing.
pub(crate) fn decode_share(reply: &Value) -> Result<floodwall_core::quota::Share, StoreError> {
    let items = Integers::of(reply, 3, "a share")?;
    let share = floodwall_core::quota::Share {
        per_period: items.non_negative(0)?,
        max: items.non_negative(1)?,
        expires_us: items.non_negative(2)?,
    };
    if share.max == 0 && share.per_period > 0 {
        return Err(malformed(format!("a rate with no room for it: {share:?}")));
    }
    Ok(share)
}

pub(crate) fn decode_prefetch(reply: &Value, take: bool) -> Result<Moved, StoreError> {
    let items = Integers::of(reply, 6, "a prefetch")?;
    let units = items.non_negative(1)?;
    let retry_after = items.retry_after(4, !take || units > 0)?;
    Ok(Moved {
        units,
        remaining: items.non_negative(2)?,
        reset_after: Duration::from_micros(items.non_negative(3)?),
        retry_after,
        window_start_us: items.non_negative(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::Algorithm;

    fn policy() -> Policy {
        Policy::new("p", Algorithm::Gcra, 5, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn decodes_a_denial() {
        let reply = Value::Array(vec![
            Value::Int(1_000),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(200_000),
            Value::Int(200_000),
            Value::Int(0),
        ]);
        let answer = decode(&reply, &[&policy()]).unwrap();
        assert!(!answer.allowed);
        assert_eq!(
            answer.decisions[0].retry_after,
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn rejects_anything_else_without_panicking() {
        let bad = [
            Value::Nil,
            Value::Int(1),
            Value::SimpleString("OK".into()),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(0); 8]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(1),
                Value::Int(1),
                Value::Int(-2),
                Value::Int(0),
                Value::Int(-1),
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
                Value::Int(-1),
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(1),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
                Value::Int(5),
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(1),
                Value::Nil,
                Value::Int(0),
                Value::Int(0),
                Value::Int(-1),
                Value::Int(0),
            ]),
        ];
        for reply in bad {
            assert!(
                matches!(decode(&reply, &[&policy()]), Err(StoreError::Reply { .. })),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn a_prefetch_reply_waits_only_when_a_take_moved_nothing() {
        let reply = |moved: i64, retry: i64| {
            Value::Array(
                [1_000, moved, 3, 500_000, retry, 0]
                    .map(Value::Int)
                    .to_vec(),
            )
        };
        let taken = decode_prefetch(&reply(10, -1), true).unwrap();
        assert_eq!(
            (taken.units, taken.remaining, taken.retry_after),
            (10, 3, None)
        );
        let refused = decode_prefetch(&reply(0, 500_000), true).unwrap();
        assert_eq!(refused.retry_after, Some(Duration::from_millis(500)));
        assert_eq!(decode_prefetch(&reply(0, -1), false).unwrap().units, 0);
        for (bad, take) in [
            (reply(0, -1), true),
            (reply(10, 5), true),
            (reply(-1, -1), false),
            (Value::Array(vec![Value::Int(0); 5]), true),
            (Value::Nil, false),
        ] {
            assert!(
                matches!(decode_prefetch(&bad, take), Err(StoreError::Reply { .. })),
                "{bad:?}"
            );
        }
    }
}
