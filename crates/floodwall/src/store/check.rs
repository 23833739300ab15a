//! What a store is asked: (policy, client key) pairs and a cost, validated once.

use std::time::Duration;

use floodwall_core::algorithm::check_cost;
use floodwall_core::{Algorithm, Holder, Policy};
use smallvec::SmallVec;

use crate::error::CheckError;

/// One all-or-nothing request to a [`Store`](crate::store::Store): a cost for each (policy, client key)
/// pair, the same for all of them or ([`Check::weighted`]) one each. It is admitted only if every
/// enforced policy admits its pair's cost for its key, and then each admitting pair consumes;
/// otherwise none does. A cost of 0 peeks (judges one unit, consumes nothing).
///
/// A `Check` can only be built with a cost that every one of its policies can admit, and with
/// each (policy, key) pair once, so no store ever sees a cost that can never pass or a pair that
/// would be judged twice against the same state. The [`Limiter`](crate::Limiter) builds them; stores used
/// directly take them too.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    pairs: SmallVec<[(&'a Policy, &'a [u8]); 2]>,
    /// The cost of every pair; for a weighted check whose costs differ, the largest.
    cost: u64,
    /// Each pair's cost when they differ; empty when every pair takes `cost`.
    costs: SmallVec<[u64; 2]>,
    /// Whether every pair has the same client key (the common case: several policies, one
    /// client), so a Redis store can decide them in one call under one hash tag.
    one_key: bool,
    /// Who holds what a `concurrency` pair admits, until [`Store::release`](crate::store::Store::release).
    holder: Holder,
}

impl<'a> Check<'a> {
    /// `cost` units for `key` under every one of `policies`.
    ///
    /// # Errors
    ///
    /// [`CheckError::Cost`] when a policy can never admit `cost`; [`CheckError::Duplicate`] when
    /// a policy is named twice.
    #[inline]
    pub fn new(policies: &'a [Policy], key: &'a [u8], cost: u64) -> Result<Self, CheckError> {
        // Pushed one by one: a check sits on every request's path, and a collect through an
        // iterator adapter costs more here than the loop.
        let mut pairs = SmallVec::new();
        for policy in policies {
            pairs.push((policy, key));
        }
        Check::build(pairs, cost, true)
    }

    /// `cost` units for each (policy, client key) pair: per-user *and* global, per-IP *and*
    /// per-tenant, in one all-or-nothing check.
    ///
    /// # Errors
    ///
    /// As [`Check::new`]; a duplicate is the same policy twice with the same key.
    pub fn each(
        pairs: impl IntoIterator<Item = (&'a Policy, &'a [u8])>,
        cost: u64,
    ) -> Result<Self, CheckError> {
        let pairs: SmallVec<[(&'a Policy, &'a [u8]); 2]> = pairs.into_iter().collect();
        let one_key = pairs.windows(2).all(|w| w[0].1 == w[1].1);
        Check::build(pairs, cost, one_key)
    }

    /// Each (policy, client key) pair with a cost of its own, decided all-or-nothing: an Envoy
    /// request whose descriptors carry their own `hits_addend`, say. A pair of cost 0 is judged
    /// (for one unit) but consumes nothing.
    ///
    /// # Errors
    ///
    /// As [`Check::each`], each cost against its own pair's policy.
    pub fn weighted(
        pairs: impl IntoIterator<Item = (&'a Policy, &'a [u8], u64)>,
    ) -> Result<Self, CheckError> {
        Check::with_costs(pairs, |policy, cost| {
            check_cost(policy, cost)?;
            Ok(cost)
        })
    }

    /// Each pair with the cost `admissible` makes of its own (or the error it returns).
    fn with_costs(
        pairs: impl IntoIterator<Item = (&'a Policy, &'a [u8], u64)>,
        admissible: impl Fn(&Policy, u64) -> Result<u64, CheckError>,
    ) -> Result<Self, CheckError> {
        let mut plain: SmallVec<[(&'a Policy, &'a [u8]); 2]> = SmallVec::new();
        let mut costs: SmallVec<[u64; 2]> = SmallVec::new();
        for (policy, key, cost) in pairs {
            costs.push(admissible(policy, cost)?);
            plain.push((policy, key));
        }
        let largest = costs.iter().copied().max().unwrap_or(0);
        let one_key = plain.windows(2).all(|w| w[0].1 == w[1].1);
        let mut check = Check::build(plain, 0, one_key)?;
        check.cost = largest;
        if costs.iter().any(|c| *c != largest) {
            check.costs = costs;
        }
        Ok(check)
    }

