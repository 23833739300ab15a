//! What each connection is doing, for its watchdog and for the listener that sheds the one
//! waiting longest.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::ConnectionLimits;

/// The open connections of one listener, for closing the one that has waited longest.
#[derive(Debug)]
pub(super) struct OpenConnections {
    by_id: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// The origin of every connection's times, so that they compare.
    epoch: Instant,
}

impl Default for OpenConnections {
    fn default() -> Self {
        OpenConnections {
            by_id: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl OpenConnections {
    pub(super) fn register(self: &Arc<Self>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(self.epoch));
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&activity));
        Registered {
            open: Arc::clone(self),
            id,
            activity,
        }
    }

    /// Closes the connection that has waited longest with no request in flight, if any.
    pub(super) fn shed_longest_waiting(&self) {
        let by_id = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let longest = by_id
            .values()
            .filter(|activity| {
                activity.in_flight.load(Ordering::Acquire) == 0
                    && !activity.shed.load(Ordering::Acquire)
            })
            .min_by_key(|activity| activity.waiting_since.load(Ordering::Acquire));
        if let Some(activity) = longest {
            activity.shed();
        }
    }
}

/// A connection's place in [`OpenConnections`], given up when the connection ends.
#[derive(Debug)]
pub(super) struct Registered {
    open: Arc<OpenConnections>,
    id: u64,
    pub(super) activity: Arc<Activity>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open
            .by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// What a connection is doing, shared by its socket, its requests and its watchdog.
#[derive(Debug)]
pub(super) struct Activity {
    /// Requests whose response has not been sent (or dropped) yet.
    pub(super) in_flight: AtomicUsize,
    /// When the current wait for a request began, in microseconds since `epoch`.
    waiting_since: AtomicU64,
    /// Whether the header deadline applies: bytes of the next request have arrived since the
    /// wait began, or the connection has not had a request yet.
    head_started: AtomicBool,
    /// Whether bytes of the next request have arrived since the wait began.
    received: AtomicBool,
    /// Set to close the connection at once.
    shed: AtomicBool,
    /// Wakes the watchdog when the connection is shed.
    shed_now: Notify,
    epoch: Instant,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            waiting_since: AtomicU64::new(micros_since(epoch)),
            // A new connection owes its first request's headers from the start.
            head_started: AtomicBool::new(true),
            received: AtomicBool::new(false),
            shed: AtomicBool::new(false),
            shed_now: Notify::new(),
            epoch,
        }
    }

    /// When the connection must close if nothing changes; `None` while a request is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_micros(self.waiting_since.load(Ordering::Acquire));
        let allowed = if self.head_started.load(Ordering::Acquire) {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        Some(self.epoch + since + allowed)
    }

    /// Completes when the connection must close: shed, or its phase outlasted its deadline.
    ///
    /// Requests starting and ending do not wake it (that would cost every request a task
    /// wake-up): it looks again at least every `header_timeout`, and the phase's clock starts
    /// when the phase did, so a deadline is met exactly however late it looks.
    pub(super) async fn expired(&self, limits: &ConnectionLimits) {
        let recheck = limits.header_timeout.min(limits.idle_timeout);
        loop {
            let mut shed = pin!(self.shed_now.notified());
            // Registered before the flag is read, so that a shed in between is not missed.
            shed.as_mut().enable();
            if self.shed.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            let wake = match self.deadline(limits) {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => deadline.min(now + recheck),
                None => now + recheck,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = shed => return,
            }
        }
    }

    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(false, Ordering::Release);
        self.received.store(false, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// Bytes were read: with no request in flight they begin the next one, whose headers are
    /// owed within `header_timeout` from now.
    pub(super) fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        self.received.store(true, Ordering::Release);
        if !self.head_started.swap(true, Ordering::AcqRel) {
            self.waiting_since
                .store(micros_since(self.epoch), Ordering::Release);
        }
    }

    /// Whether the connection is idle: no request in flight, and no byte of a next one.
    pub(super) fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.received.load(Ordering::Acquire)
    }

    /// Closes the connection at once.
    fn shed(&self) {
        self.shed.store(true, Ordering::Release);
        self.shed_now.notify_one();
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One request in flight; dropped when its response has been sent or abandoned.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .waiting_since
                .store(micros_since(activity.epoch), Ordering::Release);
        }
    }
}
