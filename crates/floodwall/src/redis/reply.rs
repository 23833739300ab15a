//! Decoding the script's reply: pure, and strict, because a proxy or another program can answer
//! anything (nil, strings, negative or huge numbers, arrays of the wrong length).

use std::time::Duration;

use ::redis::Value;
use floodwall_core::{Decision, Policy};
use smallvec::SmallVec;

use crate::error::StoreError;
use crate::verdict::Answer;

/// Decodes `{ now_us, allowed, (allowed, remaining, reset_after_us, retry_after_us)… }`.
pub(crate) fn decode(reply: &Value, policies: &[&Policy]) -> Result<Answer, StoreError> {
    let malformed = |detail: String| StoreError::Reply { detail };
    let Value::Array(items) = reply else {
        return Err(malformed(format!("expected an array, got {reply:?}")));
    };
    let expected = 2 + 4 * policies.len();
    if items.len() != expected {
        return Err(malformed(format!(
            "expected {expected} integers for {} policies, got {}",
            policies.len(),
            items.len()
        )));
    }
    let int = |i: usize| match &items[i] {
        Value::Int(v) => Ok(*v),
        other => Err(malformed(format!(
            "item {i}: expected an integer, got {other:?}"
        ))),
    };
    let non_negative = |i: usize| {
        let v = int(i)?;
        u64::try_from(v).map_err(|_| malformed(format!("item {i}: negative value {v}")))
    };
    let flag = |i: usize| match int(i)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(malformed(format!("item {i}: expected 0 or 1, got {v}"))),
    };
    let allowed = flag(1)?;
    let mut decisions: SmallVec<[Decision; 2]> = SmallVec::new();
    for (n, policy) in policies.iter().enumerate() {
        let base = 2 + 4 * n;
        let admits = flag(base)?;
        let retry_after = match int(base + 3)? {
            -1 if admits => None,
            _ if admits => {
                return Err(malformed(format!(
                    "item {}: retry for an admission",
                    base + 3
                )));
            }
            _ => Some(Duration::from_micros(non_negative(base + 3)?)),
        };
        decisions.push(Decision {
            allowed: admits,
            capacity: policy.capacity(),
            remaining: non_negative(base + 1)?,
            reset_after: Duration::from_micros(non_negative(base + 2)?),
            retry_after,
        });
    }
    Ok(Answer::from_store(allowed, decisions))
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
            Value::Array(vec![Value::Int(0); 7]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(1),
                Value::Int(1),
                Value::Int(-2),
                Value::Int(0),
                Value::Int(-1),
            ]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
                Value::Int(-1),
            ]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(1),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
                Value::Int(5),
            ]),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(1),
                Value::Nil,
                Value::Int(0),
                Value::Int(0),
                Value::Int(-1),
            ]),
        ];
        for reply in bad {
            assert!(
                matches!(decode(&reply, &[&policy()]), Err(StoreError::Reply { .. })),
                "{reply:?}"
            );
        }
    }
}
