//! Costs known only after the answer: a [`Reservation`] admits a request on an estimate of its
//! cost, and its [`settle`](Reservation::settle) charges the difference from the actual cost,
//! once. A reservation can also be kept in the store ([`Reservation::keep`]) for any limiter
//! sharing it to settle by id ([`Limiter::settle_kept`]).

mod kept;

pub use kept::{KEPT_ID_LEN, KeptSettle};

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
    /// When it was asked for, on the store's clock: the clock its `reset_after` counts on, so
    /// the refund rule compares times of one clock.
    reserved_at_us: u64,
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
        let reserved_at_us = self.store().clock().now_us();
        let verdict = self.decide(&check).await?;
        Ok(Reservation {
            limiter: self.clone(),
            key: key.to_vec(),
            estimate,
            verdict,
            reserved_at,
            reserved_at_us,
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
        let asked_at = passage.asked_at();
        let now_us = self.limiter().store().clock().now_us();
        Some(Reservation {
            limiter: self.limiter().clone(),
            key: key.to_vec(),
            estimate,
            verdict,
            reserved_at: asked_at,
            reserved_at_us: now_us.saturating_sub(micros(asked_at.elapsed())),
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
        let admitted = self.admitted();
        let settlement = Settlement::of(
            &admitted,
            counted(&self.verdict),
            self.estimate,
            actual,
            self.served_in(),
        );
        match settlement.run(&self.limiter, &self.key).await? {
            Some(verdict) => Ok(verdict),
            None => Ok(self.verdict),
        }
    }

    /// Each policy's part of the admission.
    fn admitted(&self) -> Vec<Admitted<'_>> {
        self.verdict
            .iter()
            .map(|(policy, decision)| Admitted {
                policy,
                allowed: decision.allowed,
                reset_after: decision.reset_after,
            })
            .collect()
    }

    /// How long ago the reservation was admitted.
    pub fn age(&self) -> Duration {
        self.reserved_at.elapsed()
    }

    /// How long the request has been served, on the store's clock: the clock the admission's
    /// `reset_after` counts on, which the refund rule compares it with.
    fn served_in(&self) -> Duration {
        let now_us = self.limiter.store().clock().now_us();
        Duration::from_micros(now_us.saturating_sub(self.reserved_at_us))
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

/// Whether an admission counted its estimate in the store: `Some(true)` when the store
/// counted it, `Some(false)` when it was admitted without counting (the store failed and its
/// policies fail open, or the in-process fallback decided), `None` when there is nothing to
/// settle (denied, or decided by the lists, a block or a cached denial).
fn counted(verdict: &Verdict) -> Option<bool> {
    match verdict.source() {
        _ if !verdict.allowed() => None,
        Source::Store | Source::Prefetched => Some(true),
        Source::FailOpen | Source::Local => Some(false),
        Source::AllowList | Source::DenyCache | Source::Blocked | Source::DenyList => None,
    }
}

/// One policy's part of an admission, as a settle needs it.
#[derive(Debug, Clone)]
struct Admitted<'p> {
    policy: &'p Policy,
    allowed: bool,
    reset_after: Duration,
}

/// What settling an admission at its actual cost takes: a charge of some pairs, a refund of
/// some, or nothing. The one settle rule, for reservations in hand and kept ones alike.
enum Settlement<'p> {
    Charge(Vec<(&'p Policy, u64)>),
    Refund(Vec<&'p Policy>, u64),
    Nothing,
}

impl<'p> Settlement<'p> {
    /// More than the estimate charges the difference on each policy that admitted; less gives
    /// it back on each whose admission still counts `served_in` after it (its `reset_after`
    /// has not passed); an admission that counted nothing is charged the whole actual cost.
    /// In-flight limits hold units, not a cost: they are left alone.
    fn of(
        admitted: &[Admitted<'p>],
        counted: Option<bool>,
        estimate: u64,
        actual: u64,
        served_in: Duration,
    ) -> Self {
        let costed = admitted
            .iter()
            .filter(|a| a.policy.algorithm() != Algorithm::Concurrency);
        let pairs: Vec<_> = match counted {
            None => return Settlement::Nothing,
            Some(false) => costed.map(|a| (a.policy, actual)).collect(),
            Some(true) if actual > estimate => costed
                .filter(|a| a.allowed)
                .map(|a| (a.policy, actual - estimate))
                .collect(),
            Some(true) if actual < estimate => {
                let refundable: Vec<_> = costed
                    .filter(|a| a.allowed && served_in < a.reset_after)
                    .map(|a| a.policy)
                    .collect();
                return match refundable.is_empty() {
                    true => Settlement::Nothing,
                    false => Settlement::Refund(refundable, estimate - actual),
                };
            }
            Some(true) => Vec::new(),
        };
        match pairs.is_empty() {
            true => Settlement::Nothing,
            false => Settlement::Charge(pairs),
        }
    }

    /// Runs the settlement for `key`: the state afterwards, `None` when there was nothing to do.
    async fn run(&self, limiter: &Limiter, key: &[u8]) -> Result<Option<Verdict>, Error> {
        match self {
            Settlement::Charge(pairs) => {
                let charge =
                    Charge::each(pairs.iter().map(|(policy, cost)| (*policy, key, *cost)))?;
                Ok(Some(limiter.charge(&charge).await?))
            }
            Settlement::Refund(policies, less) => {
                let check = Check::each(policies.iter().map(|policy| (*policy, key)), *less)?;
                Ok(Some(limiter.give_back(&check).await?))
            }
            Settlement::Nothing => Ok(None),
        }
    }
}

/// Whole microseconds of `span`, saturating.
fn micros(span: Duration) -> u64 {
    u64::try_from(span.as_micros()).unwrap_or(u64::MAX)
}
