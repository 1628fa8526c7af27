//! The exact sliding window in event time, with its de-duplication memory and lateness bound.
//!
//! Entries are the counted offending messages (`sent_at`, `message_id`), kept sorted by `sent_at`
//! (ties in arrival order). No buckets, no approximation: a trip is decided on the exact times.
//!
//! Bounded size: after every insert, entries with `sent_at < newest − lateness − window` are
//! pruned. They can never be part of a tripping set again: any verdict accepted later has
//! `sent_at ≥ newest − lateness`, more than `window` after them. Since no `threshold` entries of
//! the window ever lie within `window` of each other (they would have tripped and emptied it),
//! the window holds fewer than `threshold × (1 + ⌈lateness / window⌉ + 1)` entries.

use super::model::Millis;

/// One counted offending message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Event time of the message (after clamping).
    pub sent_at: Millis,
    /// Gateway message id (de-duplication key).
    pub message_id: Box<str>,
}

/// The entries of a tripping run, taken out of the window ([`Window::take_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Smallest `sent_at` of the run.
    pub first_sent_at: Millis,
    /// Largest `sent_at` of the run (`blocked_at`).
    pub blocked_at: Millis,
    /// The message ids, in `sent_at` order.
    pub message_ids: Vec<String>,
}

/// The counting window of one mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    entries: Vec<Entry>,
}

impl Window {
    /// Entries in `sent_at` order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Newest `sent_at` in the window (`W`), if any.
    pub fn newest(&self) -> Option<Millis> {
        self.entries.last().map(|e| e.sent_at)
    }

    /// Whether `sent_at` is older than the newest entry minus the allowed lateness.
    pub fn is_late(&self, sent_at: Millis, allowed_lateness_ms: Millis) -> bool {
        self.newest()
            .is_some_and(|w| sent_at < w.saturating_sub(allowed_lateness_ms))
    }

    /// Whether `message_id` is already counted.
    pub fn contains(&self, message_id: &str) -> bool {
        self.entries.iter().any(|e| &*e.message_id == message_id)
    }

    /// Empties the window, keeping its allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Inserts in `sent_at` order (after entries with the same time) and returns the index.
    pub fn insert(&mut self, sent_at: Millis, message_id: &str) -> usize {
        let i = self.entries.partition_point(|e| e.sent_at <= sent_at);
        self.entries.insert(
            i,
            Entry {
                sent_at,
                message_id: message_id.into(),
            },
        );
        i
    }

    /// The earliest (lowest start index) run of `threshold` consecutive entries that contains
    /// index `i` and spans at most `window_ms` (inclusive). Any *set* of `threshold` entries
    /// containing `i` within the span implies such a run, so this is exact.
    pub fn trip_containing(
        &self,
        i: usize,
        threshold: u32,
        window_ms: Millis,
    ) -> Option<std::ops::Range<usize>> {
        self.run_containing_after(i, threshold, window_ms, None)
    }

    /// Like [`trip_containing`](Self::trip_containing), among the entries sent after `after`
    /// only (all of them when `None`).
    pub fn run_containing_after(
        &self,
        i: usize,
        threshold: u32,
        window_ms: Millis,
        after: Option<Millis>,
    ) -> Option<std::ops::Range<usize>> {
        let k = usize::try_from(threshold.max(1)).unwrap_or(usize::MAX);
        let n = self.entries.len();
        if k > n || i >= n {
            return None;
        }
        let lo = after.map_or(0, |a| self.entries.partition_point(|e| e.sent_at <= a));
        let first = (i + 1).saturating_sub(k).max(lo);
        let last = i.min(n - k);
        (first..=last)
            .find(|&j| {
                self.entries[j + k - 1]
                    .sent_at
                    .saturating_sub(self.entries[j].sent_at)
                    <= window_ms
            })
            .map(|j| j..j + k)
    }

    /// The run `run` (from [`trip_containing`](Self::trip_containing)) as evidence; the window
    /// is then emptied (a trip starts afresh). `None` for an empty run.
    pub fn take_run(&mut self, run: std::ops::Range<usize>) -> Option<Evidence> {
        let entries = self.entries.get(run)?;
        let (first, last) = (entries.first()?, entries.last()?);
        let evidence = Evidence {
            first_sent_at: first.sent_at,
            blocked_at: last.sent_at,
            message_ids: entries.iter().map(|e| e.message_id.to_string()).collect(),
        };
        self.entries.clear();
        Some(evidence)
    }

    /// Drops entries that can never take part in a trip with a future accepted verdict.
    pub fn prune(&mut self, allowed_lateness_ms: Millis, window_ms: Millis) {
        let Some(w) = self.newest() else { return };
        let floor = w
            .saturating_sub(allowed_lateness_ms)
            .saturating_sub(window_ms);
        let cut = self.entries.partition_point(|e| e.sent_at < floor);
        if cut > 0 {
            self.entries.drain(..cut);
        }
    }

    /// Rebuilds a window from decoded entries; `None` unless sorted by `sent_at`.
    pub(crate) fn from_sorted(entries: Vec<Entry>) -> Option<Window> {
        entries
            .windows(2)
            .all(|w| w[0].sent_at <= w[1].sent_at)
            .then_some(Window { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(times: &[Millis]) -> Window {
        let mut w = Window::default();
        for (n, t) in times.iter().enumerate() {
            w.insert(*t, &format!("m{n}"));
        }
        w
    }

    #[test]
    fn sorted_insert_ties_in_arrival_order() {
        let mut win = w(&[10, 30, 20]);
        assert_eq!(win.insert(20, "x"), 2);
        let ids: Vec<&str> = win.entries().iter().map(|e| &*e.message_id).collect();
        assert_eq!(ids, ["m0", "m2", "x", "m1"]);
        assert_eq!(win.newest(), Some(30));
    }

    #[test]
    fn trip_is_inclusive_and_earliest() {
        let win = w(&[0, 1, 2, 3, 10]);
        assert_eq!(win.trip_containing(4, 5, 10), Some(0..5));
        assert_eq!(win.trip_containing(4, 5, 9), None);
        let win = w(&[0, 5, 6, 7, 8, 9]);
        // New entry at index 3 (t=7): runs [0..4] span 7, [1..5] span 3 → earliest wins.
        assert_eq!(win.trip_containing(3, 4, 7), Some(0..4));
        assert_eq!(win.trip_containing(3, 4, 6), Some(1..5));
        assert_eq!(win.trip_containing(0, 7, 100), None);
    }

    #[test]
    fn lateness_and_prune() {
        let mut win = w(&[100, 1_000]);
        assert!(!win.is_late(700, 300));
        assert!(win.is_late(699, 300));
        win.insert(2_000, "z");
        win.prune(300, 600);
        // floor = 2000 − 900 = 1100: 100 and 1000 go.
        assert_eq!(win.len(), 1);
        assert!(win.contains("z"));
        assert!(!w(&[]).is_late(i64::MIN, 300));
    }
}
