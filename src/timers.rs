//! Wall-clock time for the pipeline: the clock, and the index of timed blocks waiting to expire.
//!
//! The policy core never reads a clock; the pipeline reads one here and passes `now` in. Tests
//! inject a [`ManualClock`]. The [`Timers`] index is rebuilt from local state whenever a
//! partition is assigned, so expiries that fell due while mailguard was down fire right after
//! the restore (SPEC §5: an unblock within 2 s of `blocked_until`, also across restarts).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::policy::Millis;

/// A source of wall-clock time in epoch milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> Millis;
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
}

/// A clock that moves only when told to (tests, replay).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `at`.
    pub fn new(at: Millis) -> Self {
        ManualClock(Arc::new(AtomicI64::new(at)))
    }
    /// Move to `at`.
    pub fn set(&self, at: Millis) {
        self.0.store(at, Ordering::SeqCst);
    }
    /// Move forward by `ms`.
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
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
}
