//! A brute-force model of `floodwall_core::quota`: the fair division found one unit at a time
//! (each unit to the reporter furthest below its want, the lowest id first), shares kept in a
//! map, and every rule written as plainly as it is stated.

use std::collections::BTreeMap;

/// The model's view of one reporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShare {
    /// Requests per period, from its last report.
    pub demand: u64,
    /// Units per period granted.
    pub per_period: u64,
    /// Units held at most.
    pub max: u64,
    /// When the share lapses.
    pub expires_us: u64,
}

/// The shares of one (policy, key), as the model keeps them.
#[derive(Debug, Clone, Default)]
pub struct QuotaModel {
    /// By reporter id.
    pub shares: BTreeMap<u64, ModelShare>,
}

impl QuotaModel {
    /// The model's answer to a report (see `Quota::report`): `(per_period, max, expires_us)`.
    #[allow(clippy::too_many_arguments)] // the report's fields and the capacity's, spelled out
    pub fn report(
        &mut self,
        id: u64,
        requests: u64,
        elapsed_us: u64,
        now_us: u64,
        (limit, burst, period_us): (u64, u64, u64),
        ttl_us: u64,
        max_reporters: usize,
    ) -> (u64, u64, u64) {
        self.shares.retain(|_, share| share.expires_us > now_us);
        if !self.shares.contains_key(&id) && self.shares.len() >= max_reporters {
            return (0, 0, 0);
        }
        let demand = (u128::from(requests) * u128::from(period_us) / u128::from(elapsed_us.max(1)))
            .min(u128::from(limit)) as u64;
        let entry = self.shares.entry(id).or_insert(ModelShare {
            demand,
            per_period: 0,
            max: 0,
            expires_us: 0,
        });
        entry.demand = demand;

        // The fair division, one unit at a time.
        let pool = limit - limit / 8;
        let ids: Vec<u64> = self.shares.keys().copied().collect();
        let floor = pool / (4 * ids.len() as u64);
        let wants: Vec<u64> = ids
            .iter()
            .map(|i| self.shares[i].demand.max(floor))
            .collect();
        let mut alloc = vec![0u64; ids.len()];
        let mut given = 0;
        while given < pool {
            let next = (0..ids.len())
                .filter(|&k| alloc[k] < wants[k])
                .min_by_key(|&k| (alloc[k], k));
            match next {
                Some(k) => {
                    alloc[k] += 1;
                    given += 1;
                }
                None => break,
            }
        }
        // Every want met: the surplus, evenly, the remainder to the lowest ids.
        let surplus = pool - given;
        let n = ids.len() as u64;
        for (k, a) in alloc.iter_mut().enumerate() {
            *a += surplus / n + u64::from((k as u64) < surplus % n);
        }
        let me = ids.iter().position(|&i| i == id).unwrap_or(0);
        let target = alloc[me];

        // Granted: the target, less what the others hold now.
        let others_rate: u64 = self
            .shares
            .iter()
            .filter(|&(&i, _)| i != id)
            .map(|(_, s)| s.per_period)
            .sum();
        let others_burst: u64 = self
            .shares
            .iter()
            .filter(|&(&i, _)| i != id)
            .map(|(_, s)| s.max)
            .sum();
        let mut per_period = target.min(limit.saturating_sub(others_rate));
        let mut max = 0;
        if per_period > 0 {
            let proportional =
                (u128::from(burst) * u128::from(per_period) / u128::from(limit)) as u64;
            max = proportional.max(1).min(burst.saturating_sub(others_burst));
        }
        if max == 0 {
            per_period = 0;
        }
        let expires_us = now_us + ttl_us;
        self.shares.insert(
            id,
            ModelShare {
                demand,
                per_period,
                max,
                expires_us,
            },
        );
        (per_period, max, expires_us)
    }
}