    #[inline]
    fn build(
        pairs: SmallVec<[(&'a Policy, &'a [u8]); 2]>,
        cost: u64,
        one_key: bool,
    ) -> Result<Self, CheckError> {
        for (n, (policy, key)) in pairs.iter().enumerate() {
            check_cost(policy, cost)?;
            // Stores key state by name and algorithm; checks name a handful of policies.
            let twice = pairs[..n].iter().any(|(other, other_key)| {
                other.name() == policy.name()
                    && other.algorithm() == policy.algorithm()
                    && other_key == key
            });
            if twice {
                return Err(CheckError::Duplicate {
                    policy: policy.name().to_owned(),
                });
            }
        }
        Ok(Check {
            pairs,
            cost,
            costs: SmallVec::new(),
            one_key,
            holder: Holder::ANONYMOUS,
        })
    }

    /// The same check, with what its `concurrency` pairs admit held by `holder` until the store
    /// releases it. Units admitted by a check without a holder go back only when they time out.
    #[must_use]
    pub fn held_by(mut self, holder: Holder) -> Self {
        self.holder = holder;
        self
    }

    /// Who holds what this check's `concurrency` pairs admit.
    #[inline]
    pub fn holder(&self) -> Holder {
        self.holder
    }

    /// Whether a pair is a `concurrency` policy: its units are held, not spent.
    #[inline]
    pub fn holds(&self) -> bool {
        self.pairs
            .iter()
            .any(|(policy, _)| policy.algorithm() == Algorithm::Concurrency)
    }

    /// Whether what this check admits is held for a holder to give back: it has a `concurrency`
    /// pair and a holder. Only such a check leaves anything to release.
    #[inline]
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn takes_held_units(&self) -> bool {
        self.holder != Holder::ANONYMOUS && self.holds()
    }

    /// How long what this check holds stays held if never released: the shortest `period` among
    /// its `concurrency` policies (`None` when it has none).
    pub(crate) fn hold_timeout(&self) -> Option<Duration> {
        self.policies()
            .filter(|policy| policy.algorithm() == Algorithm::Concurrency)
            .map(Policy::period)
            .min()
    }

    /// The units each pair asks for; 0 for a peek. For a weighted check whose pairs' costs
    /// differ, the largest of them.
    #[inline]
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// The units pair `index` asks for.
    #[inline]
    pub fn cost_of(&self, index: usize) -> u64 {
        self.costs.get(index).copied().unwrap_or(self.cost)
    }

    /// Each pair's cost when they differ (a weighted check); `None` when every pair asks for
    /// [`cost`](Self::cost).
    #[inline]
    pub fn costs(&self) -> Option<&[u64]> {
        (!self.costs.is_empty()).then_some(&self.costs[..])
    }

    /// The (policy, client key) pairs, in the order given.
    #[inline]
    pub fn pairs(&self) -> &[(&'a Policy, &'a [u8])] {
        &self.pairs
    }

    /// The policies, in the order given.
    pub fn policies(&self) -> impl ExactSizeIterator<Item = &'a Policy> + '_ {
        self.pairs.iter().map(|(policy, _)| *policy)
    }

    /// The client key, when every pair has the same one.
    pub fn shared_key(&self) -> Option<&'a [u8]> {
        match self.pairs.first() {
            Some((_, key)) if self.one_key => Some(key),
            _ => None,
        }
    }

    /// Whether there are no pairs (always admitted).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The number of pairs.
    #[inline]
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// A [`Check`] that owns its policies and keys: what a call needs to outlive its caller (a
/// store call that finishes its bookkeeping on a task of its own, a lease released on drop).
#[derive(Debug, Clone)]
pub(crate) struct OwnedCheck {
    pairs: SmallVec<[(Policy, Box<[u8]>); 2]>,
    cost: u64,
    costs: SmallVec<[u64; 2]>,
    one_key: bool,
    holder: Holder,
}

impl OwnedCheck {
    pub(crate) fn of(check: &Check<'_>) -> Self {
        OwnedCheck {
            pairs: check
                .pairs
                .iter()
                .map(|(policy, key)| ((*policy).clone(), Box::from(*key)))
                .collect(),
            cost: check.cost,
            costs: check.costs.clone(),
            one_key: check.one_key,
            holder: check.holder,
        }
    }

    /// Who holds what the check admits.
    pub(crate) fn holder(&self) -> Holder {
        self.holder
    }

    /// The check it was made of: the same pairs, costs and holder (validated then, so not again).
    pub(crate) fn check(&self) -> Check<'_> {
        Check {
            pairs: self
                .pairs
                .iter()
                .map(|(policy, key)| (policy, &key[..]))
                .collect(),
            cost: self.cost,
            costs: self.costs.clone(),
            one_key: self.one_key,
            holder: self.holder,
        }
    }
}

/// Costs known only after the answer, charged whatever is left ([`Store::debit`](crate::store::Store::debit)):
/// (policy, client key) pairs with a cost each. Past zero a key owes the rest, up to its
/// policy's [`max_debt`](floodwall_core::Policy::with_max_debt); what would go past that is
/// forgiven, so each pair's cost is cut to its capacity and `max_debt` together, which charges
/// exactly as much as any more would. A charge is never a decision: a store cannot be asked to
/// decide one.
#[derive(Debug, Clone)]
pub struct Charge<'a>(Check<'a>);

