//! Time for the pipeline: the clock (wall and monotonic), and the index of timed blocks waiting
//! to expire.
//!
//! The policy core never reads a clock; the pipeline reads one here and passes `now` in. Tests
//! inject a [`ManualClock`]. The [`Timers`] index is rebuilt from local state whenever a
//! partition is assigned, so expiries that fell due while mailguard was down fire right after
//! the restore (SPEC §5: an unblock within 2 s of `blocked_until`, also across restarts).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::Millis;

/// The one source of time: the wall clock (processor time, epoch milliseconds) and a monotonic
/// clock (cadences and durations: the commit interval, the tick, rate limits of warnings).
///
/// Everything that reads time gets one injected; only [`SystemClock`] reads the system.
pub trait Clock: Send + Sync + 'static {
    /// Now, on the wall clock.
    fn now_ms(&self) -> Millis;
    /// Now, on the monotonic clock.
    fn monotonic(&self) -> Instant;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A wall clock that moves only when told to (tests, replay). Its monotonic side is the
/// system's unless built with [`ManualClock::frozen`]: a pipeline under a manual wall clock
/// still commits on its real-time cadence.
#[derive(Debug, Clone)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    /// Milliseconds after `base` of the monotonic clock, if it is manual too.
    mono: Option<Arc<AtomicU64>>,
    base: Instant,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(0)
    }
}

impl ManualClock {
    /// A wall clock at `at`; monotonic time is the system's.
    pub fn new(at: Millis) -> Self {
        ManualClock {
            wall: Arc::new(AtomicI64::new(at)),
            mono: None,
            base: Instant::now(),
        }
    }
    /// A clock at `at` whose monotonic side moves only with [`ManualClock::advance`] too.
    pub fn frozen(at: Millis) -> Self {
        ManualClock {
            mono: Some(Arc::default()),
            ..ManualClock::new(at)
        }
    }
    /// Move the wall clock to `at` (a jump: monotonic time does not move).
    pub fn set(&self, at: Millis) {
        self.wall.store(at, Ordering::SeqCst);
    }
    /// Move forward by `ms` (both clocks, when monotonic time is manual).
    pub fn advance(&self, ms: Millis) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        if let Some(mono) = &self.mono {
            mono.fetch_add(ms.max(0) as u64, Ordering::SeqCst);
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.wall.load(Ordering::SeqCst)
    }
    fn monotonic(&self) -> Instant {
        match &self.mono {
            Some(mono) => self.base + Duration::from_millis(mono.load(Ordering::SeqCst)),
            None => Instant::now(),
        }
    }
}

/// Deadlines of timed blocks, by (partition, mailbox); ordered for cheap "what is due" queries.
#[derive(Debug, Default)]
pub struct Timers {
    by_deadline: BTreeSet<(Millis, i32, String)>,
    by_key: HashMap<(i32, String), Millis>,
}

impl Timers {
    /// Empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set (or clear, with `None`) the deadline of a mailbox.
    pub fn set(&mut self, partition: i32, mailbox: &str, deadline: Option<Millis>) {
        let key = (partition, mailbox.to_string());
        if let Some(old) = self.by_key.remove(&key) {
            self.by_deadline.remove(&(old, partition, key.1.clone()));
        }
        if let Some(at) = deadline {
            self.by_deadline.insert((at, partition, key.1.clone()));
            self.by_key.insert(key, at);
        }
    }

    /// Remove and return every (partition, mailbox) whose deadline is `<= now`, earliest first.
    pub fn take_due(&mut self, now: Millis) -> Vec<(i32, String)> {
        let mut due = Vec::new();
        while let Some(first) = self.by_deadline.first() {
            if first.0 > now {
                break;
            }
            let (_, p, m) = self.by_deadline.pop_first().expect("checked non-empty");
            self.by_key.remove(&(p, m.clone()));
            due.push((p, m));
        }
        due
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|t| t.0)
    }

    /// Forget every timer of a partition (it was revoked).
    pub fn drop_partition(&mut self, partition: i32) {
        self.by_deadline.retain(|(_, p, _)| *p != partition);
        self.by_key.retain(|(p, _), _| *p != partition);
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_exactly_at_deadline_not_before() {
        let mut t = Timers::new();
        t.set(0, "a", Some(1_000));
        t.set(1, "b", Some(500));
        assert!(t.take_due(499).is_empty());
        assert_eq!(t.take_due(999), vec![(1, "b".to_string())]);
        assert_eq!(t.take_due(1_000), vec![(0, "a".to_string())]);
        assert!(t.is_empty());
    }

    #[test]
    fn reschedule_and_clear_and_drop_partition() {
        let mut t = Timers::new();
        t.set(0, "a", Some(1_000));
        t.set(0, "a", Some(2_000));
        assert_eq!(t.len(), 1);
        assert!(t.take_due(1_500).is_empty());
        t.set(0, "a", None);
        assert!(t.is_empty());
        t.set(0, "a", Some(1));
        t.set(1, "b", Some(1));
        t.drop_partition(0);
        assert_eq!(t.take_due(10), vec![(1, "b".to_string())]);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        assert_eq!(c.now_ms(), 5);
        c.advance(10);
        assert_eq!(c.now_ms(), 15);
        c.set(1);
        assert_eq!(c.now_ms(), 1);
    }

    #[test]
    fn a_frozen_clock_moves_its_monotonic_side_only_when_advanced() {
        let c = ManualClock::frozen(5);
        let t0 = c.monotonic();
        c.set(1_000_000);
        assert_eq!(c.monotonic(), t0, "a wall-clock jump is not elapsed time");
        c.advance(250);
        assert_eq!(c.monotonic() - t0, Duration::from_millis(250));
        assert_eq!(c.now_ms(), 1_000_250);
        let real = ManualClock::new(0);
        let before = Instant::now();
        assert!(real.monotonic() >= before, "monotonic time is the system's");
    }
}
