//! The report of a backtest: what [`Backtest`] tallied, per tenant and in total, in the JSON
//! shape documented in docs/SPEC.md ("Backtest"). The HTML report
//! ([`super::html`]) is drawn from this same value.

use std::collections::BTreeMap;

use super::run::{Backtest, Tally, TenantOverrides};
use crate::policy::{Millis, Policy};

/// Version of the JSON shape (bumped when a field changes meaning; fields are only added).
pub const FORMAT: u32 = 1;

/// How many mailboxes a difference names; the rest are counted.
pub const MAX_NAMES: usize = 50;

/// Upper bounds (ms) of the time-to-block histogram's buckets; the last bucket is unbounded.
pub const TIME_TO_BLOCK_BOUNDS_MS: [Millis; 9] = [
    60_000,
    120_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
    21_600_000,
    86_400_000,
    604_800_000,
];

/// The whole report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: u32,
    /// What was read.
    pub input: InputSummary,
    /// The policies, in the order of every per-policy list below.
    pub policies: Vec<PolicyDesc>,
    /// All tenants together.
    pub total: Section,
    /// By tenant id (tenants with at least one trip under some policy).
    pub tenants: BTreeMap<String, Section>,
    /// Trips per hour of `blocked_at` (hour start, ms), one count per policy; hours without a
    /// trip between the first and the last are listed with zeros.
    pub trips_per_hour: Vec<HourRow>,
    /// Distribution of time to block, all tenants: one count per policy per bucket.
    pub time_to_block_histogram: Vec<Bucket>,
}

/// The input side of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InputSummary {
    /// `topic <name>` or `file <path>`.
    pub source: String,
    /// Requested range (ms, inclusive start, exclusive end), if any.
    pub from: Option<Millis>,
    /// End of the requested range.
    pub to: Option<Millis>,
    /// Verdicts stepped.
    pub verdicts: u64,
    /// Of which SPAM or VIRUS.
    pub offending: u64,
    /// Records that could not be read (skipped; the first few are in `rejected_examples`).
    pub rejected: u64,
    /// Why, for the first few.
    pub rejected_examples: Vec<String>,
    /// Smallest `sent_at` stepped.
    pub first_sent_at: Option<Millis>,
    /// Largest `sent_at` stepped.
    pub last_sent_at: Option<Millis>,
    /// Largest number of mailbox states held at once (the memory bound).
    pub peak_active_mailboxes: u64,
}

/// A policy as evaluated.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyDesc {
    /// Name.
    pub name: String,
    /// Its `[policy]` numbers.
    pub policy: Policy,
    /// Its per-tenant overrides.
    pub tenants: BTreeMap<String, TenantOverrides>,
}

/// Figures of one scope (a tenant, or all).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Section {
    /// One entry per policy.
    pub policies: Vec<PolicyStats>,
    /// For every ordered pair of policies, the mailboxes the first blocked and the second did not.
    pub differences: Vec<Difference>,
}

/// What one policy did in one scope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyStats {
    /// Policy name.
    pub name: String,
    /// Mailboxes blocked at least once.
    pub blocked_mailboxes: u64,
    /// Blocks (trips).
    pub trips: u64,
    /// Trips by strike number (`"1"`, `"2"`, …).
    pub strikes: BTreeMap<String, u64>,
    /// Trips that blocked permanently.
    pub permanent_blocks: u64,
    /// From the first offending message counted since the mailbox's last block to the block's
    /// `blocked_at`, seconds resolution.
    pub time_to_block_ms: Distribution,
}

/// A distribution of durations (ms).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Distribution {
    /// Values.
    pub count: u64,
    /// Smallest.
    pub min: Option<Millis>,
    /// Median (lower).
    pub p50: Option<Millis>,
    /// 90th percentile.
    pub p90: Option<Millis>,
    /// Largest.
    pub max: Option<Millis>,
    /// Mean.
    pub mean: Option<Millis>,
}

/// Mailboxes `blocked_by` blocked and `not_by` did not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The policy that blocked them.
    pub blocked_by: String,
    /// The policy that did not.
    pub not_by: String,
    /// How many.
    pub count: u64,
    /// The first [`MAX_NAMES`], in order.
    pub mailboxes: Vec<String>,
    /// How many more there are.
    pub more: u64,
}

/// One hour of the trips-per-hour series.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HourRow {
    /// Hour start, ms.
    pub hour: Millis,
    /// Trips per policy.
    pub trips: Vec<u64>,
}

/// One bucket of the time-to-block histogram.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bucket {
    /// Upper bound (inclusive, ms); `None` for the last.
    pub up_to_ms: Option<Millis>,
    /// Trips per policy.
    pub counts: Vec<u64>,
}

