//! Reservations kept in the store, for any limiter sharing it to settle by id: the admission
//! is written as a one-time record under an unguessable id, and the settle takes it, so of any
//! number of settles of one id on any instance, exactly one charges.

use std::time::Duration;

use floodwall_core::Policy;

use super::{Admitted, Reservation, Settlement, counted, micros};
use crate::error::Error;
use crate::lease::new_holder;
use crate::limiter::Limiter;
use crate::store::ControlStore;
use crate::verdict::Verdict;

/// The length of a kept reservation's id: 32 hex digits, 128 random bits.
pub const KEPT_ID_LEN: usize = 32;

/// The version of the record's layout, its first field.
const LAYOUT: &str = "1";
/// Separates the record's fields; no policy name or number holds it.
const SEPARATOR: char = '~';

/// A kept reservation, settled: what it was admitted for, and the state after the settle
/// (`None` when the actual cost asked for nothing: the same as the estimate, a refund no
/// policy still counts, or an admission that counted nothing to settle).
#[derive(Debug, Clone)]
pub struct KeptSettle {
    /// The cost the request was admitted for.
    pub estimate: u64,
    /// The state of the charged or refunded policies after the settle.
    pub state: Option<Verdict>,
}

impl Reservation {
    /// Keeps the reservation in the store for at most `ttl` and answers its id: 128 random
    /// bits in hex, which nobody can guess. Any limiter sharing the store settles it once by
    /// that id ([`Limiter::settle_kept`]); one never settled is settled at its estimate when
    /// it expires (the estimate stays charged). A reservation with nothing to settle (denied,
    /// or decided by the allow or deny list or a block) is not kept: `None`.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store could not keep it: the estimate stays
    /// charged, and the reservation cannot be settled.
    pub async fn keep(self, ttl: Duration) -> Result<Option<String>, Error> {
        let Some(counted) = counted(&self.verdict) else {
            return Ok(None);
        };
        let store = self.limiter.store();
        let reserved_at_us = self.reserved_at_us;
        let mut record = format!(
            "{LAYOUT}{SEPARATOR}{}{SEPARATOR}{reserved_at_us}{SEPARATOR}{}{SEPARATOR}",
            self.estimate,
            if counted { 'c' } else { 'u' },
        );
        for byte in &self.key {
            record.push_str(&format!("{byte:02x}"));
        }
        for admitted in self.admitted() {
            record.push(SEPARATOR);
            record.push_str(&format!(
                "{}:{}:{}",
                admitted.policy.name(),
                if admitted.allowed { 'a' } else { 'd' },
                micros(admitted.reset_after)
            ));
        }
        let id = format!("{:032x}", new_holder().0);
        store
            .put_record(&record_name(&id), record.as_bytes(), ttl)
            .await
            .map_err(|source| Error::StoreUnavailable { source })?;
        Ok(Some(id))
    }
}

impl Limiter {
    /// Settles the reservation kept under `id` ([`Reservation::keep`]) at its `actual` cost,
    /// once, by the rule of [`Reservation::settle`]: of any number of settles of one id, on
    /// any limiter sharing the store, one charges and the others find nothing. `policy_named`
    /// finds each of its policies by name as they are now (one that no longer exists is left
    /// alone). `None` when no reservation is kept under `id`: never kept, settled already, or
    /// expired (then settled at its estimate).
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store failed: the settle may or may not have
    /// happened (it is never answered by `on_error`).
    pub async fn settle_kept(
        &self,
        id: &str,
        actual: u64,
        policy_named: impl Fn(&str) -> Option<Policy>,
    ) -> Result<Option<KeptSettle>, Error> {
        let well_formed = id.len() == KEPT_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Ok(None);
        }
        let store = self.store();
        let record = store
            .take_record(&record_name(id))
            .await
            .map_err(|source| Error::StoreUnavailable { source })?;
        let Some(kept) = record.as_deref().and_then(Kept::read) else {
            return Ok(None);
        };
        let policies: Vec<Option<Policy>> = kept
            .policies
            .iter()
            .map(|(name, ..)| policy_named(name))
            .collect();
        let admitted: Vec<Admitted<'_>> = kept
            .policies
            .iter()
            .zip(&policies)
            .filter_map(|((_, allowed, reset_after), policy)| {
                Some(Admitted {
                    policy: policy.as_ref()?,
                    allowed: *allowed,
                    reset_after: *reset_after,
                })
            })
            .collect();
        let served_in =
            Duration::from_micros(store.clock().now_us().saturating_sub(kept.reserved_at_us));
        let settlement = Settlement::of(
            &admitted,
            Some(kept.counted),
            kept.estimate,
            actual,
            served_in,
        );
        let state = settlement.run(self, &kept.key).await?;
        Ok(Some(KeptSettle {
            estimate: kept.estimate,
            state,
        }))
    }
}

/// The store's name of the record of the reservation `id`.
fn record_name(id: &str) -> String {
    format!("reservation:{id}")
}

/// A kept reservation's record, read back.
struct Kept {
    estimate: u64,
    reserved_at_us: u64,
    counted: bool,
    key: Vec<u8>,
    /// Each policy's name, whether it admitted, and its `reset_after` then.
    policies: Vec<(String, bool, Duration)>,
}

impl Kept {
    /// Reads a record as [`Reservation::keep`] wrote it; `None` for anything else.
    fn read(record: &[u8]) -> Option<Kept> {
        let text = std::str::from_utf8(record).ok()?;
        let mut fields = text.split(SEPARATOR);
        if fields.next()? != LAYOUT {
            return None;
        }
        let estimate = fields.next()?.parse().ok()?;
        let reserved_at_us = fields.next()?.parse().ok()?;
        let counted = match fields.next()? {
            "c" => true,
            "u" => false,
            _ => return None,
        };
        let hex = fields.next()?;
        let key = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let policies = fields
            .map(|field| {
                let mut parts = field.split(':');
                let name = parts.next()?.to_owned();
                let allowed = match parts.next()? {
                    "a" => true,
                    "d" => false,
                    _ => return None,
                };
                let reset_after = Duration::from_micros(parts.next()?.parse().ok()?);
                Some((name, allowed, reset_after))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Kept {
            estimate,
            reserved_at_us,
            counted,
            key,
            policies,
        })
    }
}
