//! `floodwall.Limiter`: decisions on a store, each method also as an awaitable.

use std::sync::Arc;
use std::time::Duration;

use floodwall::gate::{Gate, Passing};
use floodwall::{Charge, Check, Limiter, MemoryStore, Policy, RedisConfig, Storage, StorageConfig};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};

use crate::clock::PyManualClock;
use crate::completions::{Completions, Delivery, HeldUnits};
use crate::decision::{PyDecision, PyVerdict};
use crate::errors::{self, ConfigError};
use crate::policy::{PyPolicy, on_error_of};
use crate::reservation::PyReservation;
use crate::runtime;
use crate::runtime::Work;

/// A client key: text (encoded as UTF-8) or bytes.
#[derive(Debug, FromPyObject)]
pub(crate) enum Key {
    Text(PyBackedStr),
    Bytes(PyBackedBytes),
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        match self {
            Key::Text(text) => text.as_bytes(),
            Key::Bytes(bytes) => bytes,
        }
    }
}

/// Decides "may `key` spend `cost` units now?" against a store shared by every limiter on it.
#[pyclass(frozen, subclass, name = "Limiter", module = "floodwall")]
#[derive(Debug)]
pub(crate) struct PyLimiter {
    limiter: Limiter,
    /// Python's passage through the limiter: every decision goes through it.
    gate: Gate,
    /// Whether the store is the memory store, which answers without waiting: its checks are
    /// polled once in place, with no runtime and the GIL kept.
    in_memory: bool,
    storage: String,
}

#[pymethods]
impl PyLimiter {
    /// `storage` is "memory://" (in process, the default), "redis://host:port/db",
    /// "rediss://…", "redis+cluster://h1:p1,h2:p2" or
    /// "redis+sentinel://s1:26379,s2:26379/MASTER_NAME/db". `on_error` ("allow", "deny" or "local")
    /// answers a store failure, unless a policy says otherwise; `timeout` (seconds) bounds
    /// each Redis decision; `prefix` starts every Redis key; `wait_replicas` has each Redis
    /// decision answered only once that many replicas confirm it (a failover then loses no
    /// admitted unit); `max_keys` bounds the memory store.
    #[new]
    #[pyo3(signature = (storage = "memory://", *, on_error = "allow", timeout = None, prefix = None, max_keys = None, clock = None, wait_replicas = None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, each optional
    fn new(
        py: Python<'_>,
        storage: &str,
        on_error: &str,
        timeout: Option<f64>,
        prefix: Option<String>,
        max_keys: Option<usize>,
        clock: Option<PyRef<'_, PyManualClock>>,
        wait_replicas: Option<u32>,
    ) -> PyResult<Self> {
        let on_error = on_error_of(on_error)?;
        let clock = clock.map(|c| c.inner.clone());
        let config = StorageConfig::from_url(storage).map_err(errors::config)?;
        let store = match config {
            StorageConfig::Memory { max_keys: default } => {
                if timeout.is_some() || prefix.is_some() || wait_replicas.is_some() {
                    return Err(ConfigError::new_err(
                        "timeout, prefix and wait_replicas are options of a Redis store; memory:// takes max_keys",
                    ));
                }
                let mut builder = MemoryStore::builder().max_keys(max_keys.unwrap_or(default));
                if let Some(clock) = clock {
                    builder = builder.clock(clock);
                }
                Storage::Memory(builder.build())
            }
            StorageConfig::Redis(_) => {
                if max_keys.is_some() {
                    return Err(ConfigError::new_err(
                        "max_keys bounds the memory store; a Redis store takes timeout and prefix",
                    ));
                }
                let mut config = RedisConfig::new(storage);
                if let Some(timeout) = timeout {
                    config = config.timeout(seconds(timeout, "timeout")?);
                }
                if let Some(prefix) = prefix {
                    config = config.prefix(prefix);
                }
                if let Some(clock) = clock {
                    config = config.clock(clock);
                }
                if let Some(replicas) = wait_replicas {
                    config = config.wait_replicas(replicas);
                }
                let config = StorageConfig::Redis(config);
                config.validate().map_err(errors::config)?;
                runtime::block_on(py, Storage::connect(config)).map_err(|error| match error {
                    // Refused on what it found (a master name no sentinel monitors): a mistake
                    // in the URL, not an outage.
                    floodwall::StoreError::Config { .. } => errors::config(error),
                    _ => errors::StoreUnavailable::new_err(format!(
                        "cannot reach {}: {error}",
                        floodwall::redis::RedisConfig::new(storage).redacted_url()
                    )),
                })?
            }
            _ => {
                return Err(ConfigError::new_err(format!(
                    "unsupported storage {storage:?}"
                )));
            }
        };
        let in_memory = matches!(store, Storage::Memory(_));
        let shared = matches!(store, Storage::Redis(_));
        let limiter = Limiter::builder(store).on_error(on_error).build();
        // Blocks and lists made through a floodwall service's admin API arrive within a second.
        if shared {
            runtime::spawn_background(limiter.keep_controls_synced(Duration::from_secs(1)));
        }
        Ok(PyLimiter {
            gate: Gate::new(limiter.clone(), floodwall::gate::Front::Python),
            limiter,
            in_memory,
            storage: storage.to_owned(),
        })
    }