impl<'a> Charge<'a> {
    /// `cost` units for `key` under every one of `policies`.
    ///
    /// # Errors
    ///
    /// [`CheckError::Duplicate`] when a policy is named twice.
    pub fn new(policies: &'a [Policy], key: &'a [u8], cost: u64) -> Result<Self, CheckError> {
        Charge::each(policies.iter().map(|policy| (policy, key, cost)))
    }

    /// Each (policy, client key) pair with a cost of its own.
    ///
    /// # Errors
    ///
    /// [`CheckError::Duplicate`] when the same policy comes twice with the same key.
    pub fn each(
        pairs: impl IntoIterator<Item = (&'a Policy, &'a [u8], u64)>,
    ) -> Result<Self, CheckError> {
        let check = Check::with_costs(pairs, |policy, cost| {
            Ok(cost.min(policy.capacity() + policy.max_debt()))
        })?;
        Ok(Charge(check))
    }

    /// The (policy, client key) pairs, in order.
    #[inline]
    pub fn pairs(&self) -> &[(&'a Policy, &'a [u8])] {
        self.0.pairs()
    }

    /// The cost of pair `i` (as cut).
    #[inline]
    pub fn cost_of(&self, i: usize) -> u64 {
        self.0.cost_of(i)
    }

    /// The pairs and their costs as a check, for the stores of this crate, which charge by the
    /// same paths they decide by. Never handed out: a decision on it could be asked for a cost
    /// no policy admits.
    #[inline]
    pub(crate) fn as_check(&self) -> &Check<'a> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use floodwall_core::Algorithm;

    use super::*;

    #[test]
    fn a_cost_no_policy_can_admit_is_refused_up_front() {
        let small = Policy::new("small", Algorithm::Gcra, 2, Duration::from_secs(1)).unwrap();
        let large = Policy::new("large", Algorithm::Gcra, 9, Duration::from_secs(1)).unwrap();
        let both = [large.clone(), small.clone()];
        let Err(CheckError::Cost(error)) = Check::new(&both, b"k", 3) else {
            panic!("a cost of 3 exceeds the small policy's capacity");
        };
        assert_eq!(error.policy, "small");
        assert!(Check::new(&both, b"k", 2).is_ok());
        assert!(Check::each([(&large, &b"a"[..]), (&small, &b"b"[..])], 3).is_err());
    }

    #[test]
    fn knows_when_every_pair_shares_one_client() {
        let p = Policy::new("p", Algorithm::Gcra, 2, Duration::from_secs(1)).unwrap();
        let q = Policy::new("q", Algorithm::Gcra, 2, Duration::from_secs(1)).unwrap();
        let shared = Check::each([(&p, &b"a"[..]), (&q, &b"a"[..])], 1).unwrap();
        assert_eq!(shared.shared_key(), Some(&b"a"[..]));
        let split = Check::each([(&p, &b"a"[..]), (&q, &b"b"[..])], 1).unwrap();
        assert_eq!(split.shared_key(), None);
        assert_eq!(split.len(), 2);
    }

    #[test]
    fn a_weighted_check_keeps_each_pairs_cost() {
        let p = Policy::new("p", Algorithm::Gcra, 2, Duration::from_secs(1)).unwrap();
        let q = Policy::new("q", Algorithm::Gcra, 5, Duration::from_secs(1)).unwrap();
        let mixed = Check::weighted([(&p, &b"a"[..], 0), (&q, &b"b"[..], 4)]).unwrap();
        assert_eq!(
            (mixed.cost(), mixed.cost_of(0), mixed.cost_of(1)),
            (4, 0, 4)
        );
        assert_eq!(mixed.costs(), Some(&[0, 4][..]));
        let even = Check::weighted([(&p, &b"a"[..], 2), (&q, &b"b"[..], 2)]).unwrap();
        assert_eq!((even.cost(), even.costs()), (2, None));
        // Each cost is held to its own policy: 4 fits q but not p.
        assert!(Check::weighted([(&p, &b"a"[..], 4), (&q, &b"b"[..], 1)]).is_err());
        assert!(Check::weighted([(&p, &b"a"[..], 1), (&p, &b"a"[..], 1)]).is_err());
    }

    #[test]
    fn a_pair_named_twice_is_refused() {
        let p = Policy::new("p", Algorithm::Gcra, 2, Duration::from_secs(1)).unwrap();
        let twice = [p.clone(), p.clone()];
        assert_eq!(
            Check::new(&twice, b"k", 1).unwrap_err(),
            CheckError::Duplicate { policy: "p".into() }
        );
        // The same policy for two different clients is two pairs.
        assert!(Check::each([(&p, &b"a"[..]), (&p, &b"b"[..])], 1).is_ok());
    }
}
