//! The operator's hand on a [`Limiter`]: blocks, allow and deny lists, penalties and rewards.

use std::net::IpAddr;
use std::time::Duration;

use floodwall_core::{Decision, Policy};
use smallvec::SmallVec;

use super::Limiter;
use crate::controls::{Block, ControlError, List, ListEntry, Listed, Screen};
use crate::error::{Error, StoreError};
use crate::store::Check;
use crate::store::{Answer, Source};
use crate::verdict::Verdict;

/// A decision made without the store: `allowed`, with `wait` when denied for a while.
fn unconsulted(policy: &Policy, allowed: bool, wait: Option<Duration>) -> Decision {
    let capacity = policy.capacity();
    Decision {
        allowed,
        capacity,
        remaining: if allowed { capacity } else { 0 },
        reset_after: wait.unwrap_or_default(),
        retry_after: wait,
        debt: 0,
    }
}

impl Limiter {
    /// `check` decided after the operator controls: a deny-listed or blocked check is refused
    /// without asking the store, and allow-listed pairs are left out of what the store decides.
    pub(super) async fn screened(&self, check: &Check<'_>) -> Result<Answer, Error> {
        let controls = &self.shared.controls;
        if !controls.active() {
            return self.ask_store(check).await;
        }
        let pairs = check
            .pairs()
            .iter()
            .map(|(policy, key)| (policy.name(), *key));
        let decided_here = |source, decide: &dyn Fn(usize, &Policy) -> Decision| {
            let decisions: SmallVec<[Decision; 2]> = check
                .pairs()
                .iter()
                .enumerate()
                .map(|(index, (policy, _))| decide(index, policy))
                .collect();
            Answer {
                allowed: decisions.iter().all(|d| d.allowed),
                decisions,
                source,
            }
        };
        match controls.screen(pairs) {
            Screen::Pass => self.ask_store(check).await,
            Screen::Deny => Ok(decided_here(Source::DenyList, &|_, policy| {
                unconsulted(policy, false, None)
            })),
            // The pairs not blocked are not consulted: they report their full capacity.
            Screen::Blocked(waits) => Ok(decided_here(Source::Blocked, &|index, policy| {
                let wait = waits[index];
                unconsulted(policy, wait.is_none(), wait)
            })),
            Screen::Allow(listed) => {
                let rest = check
                    .pairs()
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| !listed[*index])
                    .map(|(index, (policy, key))| (*policy, *key, check.cost_of(index)));
                let rest = Check::weighted(rest)?.held_by(check.holder());
                if rest.is_empty() {
                    return Ok(decided_here(Source::AllowList, &|_, policy| {
                        unconsulted(policy, true, None)
                    }));
                }
                let answer = self.ask_store(&rest).await?;
                let mut decided = answer.decisions.into_iter();
                let decisions = check
                    .pairs()
                    .iter()
                    .zip(&listed)
                    .map(|((policy, _), listed)| {
                        match listed {
                            false => decided.next(),
                            true => None,
                        }
                        .unwrap_or_else(|| unconsulted(policy, true, None))
                    })
                    .collect();
                Ok(Answer {
                    allowed: answer.allowed,
                    decisions,
                    source: answer.source,
                })
            }
        }
    }

    /// Blocks `key` under `policy` for `duration`: until then every check of that pair is denied
    /// ([`Source::Blocked`]) with the rest of the block as its `retry_after`, on every instance
    /// sharing the store (at once on this one, within a [`Limiter::sync_controls`] interval on
    /// the others). Blocking again replaces the end. `by` names who did it.
    ///
    /// # Errors
    ///
    /// [`ControlError`] when the key is too long, too many controls are in force, the duration
    /// is zero, or the store could not record it (then nothing changed).
    pub async fn block(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        duration: Duration,
        by: &str,
    ) -> Result<Block, ControlError> {
        let controls = &self.shared.controls;
        controls
            .block(
                &self.shared.store,
                policy.name(),
                key.as_ref(),
                duration,
                by,
            )
            .await
    }

    /// Ends a block early; whether one was in force.
    ///
    /// # Errors
    ///
    /// [`ControlError::Store`] when the store could not record it.
    pub async fn unblock(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
    ) -> Result<bool, ControlError> {
        let controls = &self.shared.controls;
        controls
            .unblock(&self.shared.store, policy.name(), key.as_ref())
            .await
    }

    /// The blocks in force, soonest to end first.
    pub fn blocks(&self) -> Vec<Block> {
        self.shared.controls.blocks()
    }

    /// Puts `entry` on `list` for every instance sharing the store. An allow-listed key is
    /// admitted without counting under every policy; a deny-listed one is refused under every
    /// policy ([`Source::DenyList`]). Deny wins over allow, and allow over a block. `by` names
    /// who did it.
    ///
    /// # Errors
    ///
    /// As [`Limiter::block`].
    pub async fn list(
        &self,
        list: List,
        entry: ListEntry,
        by: &str,
    ) -> Result<Listed, ControlError> {
        let controls = &self.shared.controls;
        controls.list(&self.shared.store, list, entry, by).await
    }

    /// Takes `entry` off `list`; whether it was on it.
    ///
    /// # Errors
    ///
    /// [`ControlError::FromConfig`] for an entry of the configuration (see
    /// [`Limiter::configure_lists`]); [`ControlError::Store`] when the store could not record it.
    pub async fn unlist(&self, list: List, entry: &ListEntry) -> Result<bool, ControlError> {
        let controls = &self.shared.controls;
        controls.unlist(&self.shared.store, list, entry).await
    }

    /// Every list entry: the configured ones and those made at run time.
    pub fn lists(&self) -> Vec<Listed> {
        self.shared.controls.entries()
    }

    /// Replaces the configured list entries (a configuration file's, at start and at each
    /// reload): they are this instance's own, are not written to the store, and cannot be taken
    /// off at run time. Entries made at run time stay.
    pub fn configure_lists(&self, entries: Vec<(List, ListEntry)>) {
        self.shared.controls.configure(entries);
    }

    /// Loads the blocks and list entries other instances made or removed since the last call,
    /// and drops ended blocks from the store. Call it every second or so (the service does);
    /// a memory store shares nothing, so it returns at once.
    ///
    /// # Errors
    ///
    /// The store's, when it could not be read: the controls already loaded stay in force.
    pub async fn sync_controls(&self) -> Result<(), StoreError> {
        self.shared.controls.sync(&self.shared.store).await
    }

    /// A task body that calls [`Limiter::sync_controls`] every `every` for as long as any clone
    /// of this limiter lives, then ends; spawn it on a runtime. It holds no clone itself. A
    /// failed load keeps the controls already loaded and is tried again at the next tick.
    pub fn keep_controls_synced(
        &self,
        every: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let shared = std::sync::Arc::downgrade(&self.shared);
        async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if let Err(error) = shared.controls.sync(&shared.store).await {
                    // Seen again at the next tick; the store's outage is reported elsewhere.
                    let _ = error;
                }
            }
        }
    }

    /// Which list, if any, holds the client address `address` (deny first). For callers that
    /// know the client's address beside its key, such as an HTTP layer keyed by a header.
    pub fn screen_client(&self, address: IpAddr) -> Option<List> {
        self.shared.controls.screen_address(address)
    }

    /// Consumes up to `units` of `key` under `policy` now, or all that is left when fewer are:
    /// an operator's penalty. Controls and offender counts are left alone. The verdict is of the
    /// last consumption (allowed when something was taken).
    ///
    /// # Errors
    ///
    /// As [`Limiter::check`].
    pub async fn penalise(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        units: u64,
    ) -> Result<Verdict, Error> {
        let key = key.as_ref();
        let mut units = units.clamp(1, policy.capacity().max(1));
        // Each round takes what the last denial said was left, so a few rounds pin it down even
        // while others consume.
        for _ in 0..4 {
            let check = Check::new(std::slice::from_ref(policy), key, units)?;
            let verdict = Verdict::of(&check, self.ask_store(&check).await?);
            let left = verdict.decision().map_or(0, |d| d.remaining);
            if verdict.allowed() || left == 0 || left >= units {
                return Ok(verdict);
            }
            units = left;
        }
        let check = Check::new(std::slice::from_ref(policy), key, units)?;
        Ok(Verdict::of(&check, self.ask_store(&check).await?))
    }

    /// Gives back up to `units` of `key` under `policy`, never past its full quota: an
    /// operator's reward ([`Limiter::refund`] of at most the policy's capacity).
    ///
    /// # Errors
    ///
    /// As [`Limiter::refund`].
    pub async fn reward(
        &self,
        policy: &Policy,
        key: impl AsRef<[u8]>,
        units: u64,
    ) -> Result<Verdict, Error> {
        let units = units.clamp(1, policy.capacity().max(1));
        self.refund(policy, key, units).await
    }
}