    /// The storage URL this limiter was built on.
    #[getter]
    fn storage(&self) -> &str {
        &self.storage
    }

    /// Decides a request of `cost` units for `key` under `policy`, consuming if allowed.
    #[pyo3(signature = (policy, key, cost = 1))]
    fn check(
        &self,
        py: Python<'_>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
    ) -> PyResult<PyDecision> {
        let policies = std::slice::from_ref(&policy.inner);
        let verdict = self.run(
            py,
            decide(&self.gate, Check::new(policies, key.as_ref(), cost)),
        )?;
        Ok(PyDecision::of(&policy.inner, &verdict))
    }

    /// Decides a request under several policies at once, all-or-nothing.
    #[pyo3(signature = (policies, key, cost = 1))]
    fn check_all(
        &self,
        py: Python<'_>,
        policies: Vec<PyRef<'_, PyPolicy>>,
        key: Key,
        cost: u64,
    ) -> PyResult<PyVerdict> {
        let policies = owned(&policies);
        let verdict = self.run(
            py,
            decide(&self.gate, Check::new(&policies, key.as_ref(), cost)),
        )?;
        Ok(PyVerdict { verdict })
    }

    /// Whether one more unit would be allowed for `key`, consuming nothing.
    fn peek(&self, py: Python<'_>, policy: &PyPolicy, key: Key) -> PyResult<PyDecision> {
        self.check(py, policy, key, 0)
    }

    /// Gives back `cost` units that were consumed, never past a full quota.
    #[pyo3(signature = (policy, key, cost = 1))]
    fn refund(
        &self,
        py: Python<'_>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
    ) -> PyResult<PyDecision> {
        let verdict = self.run(py, self.limiter.refund(&policy.inner, &key, cost))?;
        Ok(PyDecision::of(&policy.inner, &verdict))
    }

    /// Charges `cost` units whatever is left (a cost known only after the answer): past zero
    /// the key owes the rest, up to the policy's `max_debt`. Never denied.
    fn debit(
        &self,
        py: Python<'_>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
    ) -> PyResult<PyDecision> {
        let verdict = self.run(py, self.limiter.debit(&policy.inner, &key, cost))?;
        Ok(PyDecision::of(&policy.inner, &verdict))
    }

    /// Admits a request on an `estimate` of its cost under every one of `policies`,
    /// all-or-nothing; settle the reservation at the actual cost once known.
    fn reserve(
        &self,
        py: Python<'_>,
        policies: Vec<PyRef<'_, PyPolicy>>,
        key: Key,
        estimate: u64,
    ) -> PyResult<PyReservation> {
        let policies = owned(&policies);
        let reservation = self.run(py, self.limiter.reserve(&policies, key.as_ref(), estimate))?;
        PyReservation::new(py, reservation)
    }

