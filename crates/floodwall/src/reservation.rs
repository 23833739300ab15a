//! Costs known only after the answer: a [`Reservation`] admits a request on an estimate of its
//! cost, and its [`settle`](Reservation::settle) charges the difference from the actual cost,
//! once.

use std::fmt;
use std::time::Duration;

use floodwall_core::{Algorithm, Policy};
use tokio::time::Instant;

use crate::error::{CheckError, Error};
use crate::gate::{Gate, Passage};
use crate::limiter::Limiter;
use crate::store::{Charge, Check, Source};
use crate::verdict::Verdict;

/// A request admitted on an estimate of its cost (the tokens a model may generate, the rows a
/// query may return), to be settled at its actual cost once the answer is known.
///
/// [`settle`](Reservation::settle) consumes the reservation, so it charges at most once. A
/// reservation dropped unsettled (its owner gave up, a task was cancelled) is settled at its
/// estimate: the estimate was charged when it was admitted, and nothing more is.
#[must_use = "a reservation is settled at its estimate unless settled at its actual cost"]
pub struct Reservation {
    limiter: Limiter,
    key: Vec<u8>,
    estimate: u64,
    verdict: Verdict,
    reserved_at: Instant,
}

impl Limiter {
    /// Admits a request for `key` under every one of `policies` on an `estimate` of its cost,
    /// all-or-nothing as [`Limiter::decide`] decides a check; the reservation is then settled
    /// at the actual cost ([`Reservation::settle`]). A denied reservation took nothing and
    /// settles nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use floodwall::{Algorithm, Limiter, MemoryStore, Policy};
    ///
    /// let tokens = Policy::new("tokens", Algorithm::FixedWindow, 10_000, Duration::from_secs(60))?
    ///     .with_max_debt(10_000)?;
    /// let limiter = Limiter::new(MemoryStore::new());
    /// let reservation = limiter.reserve(&[tokens.clone()], "org-1", 500).await?;
    /// assert!(reservation.allowed());
    /// // The completion used 620 tokens: 120 more than estimated are charged.
    /// let settled = reservation.settle(620).await?;
    /// assert_eq!(settled.decisions()[0].remaining, 10_000 - 620);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Check`] when a policy could never admit `estimate`, is named twice, or is a
    /// `concurrency` policy (which holds units, not a cost); otherwise as [`Limiter::decide`].
    pub async fn reserve(
        &self,
        policies: &[Policy],
        key: impl AsRef<[u8]>,
        estimate: u64,
    ) -> Result<Reservation, Error> {
        if let Some(held) = policies
            .iter()
            .find(|policy| policy.algorithm() == Algorithm::Concurrency)
        {
            return Err(CheckError::NotReservable {
                policy: held.name().to_owned(),
            }
            .into());
        }
        let key = key.as_ref();
        let check = Check::new(policies, key, estimate)?;
        let reserved_at = Instant::now();
        let verdict = self.decide(&check).await?;
        Ok(Reservation {
            limiter: self.clone(),
            key: key.to_vec(),
            estimate,
            verdict,
            reserved_at,
        })
    }
}

impl Gate {
    /// The reservation of a request this gate admitted for `key` on `estimate` (the cost it
    /// checked), as `passage` answered it: for a front end that admits through the gate and
    /// settles once the response says what the request cost. `None` when the passage answered
    /// an error. Its `concurrency` policies hold units rather than a cost: a settle leaves them
    /// alone.
    pub fn reservation(&self, passage: &Passage, key: &[u8], estimate: u64) -> Option<Reservation> {
        let verdict = passage.outcome().ok()?.clone();
        Some(Reservation {
            limiter: self.limiter().clone(),
            key: key.to_vec(),
            estimate,
            verdict,
            reserved_at: passage.asked_at(),
        })
    }
}

impl Reservation {
    /// Whether the request may go on.
    #[inline]
    pub fn allowed(&self) -> bool {
        self.verdict.allowed()
    }

    /// The answer to the reservation: what each policy decided on the estimate.
    #[inline]
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The cost the request was admitted for.
    #[inline]
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// Settles the request at its `actual` cost, once, on the policies and key it reserved,
    /// and answers their state afterwards:
    ///
    /// - more than the estimate: the difference is charged whatever is left (past zero the key
    ///   owes it, up to each policy's `max_debt`), on each policy that admitted the estimate;
    /// - less: the difference is given back, on each policy whose admission still counts (its
    ///   `reset_after` has not passed since the reservation; a quota that came back meanwhile
    ///   has forgotten the request, and a refund then would hand the next period more than its
    ///   limit);
    /// - the same: nothing.
    ///
    /// A reservation admitted without counting (the store failed and its policies fail open,
    /// or the in-process fallback decided) is charged its whole actual cost: the store has
    /// not counted the estimate. One that was denied, or admitted by the allow list, settles
    /// nothing. A caller that leaves while a settle runs leaves it running: it reaches the
    /// store or fails there.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] when the store failed: the settle may or may not have
    /// happened (it is never answered by `on_error`).
    pub async fn settle(self, actual: u64) -> Result<Verdict, Error> {
        let counted = match self.verdict.source() {
            _ if !self.verdict.allowed() => return Ok(self.verdict),
            Source::Store | Source::Prefetched => true,
            Source::FailOpen | Source::Local => false,
            Source::AllowList | Source::DenyCache | Source::Blocked | Source::DenyList => {
                return Ok(self.verdict);
            }
        };
        let key = self.key.as_slice();
        let policies = self.verdict.policies();
        // In-flight limits (only a gate's reservation has them) hold units, not a cost.
        let costed = |policy: &&Policy| policy.algorithm() != Algorithm::Concurrency;
        if !counted {
            let every: Vec<_> = policies
                .iter()
                .filter(costed)
                .map(|p| (p, key, actual))
                .collect();
            return self.charge(every).await;
        }
        let decisions = self.verdict.decisions();
        if actual > self.estimate {
            let more = actual - self.estimate;
            let took = policies
                .iter()
                .zip(decisions)
                .filter(|(policy, decision)| decision.allowed && costed(policy))
                .map(|(policy, _)| (policy, key, more))
                .collect();
            return self.charge(took).await;
        }
        if actual < self.estimate {
            let served_in = self.reserved_at.elapsed();
            let less = self.estimate - actual;
            let refundable: Vec<(&Policy, &[u8])> = self
                .verdict
                .refundable(served_in)
                .filter_map(|index| policies.get(index))
                .filter(costed)
                .map(|policy| (policy, key))
                .collect();
            if refundable.is_empty() {
                return Ok(self.verdict);
            }
            return self
                .limiter
                .give_back(&Check::each(refundable, less)?)
                .await;
        }
        Ok(self.verdict)
    }

    /// Charges `pairs`; with none, answers the reservation's own verdict.
    async fn charge(&self, pairs: Vec<(&Policy, &[u8], u64)>) -> Result<Verdict, Error> {
        if pairs.is_empty() {
            return Ok(self.verdict.clone());
        }
        self.limiter.charge(&Charge::each(pairs)?).await
    }

    /// How long ago the reservation was admitted.
    pub fn age(&self) -> Duration {
        self.reserved_at.elapsed()
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("estimate", &self.estimate)
            .field("verdict", &self.verdict)
            .finish_non_exhaustive()
    }
}
