//! How far behind its topics the view is: a pure tracker, fed by the loader with what it reads
//! and with librdkafka's statistics, asked by the handlers.
//!
//! "Caught up once" is not enough: a reader that stalls (broker gone, ACL revoked, registry
//! down) would serve frozen answers for ever. So the loader takes, from each statistics report
//! (every second), the end of every partition — its last stable offset, as the view reads
//! `read_committed` — as a *target*. Once the view has read every partition up to its target
//! (or reached its end), it has seen everything committed before that report: the view is
//! *fresh as of* the report's time. Staleness is the age of the newest target reached. Under
//! steady writes the view is never "at the end" at any instant, but it keeps reaching targets a
//! second old, so staleness stays near a second; a stalled reader reaches no new target, and
//! staleness grows until the API refuses to answer from it (503).
//!
//! A report is taken as a target only while the partitions' leaders are known and fetching: with
//! the broker unreachable the cached ends stop moving, and reaching them would prove nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What one statistics report says of one reader's partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// End (last stable offset) per partition, as far as the broker said.
    pub ends: BTreeMap<i32, i64>,
    /// Every assigned partition has a leader it is fetching from.
    pub healthy: bool,
}

/// Freshness of one reader (one topic).
#[derive(Debug, Default)]
pub struct Freshness {
    /// Next offset to read per partition (after the last record read).
    next: BTreeMap<i32, i64>,
    /// Partitions whose end was reached after their last record.
    at_end: BTreeSet<i32>,
    /// The oldest report not reached yet: when it came, and its ends.
    target: Option<(Instant, BTreeMap<i32, i64>)>,
    /// The ends of the latest healthy report (for the lag).
    latest: BTreeMap<i32, i64>,
    /// The time of the newest report whose ends the view reached.
    fresh_at: Option<Instant>,
}

impl Freshness {
    /// A record at `offset` of `partition` was read.
    pub fn on_record(&mut self, partition: i32, offset: i64) {
        self.next.insert(partition, offset + 1);
        self.at_end.remove(&partition);
    }

    /// The end of `partition` was reached.
    pub fn on_end(&mut self, partition: i32) {
        self.at_end.insert(partition);
    }

    /// A statistics report came at `at`.
    pub fn on_report(&mut self, at: Instant, report: Report) {
        if !report.healthy {
            return;
        }
        self.latest = report.ends.clone();
        if self.target.is_none() {
            self.target = Some((at, report.ends));
        }
        self.settle();
    }

    /// Moves `fresh_at` if the pending target has been reached.
    pub fn settle(&mut self) {
        let Some((at, ends)) = &self.target else {
            return;
        };
        if ends.iter().all(|(p, end)| self.reached(*p, *end)) {
            self.fresh_at = Some(*at);
            self.target = None;
        }
    }

    fn reached(&self, partition: i32, end: i64) -> bool {
        // At the end counts whatever the offsets say: a transaction's commit marker takes an
        // offset that no record is read at.
        self.at_end.contains(&partition) || self.next.get(&partition).is_some_and(|n| *n >= end)
    }

    /// Records committed but not read yet, as of the latest report.
    pub fn lag(&self) -> i64 {
        self.latest
            .iter()
            .filter(|(p, _)| !self.at_end.contains(p))
            .map(|(p, end)| (end - self.next.get(p).copied().unwrap_or(0)).max(0))
            .sum()
    }

    /// The time of the newest report the view has reached, if any.
    pub fn fresh_at(&self) -> Option<Instant> {
        self.fresh_at
    }
}

/// How old the view is at `now`, given each reader's `fresh_at`: the age of the stalest reader
/// (`None` while one has reached no report yet).
pub fn staleness(
    now: Instant,
    fresh: impl IntoIterator<Item = Option<Instant>>,
) -> Option<Duration> {
    let mut oldest: Option<Instant> = None;
    for f in fresh {
        let f = f?;
        oldest = Some(oldest.map_or(f, |o| o.min(f)));
    }
    oldest.map(|o| now.saturating_duration_since(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ends: &[(i32, i64)], healthy: bool) -> Report {
        Report {
            ends: ends.iter().copied().collect(),
            healthy,
        }
    }

    #[test]
    fn a_target_is_reached_by_reading_up_to_it_or_by_reaching_the_end() {
        let t0 = Instant::now();
        let mut f = Freshness::default();
        f.on_report(t0, report(&[(0, 10), (1, 5)], true));
        assert_eq!(f.fresh_at(), None);
        assert_eq!(f.lag(), 15);
        for o in 0..10 {
            f.on_record(0, o);
        }
        f.settle();
        assert_eq!(f.fresh_at(), None, "partition 1 is not read yet");
        assert_eq!(f.lag(), 5);
        // Partition 1 ends with a commit marker: its last record is at 3, the end is 5.
        f.on_record(1, 3);
        f.settle();
        assert_eq!(f.fresh_at(), None);
        f.on_end(1);
        f.settle();
        assert_eq!(f.fresh_at(), Some(t0));
        assert_eq!(f.lag(), 0);
    }

    #[test]
    fn under_steady_writes_the_view_stays_fresh_as_of_the_previous_report() {
        let t0 = Instant::now();
        let mut f = Freshness::default();
        let mut written = 0;
        for s in 0..5u64 {
            let at = t0 + Duration::from_secs(s);
            // 100 records arrive per second; the view reads them a little after each report.
            written += 100;
            f.on_report(at, report(&[(0, written)], true));
            for o in written - 100..written {
                f.on_record(0, o);
            }
            f.settle();
            // New records are already arriving: never at the end.
            assert_eq!(f.fresh_at(), Some(at));
        }
        assert_eq!(
            staleness(t0 + Duration::from_millis(4_500), [f.fresh_at()]),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn a_stalled_reader_grows_stale_and_an_unhealthy_report_is_no_target() {
        let t0 = Instant::now();
        let mut f = Freshness::default();
        f.on_report(t0, report(&[(0, 3)], true));
        f.on_end(0);
        f.settle();
        assert_eq!(f.fresh_at(), Some(t0));
        // New records committed, never read: the target of t1 is never reached.
        let t1 = t0 + Duration::from_secs(1);
        f.on_record(0, 3); // one read, then the reader stalls
        f.on_report(t1, report(&[(0, 50)], true));
        f.on_report(t1 + Duration::from_secs(1), report(&[(0, 60)], true));
        assert_eq!(f.fresh_at(), Some(t0));
        assert_eq!(f.lag(), 56);
        let now = t0 + Duration::from_secs(40);
        assert_eq!(
            staleness(now, [f.fresh_at()]),
            Some(Duration::from_secs(40))
        );
        // The broker is gone: its cached ends prove nothing and are no target.
        let mut g = Freshness::default();
        g.on_end(0);
        g.on_report(t0, report(&[(0, 3)], false));
        assert_eq!(g.fresh_at(), None);
    }

    #[test]
    fn the_view_is_as_stale_as_its_stalest_reader() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let now = t0 + Duration::from_secs(6);
        assert_eq!(
            staleness(now, [Some(t1), Some(t0)]),
            Some(Duration::from_secs(6))
        );
        assert_eq!(staleness(now, [Some(t1), None]), None);
    }
}