    /// Decides several (policy, key, cost) items at once, all-or-nothing: allowed only if every
    /// enforced policy allows its own item, and then each allowing item consumes its cost.
    fn check_weighted(&self, py: Python<'_>, items: Vec<Item<'_>>) -> PyResult<PyVerdict> {
        let (policies, keys, costs) = split(&items);
        let pairs = weighted(&policies, &keys, &costs);
        let check = Check::weighted(pairs.iter().copied());
        let verdict = self.run(py, decide(&self.gate, check))?;
        Ok(PyVerdict { verdict })
    }

    /// Gives back what a [`check_weighted`] of the same items consumed, never past a full quota.
    fn refund_weighted(&self, py: Python<'_>, items: Vec<Item<'_>>) -> PyResult<()> {
        let (policies, keys, costs) = split(&items);
        let pairs = weighted(&policies, &keys, &costs);
        self.run(
            py,
            give_back(&self.limiter, Check::weighted(pairs.iter().copied())),
        )?;
        Ok(())
    }

    /// Charges several (policy, key, cost) items whatever is left (past zero the key owes it, up
    /// to each policy's `max_debt`), in one call; never denied.
    fn debit_weighted(&self, py: Python<'_>, items: Vec<Item<'_>>) -> PyResult<()> {
        let (policies, keys, costs) = split(&items);
        let pairs = weighted(&policies, &keys, &costs);
        self.run(py, charge(&self.limiter, Charge::each(pairs)))?;
        Ok(())
    }

    /// Forgets `key`'s state under `policy`: its next request starts with a full quota.
    fn reset(&self, py: Python<'_>, policy: &PyPolicy, key: Key) -> PyResult<()> {
        self.run(py, self.limiter.reset(&policy.inner, &key))
    }

    /// Waits until a request of `cost` is allowed, or until `timeout` seconds have passed
    /// (None: as long as it takes), and returns the last decision either way. The GIL is
    /// released while it waits.
    #[pyo3(signature = (policy, key, cost = 1, timeout = None))]
    fn acquire(
        &self,
        py: Python<'_>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
        timeout: Option<f64>,
    ) -> PyResult<PyDecision> {
        let max_wait = max_wait(timeout)?;
        let verdict = runtime::block_on(
            py,
            self.limiter.acquire(&policy.inner, &key, cost, max_wait),
        )
        .map_err(errors::from_limiter)?;
        Ok(PyDecision::of(&policy.inner, &verdict))
    }

    /// Admits a request of `cost` under `policy` and keeps what a `concurrency` policy holds
    /// past this call: returns the decision and the holder to release it by (`None` when
    /// nothing is held: denied, or admitted without counting). `Limiter.lease` wraps it.
    fn _hold(
        &self,
        py: Python<'_>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
    ) -> PyResult<(PyDecision, Option<u128>)> {
        let policies = std::slice::from_ref(&policy.inner);
        let (verdict, guard) = self.run(
            py,
            hold(&self.gate, Check::new(policies, key.as_ref(), cost)),
        )?;
        let holder = guard.map(HeldUnits::new).and_then(HeldUnits::keep);
        Ok((PyDecision::of(&policy.inner, &verdict), holder))
    }

    /// Gives back what `holder` holds of `key` under `policy`, admitted with `cost`.
    fn _release(
        &self,
        py: Python<'_>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
        holder: u128,
    ) -> PyResult<()> {
        let policies = std::slice::from_ref(&policy.inner);
        let check = Check::new(policies, key.as_ref(), cost);
        self.run(py, release(&self.limiter, check, holder))
    }

    /// Calls of asyncio callers cancelled before their answer (the `python` front of
    /// `floodwall_abandoned_total`). What such a call took is given back.
    #[getter]
    fn abandoned(&self) -> u64 {
        self.limiter
            .stats()
            .abandoned
            .get(floodwall::gate::Front::Python)
    }

    /// Whether the store is the memory store, whose calls never wait.
    #[getter]
    fn in_memory(&self) -> bool {
        self.in_memory
    }

    // The background twins of the methods above, for the coroutines of the Python layer: each
    // resolves `future` through `completions`, its event loop's queue.

