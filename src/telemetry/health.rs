//! Liveness and readiness, shared by the pipeline and `/healthz` `/readyz`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::timers::{Clock, SystemClock};

/// Liveness and readiness, shared by the pipeline and `/healthz` `/readyz`.
///
/// Liveness has two parts: the pipeline did not stop with an error, and, while a session runs,
/// its loop keeps turning. The second is a watchdog for the states nobody foresaw: a client that
/// is alive but will never deliver another record must not look healthy, or the orchestrator
/// never restarts it. The loop's turns are timed on the monotonic side of the clock.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    /// Milliseconds after `epoch` of the session loop's last turn; 0 while no session runs.
    beat: Arc<AtomicU64>,
    clock: Arc<dyn Clock>,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health::with_clock(Arc::new(SystemClock))
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .field("beat", &self.beat.load(Ordering::Relaxed))
            .finish()
    }
}

/// Longest a running session's loop may go without a turn and still count as alive: longer than
/// the longest restore inside a rebalance (300 s) plus a commit (30 s).
pub const STALL_LIMIT: Duration = Duration::from_secs(360);

impl Health {
    /// Health on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Health {
            ready: Arc::default(),
            failed: Arc::default(),
            beat: Arc::default(),
            epoch: clock.monotonic(),
            clock,
        }
    }

    /// Milliseconds since `epoch`, plus one (0 means "no session").
    fn now(&self) -> u64 {
        let since = self.clock.monotonic().saturating_duration_since(self.epoch);
        since.as_millis() as u64 + 1
    }

    /// The session loop turned (once per burst of records or tick).
    pub fn beat(&self) {
        self.beat.store(self.now(), Ordering::Relaxed);
    }

    /// No session is running (between sessions, at shutdown): the watchdog rests.
    pub fn rest(&self) {
        self.beat.store(0, Ordering::Relaxed);
    }

    /// How long the running session's loop has gone without a turn, if longer than `limit`.
    pub fn stalled(&self, limit: Duration) -> Option<Duration> {
        let beat = self.beat.load(Ordering::Relaxed);
        if beat == 0 {
            return None;
        }
        let since = Duration::from_millis(self.now().saturating_sub(beat));
        (since > limit).then_some(since)
    }

    /// Tables loaded and owned partitions restored: processing.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// Whether the pipeline is processing.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// The pipeline stopped with an error it could not recover from.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
    }
    /// Whether the process is alive and well: not failed, and not stalled for [`STALL_LIMIT`].
    pub fn is_live(&self) -> bool {
        !self.failed.load(Ordering::Relaxed) && self.stalled(STALL_LIMIT).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_session_loop_is_not_live() {
        let h = Health::default();
        assert!(h.is_live());
        assert_eq!(
            h.stalled(Duration::ZERO),
            None,
            "no session: the watchdog rests"
        );
        h.beat();
        assert_eq!(h.stalled(Duration::from_secs(1)), None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            h.stalled(Duration::from_millis(1)).is_some(),
            "5 ms without a turn"
        );
        h.rest();
        assert_eq!(h.stalled(Duration::ZERO), None);
        h.set_failed();
        assert!(!h.is_live());
    }

    #[test]
    fn the_manual_clock_drives_the_stall_watchdog() {
        let clock = crate::timers::ManualClock::frozen(0);
        let h = Health::with_clock(Arc::new(clock.clone()));
        h.beat();
        clock.advance(STALL_LIMIT.as_millis() as i64);
        assert!(h.is_live(), "exactly at the limit");
        clock.advance(1);
        assert_eq!(
            h.stalled(STALL_LIMIT),
            Some(STALL_LIMIT + Duration::from_millis(1))
        );
        assert!(!h.is_live());
        h.beat();
        assert!(h.is_live(), "a turn revives it");
    }
}