impl Report {
    /// The report of `b`, with what the input adapter knows (`input`'s source, range and
    /// rejections; the counters are filled from `b`).
    pub fn of(b: &Backtest, mut input: InputSummary) -> Report {
        let n = b.sets().len();
        let c = b.counts();
        input.verdicts = c.verdicts;
        input.offending = c.offending;
        input.first_sent_at = c.sent_range.map(|r| r.0);
        input.last_sent_at = c.sent_range.map(|r| r.1);
        input.peak_active_mailboxes = c.peak_active;
        let names: Vec<&str> = b.sets().iter().map(|s| s.name.as_str()).collect();
        let mut total = vec![Tally::default(); n];
        let mut tenants = BTreeMap::new();
        for (tenant, t) in &b.tallies {
            for (acc, x) in total.iter_mut().zip(t) {
                acc.merge(x);
            }
            tenants.insert(tenant.to_string(), section(&names, t));
        }
        let mut trips_per_hour = Vec::new();
        if let (Some((&first, _)), Some((&last, _))) =
            (b.hours.first_key_value(), b.hours.last_key_value())
        {
            let mut h = first;
            while h <= last {
                let trips = b.hours.get(&h).cloned().unwrap_or_else(|| vec![0; n]);
                trips_per_hour.push(HourRow { hour: h, trips });
                h += super::run::HOUR_MS;
            }
        }
        let time_to_block_histogram = histogram(&total);
        Report {
            format: FORMAT,
            input,
            policies: b
                .sets()
                .iter()
                .map(|s| PolicyDesc {
                    name: s.name.clone(),
                    policy: s.policy.clone(),
                    tenants: s.tenants.clone(),
                })
                .collect(),
            total: section(&names, &total),
            tenants,
            trips_per_hour,
            time_to_block_histogram,
        }
    }
}

fn section(names: &[&str], t: &[Tally]) -> Section {
    let policies = names
        .iter()
        .zip(t)
        .map(|(name, t)| PolicyStats {
            name: name.to_string(),
            blocked_mailboxes: t.blocked.len() as u64,
            trips: t.trips,
            strikes: t.strikes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            permanent_blocks: t.permanent,
            time_to_block_ms: distribution(&t.time_to_block),
        })
        .collect();
    let mut differences = Vec::new();
    for (i, a) in t.iter().enumerate() {
        for (j, b) in t.iter().enumerate() {
            if i == j {
                continue;
            }
            let only: Vec<&str> = a.blocked.difference(&b.blocked).map(|m| &**m).collect();
            differences.push(Difference {
                blocked_by: names[i].to_string(),
                not_by: names[j].to_string(),
                count: only.len() as u64,
                mailboxes: only.iter().take(MAX_NAMES).map(|m| m.to_string()).collect(),
                more: only.len().saturating_sub(MAX_NAMES) as u64,
            });
        }
    }
    Section {
        policies,
        differences,
    }
}

/// Seconds → count, as a distribution in ms.
fn distribution(secs: &BTreeMap<i64, u64>) -> Distribution {
    let count: u64 = secs.values().sum();
    if count == 0 {
        return Distribution::default();
    }
    let at = |q: u64| {
        // The value of rank ⌈q·count/100⌉ (1-based), at least 1.
        let rank = (q * count).div_ceil(100).max(1);
        let mut seen = 0;
        for (s, c) in secs {
            seen += c;
            if seen >= rank {
                return Some(s * 1000);
            }
        }
        None
    };
    let sum: i128 = secs
        .iter()
        .map(|(s, c)| i128::from(*s) * i128::from(*c))
        .sum();
    Distribution {
        count,
        min: secs.keys().next().map(|s| s * 1000),
        p50: at(50),
        p90: at(90),
        max: secs.keys().next_back().map(|s| s * 1000),
        mean: Some((sum * 1000 / i128::from(count)) as Millis),
    }
}

fn histogram(total: &[Tally]) -> Vec<Bucket> {
    let mut buckets: Vec<Bucket> = TIME_TO_BLOCK_BOUNDS_MS
        .iter()
        .map(|b| Some(*b))
        .chain([None])
        .map(|up_to_ms| Bucket {
            up_to_ms,
            counts: vec![0; total.len()],
        })
        .collect();
    for (i, t) in total.iter().enumerate() {
        for (s, c) in &t.time_to_block {
            let ms = s * 1000;
            let k = TIME_TO_BLOCK_BOUNDS_MS
                .iter()
                .position(|b| ms <= *b)
                .unwrap_or(TIME_TO_BLOCK_BOUNDS_MS.len());
            buckets[k].counts[i] += c;
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ranks_of_the_values() {
        let d = distribution(&[(1, 1), (2, 1), (3, 1), (10, 1)].into());
        assert_eq!(
            (d.count, d.min, d.p50, d.p90, d.max, d.mean),
            (
                4,
                Some(1000),
                Some(2000),
                Some(10_000),
                Some(10_000),
                Some(4000)
            )
        );
        assert_eq!(distribution(&BTreeMap::new()), Distribution::default());
    }
}