    fn _spawn_check(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
    ) -> Work {
        let (gate, policy) = (self.gate.clone(), policy.inner.clone());
        runtime::spawn(completions, future, self.by_the_gate(), async move {
            let policies = std::slice::from_ref(&policy);
            let verdict = decide(&gate, Check::new(policies, key.as_ref(), cost)).await?;
            Ok(Delivery::Decision(PyDecision::of(&policy, &verdict)))
        })
    }

    fn _spawn_check_all(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        policies: Vec<PyRef<'_, PyPolicy>>,
        key: Key,
        cost: u64,
    ) -> Work {
        let (gate, policies) = (self.gate.clone(), owned(&policies));
        runtime::spawn(completions, future, self.by_the_gate(), async move {
            let verdict = decide(&gate, Check::new(&policies, key.as_ref(), cost)).await?;
            Ok(Delivery::Verdict(Box::new(PyVerdict { verdict })))
        })
    }

    fn _spawn_check_weighted(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        items: Vec<Item<'_>>,
    ) -> Work {
        let gate = self.gate.clone();
        let (policies, keys, costs) = split(&items);
        runtime::spawn(completions, future, self.by_the_gate(), async move {
            let pairs = weighted(&policies, &keys, &costs);
            let verdict = decide(&gate, Check::weighted(pairs.iter().copied())).await?;
            Ok(Delivery::Verdict(Box::new(PyVerdict { verdict })))
        })
    }

    fn _spawn_refund(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
    ) -> Work {
        let (limiter, policy) = (self.limiter.clone(), policy.inner.clone());
        runtime::spawn(completions, future, self.caller(), async move {
            let verdict = limiter.refund(&policy, &key, cost).await?;
            Ok(Delivery::Decision(PyDecision::of(&policy, &verdict)))
        })
    }

    fn _spawn_refund_weighted(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        items: Vec<Item<'_>>,
    ) -> Work {
        let limiter = self.limiter.clone();
        let (policies, keys, costs) = split(&items);
        runtime::spawn(completions, future, self.caller(), async move {
            let pairs = weighted(&policies, &keys, &costs);
            give_back(&limiter, Check::weighted(pairs.iter().copied())).await?;
            Ok(Delivery::Done)
        })
    }

    fn _spawn_reset(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        policy: &PyPolicy,
        key: Key,
    ) -> Work {
        let (limiter, policy) = (self.limiter.clone(), policy.inner.clone());
        runtime::spawn(completions, future, self.caller(), async move {
            limiter.reset(&policy, &key).await?;
            Ok(Delivery::Done)
        })
    }

    fn _spawn_hold(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
    ) -> Work {
        let (gate, policy) = (self.gate.clone(), policy.inner.clone());
        runtime::spawn(completions, future, self.by_the_gate(), async move {
            let policies = std::slice::from_ref(&policy);
            let (verdict, guard) = hold(&gate, Check::new(policies, key.as_ref(), cost)).await?;
            Ok(Delivery::Held(
                PyDecision::of(&policy, &verdict),
                guard.map(HeldUnits::new),
            ))
        })
    }

    fn _spawn_release(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
        holder: u128,
    ) -> Work {
        let (limiter, policy) = (self.limiter.clone(), policy.inner.clone());
        runtime::spawn(completions, future, self.caller(), async move {
            let policies = std::slice::from_ref(&policy);
            release(&limiter, Check::new(policies, key.as_ref(), cost), holder).await?;
            Ok(Delivery::Done)
        })
    }

    #[pyo3(signature = (completions, future, policy, key, cost, timeout))]
    fn _spawn_acquire(
        &self,
        completions: Py<Completions>,
        future: Py<PyAny>,
        policy: &PyPolicy,
        key: Key,
        cost: u64,
        timeout: Option<f64>,
    ) -> PyResult<Work> {
        let max_wait = max_wait(timeout)?;
        let (limiter, policy) = (self.limiter.clone(), policy.inner.clone());
        Ok(runtime::spawn(
            completions,
            future,
            self.caller(),
            async move {
                let verdict = limiter.acquire(&policy, &key, cost, max_wait).await?;
                Ok(Delivery::Decision(PyDecision::of(&policy, &verdict)))
            },
        ))
    }

    fn __repr__(&self) -> String {
        format!("Limiter({:?})", self.storage)
    }
}

