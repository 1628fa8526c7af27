//! The policy numbers (SPEC §1 "every number is a setting"), their validation and per-tenant
//! overrides.

use super::model::{Millis, PolicyOverrides};

/// A policy setting that makes no sense. The message names the field, e.g.
/// `policy.threshold must be >= 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy.{field} {reason}")]
pub struct PolicyError {
    /// Name of the offending field, as spelled in the configuration.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl PolicyError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        PolicyError {
            field,
            reason: reason.into(),
        }
    }
}

/// The policy numbers. `Default` is the SPEC default; the configuration file section `[policy]`
/// deserialises into this (unknown keys are an error, missing keys take the default).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Offending messages (each counted once) that trip a block. Default 5.
    pub threshold: u32,
    /// Largest span (inclusive) between the earliest and the latest of the tripping messages,
    /// event time. Default 600 000 (10 min).
    pub window_ms: Millis,
    /// How much older than the mailbox's newest counted `sent_at` a verdict may be and still
    /// count. Default 300 000 (5 min).
    pub allowed_lateness_ms: Millis,
    /// Duration of the first block; strike k lasts `base × 2^(k−1)`. Default 3 600 000 (1 h).
    pub base_block_ms: Millis,
    /// The strike that blocks permanently. Default 6.
    pub permanent_strike: u32,
    /// A `sent_at` further than this in the future of the processor clock is clamped to the
    /// clock. Default 300 000 (5 min).
    pub max_future_skew_ms: Millis,
    /// Optional strike decay: at a trip, the strike count first drops by one per full period
    /// between the end of the last block and the new `blocked_at`. Default off.
    pub strike_decay_ms: Option<Millis>,
    /// Processor-time TTL of an idle state without strikes or block: after this long without a
    /// state change the state is as good as new (and may be forgotten). Default 86 400 000 (24 h).
    pub state_idle_ttl_ms: Millis,
    /// Offending messages within the window that raise an early warning (alert `WARNING`,
    /// event `MAILBOX_WARNED`), once per window. Default `threshold − 1`; 0 turns it off; at or
    /// above the threshold it never fires (the block's alert comes first).
    pub warn_threshold: Option<u32>,
    /// Processor time a device has to report its scan result before its incident needs
    /// attention (`SCAN_OVERDUE`). Configured as `scan.result_timeout_ms` (so not part of
    /// `[policy]`); default 14 400 000 (4 h).
    #[serde(skip)]
    pub scan_result_timeout_ms: Millis,
    /// The shadow policy evaluated beside this one (rule 12 of [`crate::policy`]), when
    /// `[shadow]` is enabled: its own numbers, its own state, only `SHADOW_TRIP` events. Its
    /// `max_future_skew_ms` and `state_idle_ttl_ms` are not used (the verdict is clamped once,
    /// and the idle TTL is this policy's). Configured as `[shadow]`, so not part of `[policy]`.
    #[serde(skip)]
    pub shadow: Option<std::sync::Arc<Policy>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            threshold: 5,
            window_ms: 600_000,
            allowed_lateness_ms: 300_000,
            base_block_ms: 3_600_000,
            permanent_strike: 6,
            max_future_skew_ms: 300_000,
            strike_decay_ms: None,
            state_idle_ttl_ms: 86_400_000,
            warn_threshold: None,
            scan_result_timeout_ms: 14_400_000,
            shadow: None,
        }
    }
}