impl PyLimiter {
    /// A call of an asyncio caller, counted as abandoned if it is cancelled before its answer.
    fn caller(&self) -> runtime::Counting {
        runtime::Counting::Caller(self.limiter.caller(floodwall::gate::Front::Python))
    }

    /// A call of an asyncio caller through the gate, which counts it while it decides.
    fn by_the_gate(&self) -> runtime::Counting {
        runtime::Counting::ByTheGate(self.limiter.clone())
    }

    /// Runs a decision: at once in memory, on the runtime with the GIL released on Redis.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        future: impl Future<Output = Result<T, floodwall::Error>> + Send,
    ) -> PyResult<T> {
        let result = if self.in_memory {
            runtime::now_or_block(py, future)
        } else {
            runtime::block_on(py, future)
        };
        result.map_err(errors::from_limiter)
    }
}

/// `check` decided through `gate`: the verdict, or why there is none.
async fn decide(
    gate: &Gate,
    check: Result<Check<'_>, floodwall::CheckError>,
) -> Result<floodwall::Verdict, floodwall::Error> {
    gate.pass(check, Passing::default()).await.into_outcome()
}

/// `check` decided through `gate`, holding what its `concurrency` policies admit: the verdict
/// and the guard of the units held, if any.
async fn hold(
    gate: &Gate,
    check: Result<Check<'_>, floodwall::CheckError>,
) -> Result<(floodwall::Verdict, Option<floodwall::LeaseGuard>), floodwall::Error> {
    let passing = Passing {
        hold: true,
        ..Passing::default()
    };
    let mut passage = gate.pass(check, passing).await;
    let guard = passage.take_held();
    Ok((passage.into_outcome()?, guard))
}

/// Gives back what `check` consumed.
async fn give_back(
    limiter: &Limiter,
    check: Result<Check<'_>, floodwall::CheckError>,
) -> Result<floodwall::Verdict, floodwall::Error> {
    limiter.give_back(&check?).await
}

/// Charges `charge` whatever is left.
async fn charge(
    limiter: &Limiter,
    charge: Result<Charge<'_>, floodwall::CheckError>,
) -> Result<floodwall::Verdict, floodwall::Error> {
    limiter.charge(&charge?).await
}

/// Gives back what `holder` holds under `check`.
async fn release(
    limiter: &Limiter,
    check: Result<Check<'_>, floodwall::CheckError>,
    holder: u128,
) -> Result<(), floodwall::Error> {
    let check = check?.held_by(floodwall::Holder(holder));
    limiter.release(&check).await
}

/// One (policy, key, cost) item of a weighted check.
type Item<'py> = (PyRef<'py, PyPolicy>, Key, u64);

/// The items' policies, keys and costs, owned, so that an async call can keep them.
fn split(items: &[Item<'_>]) -> (Arc<[Policy]>, Vec<Vec<u8>>, Vec<u64>) {
    let policies = items.iter().map(|(p, _, _)| p.inner.clone()).collect();
    let keys = items.iter().map(|(_, k, _)| k.as_ref().to_vec()).collect();
    let costs = items.iter().map(|(_, _, c)| *c).collect();
    (policies, keys, costs)
}

fn weighted<'a>(
    policies: &'a [Policy],
    keys: &'a [Vec<u8>],
    costs: &[u64],
) -> Vec<(&'a Policy, &'a [u8], u64)> {
    policies
        .iter()
        .zip(keys)
        .zip(costs)
        .map(|((policy, key), cost)| (policy, key.as_slice(), *cost))
        .collect()
}

fn owned(policies: &[PyRef<'_, PyPolicy>]) -> Arc<[Policy]> {
    policies.iter().map(|p| p.inner.clone()).collect()
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!("{what} must be a finite number of seconds >= 0"))
    })
}

/// None waits as long as it takes: a century stands for that, as no timer is longer.
fn max_wait(timeout: Option<f64>) -> PyResult<Duration> {
    match timeout {
        Some(timeout) => seconds(timeout, "timeout"),
        None => Ok(Duration::from_secs(100 * 365 * 86_400)),
    }
}