impl Policy {
    /// Checks every number; the error names the first bad field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.threshold < 1 {
            return Err(PolicyError::new("threshold", "must be >= 1"));
        }
        if self.window_ms <= 0 {
            return Err(PolicyError::new("window_ms", "must be > 0"));
        }
        if self.allowed_lateness_ms < 0 {
            return Err(PolicyError::new("allowed_lateness_ms", "must be >= 0"));
        }
        if self.base_block_ms <= 0 {
            return Err(PolicyError::new("base_block_ms", "must be > 0"));
        }
        if self.permanent_strike < 1 {
            return Err(PolicyError::new("permanent_strike", "must be >= 1"));
        }
        if self.max_future_skew_ms < 0 {
            return Err(PolicyError::new("max_future_skew_ms", "must be >= 0"));
        }
        if let Some(d) = self.strike_decay_ms {
            if d <= 0 {
                return Err(PolicyError::new("strike_decay_ms", "must be > 0 when set"));
            }
        }
        // The longest timed block is strike permanent_strike − 1: base × 2^(permanent_strike − 2).
        if self.permanent_strike >= 2
            && super::ladder::block_duration(self.base_block_ms, self.permanent_strike - 1)
                .is_none()
        {
            return Err(PolicyError::new(
                "base_block_ms",
                format!(
                    "doubled for every strike below policy.permanent_strike ({}) overflows i64 milliseconds",
                    self.permanent_strike
                ),
            ));
        }
        let horizon = self
            .window_ms
            .checked_add(self.allowed_lateness_ms)
            .ok_or_else(|| {
                PolicyError::new("window_ms", "plus policy.allowed_lateness_ms overflows i64")
            })?;
        if self.state_idle_ttl_ms < horizon {
            return Err(PolicyError::new(
                "state_idle_ttl_ms",
                format!("must be >= policy.window_ms + policy.allowed_lateness_ms ({horizon})"),
            ));
        }
        Ok(())
    }

    /// The warning threshold in force: `warn_threshold` (default `threshold − 1`), `None` when 0
    /// or not below the threshold.
    pub fn warn_at(&self) -> Option<u32> {
        let w = self
            .warn_threshold
            .unwrap_or(self.threshold.saturating_sub(1));
        (w >= 1 && w < self.threshold).then_some(w)
    }

    /// This policy with a tenant's overrides applied. Total: an override that would make the
    /// policy invalid (see [`Policy::validate`]) is ignored and the default kept for that field,
    /// so a bad tenant record can never break processing. Overrides are tried in the order
    /// threshold, window, base duration, permanent strike.
    pub fn with_overrides(&self, o: &PolicyOverrides) -> Policy {
        let mut p = self.clone();
        if o.threshold.is_none()
            && o.window_ms.is_none()
            && o.base_block_ms.is_none()
            && o.permanent_strike.is_none()
            && o.warn_threshold.is_none()
        {
            return p;
        }
        if o.warn_threshold.is_some() {
            p.warn_threshold = o.warn_threshold;
        }
        if let Some(v) = o.threshold {
            let old = std::mem::replace(&mut p.threshold, v);
            if p.validate().is_err() {
                p.threshold = old;
            }
        }
        if let Some(v) = o.window_ms {
            let old = std::mem::replace(&mut p.window_ms, v);
            if p.validate().is_err() {
                p.window_ms = old;
            }
        }
        if let Some(v) = o.base_block_ms {
            let old = std::mem::replace(&mut p.base_block_ms, v);
            if p.validate().is_err() {
                p.base_block_ms = old;
            }
        }
        if let Some(v) = o.permanent_strike {
            let old = std::mem::replace(&mut p.permanent_strike, v);
            if p.validate().is_err() {
                p.permanent_strike = old;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_and_valid() {
        let p = Policy::default();
        assert_eq!(p.threshold, 5);
        assert_eq!(p.window_ms, 600_000);
        assert_eq!(p.allowed_lateness_ms, 300_000);
        assert_eq!(p.base_block_ms, 3_600_000);
        assert_eq!(p.permanent_strike, 6);
        assert_eq!(p.max_future_skew_ms, 300_000);
        assert_eq!(p.strike_decay_ms, None);
        assert_eq!(p.state_idle_ttl_ms, 86_400_000);
        p.validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let with = |set: fn(&mut Policy)| {
            let mut p = Policy::default();
            set(&mut p);
            p
        };
        let cases: Vec<(Policy, &str)> = vec![
            (with(|p| p.threshold = 0), "policy.threshold must be >= 1"),
            (with(|p| p.window_ms = 0), "policy.window_ms must be > 0"),
            (
                with(|p| p.allowed_lateness_ms = -1),
                "policy.allowed_lateness_ms must be >= 0",
            ),
            (with(|p| p.base_block_ms = 0), "policy.base_block_ms must be > 0"),
            (
                with(|p| p.permanent_strike = 0),
                "policy.permanent_strike must be >= 1",
            ),
            (
                with(|p| p.max_future_skew_ms = -5),
                "policy.max_future_skew_ms must be >= 0",
            ),
            (
                with(|p| p.strike_decay_ms = Some(0)),
                "policy.strike_decay_ms must be > 0 when set",
            ),
            (
                with(|p| p.state_idle_ttl_ms = 899_999),
                "policy.state_idle_ttl_ms must be >= policy.window_ms + policy.allowed_lateness_ms (900000)",
            ),
        ];
        for (p, msg) in cases {
            assert_eq!(p.validate().unwrap_err().to_string(), msg);
        }
    }

    #[test]
    fn a_ladder_whose_longest_block_overflows_is_refused() {
        let overflow = Policy {
            permanent_strike: 60,
            ..Policy::default()
        };
        let e = overflow.validate().unwrap_err();
        assert_eq!(e.field, "base_block_ms");
        assert!(e.to_string().contains("overflows"), "{e}");
        // Permanent at the first strike needs no doubling at all.
        Policy {
            permanent_strike: 1,
            base_block_ms: i64::MAX,
            ..Policy::default()
        }
        .validate()
        .unwrap();
        // 2^61 × 2 fits, 2^62 × 2 does not.
        Policy {
            permanent_strike: 3,
            base_block_ms: 1 << 61,
            ..Policy::default()
        }
        .validate()
        .unwrap();
        assert!(Policy {
            permanent_strike: 3,
            base_block_ms: 1 << 62,
            ..Policy::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn overrides_apply_and_bad_ones_are_ignored() {
        let p = Policy::default();
        assert_eq!(p.with_overrides(&PolicyOverrides::default()), p);
        let o = PolicyOverrides {
            threshold: Some(3),
            window_ms: Some(60_000),
            base_block_ms: Some(1_000),
            permanent_strike: Some(2),
            warn_threshold: None,
        };
        let q = p.with_overrides(&o);
        assert_eq!(
            (
                q.threshold,
                q.window_ms,
                q.base_block_ms,
                q.permanent_strike
            ),
            (3, 60_000, 1_000, 2)
        );
        let bad = PolicyOverrides {
            threshold: Some(0),
            window_ms: Some(-1),
            base_block_ms: Some(0),
            permanent_strike: Some(0),
            warn_threshold: None,
        };
        assert_eq!(p.with_overrides(&bad), p);
    }
}
