//! The lockout ladder: strike k lasts `base × 2^(k−1)` (1 h, 2 h, 4 h, 8 h, 16 h by default), the
//! `permanent_strike`-th strike (6th by default) is permanent, and the optional strike decay.

use super::config::Policy;
use super::model::{Millis, TripFacts};

/// Duration of timed strike `strike` (1-based): `base × 2^(strike−1)`; `None` on overflow or for
/// strike 0.
pub fn block_duration(base_block_ms: Millis, strike: u32) -> Option<Millis> {
    let exp = strike.checked_sub(1)?;
    if exp > 62 {
        return None;
    }
    base_block_ms.checked_mul(1i64 << exp)
}

/// What a new strike means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ladder {
    /// A timed block ending at this instant.
    Until(Millis),
    /// A permanent block.
    Permanent,
}

/// The block that strike `strike` starting at `start` gets under `policy` (the engine starts it
/// at `max(blocked_at, now)`). The end saturates at `i64::MAX` rather than overflow (only
/// reachable with absurd times).
pub fn block_for(policy: &Policy, strike: u32, start: Millis) -> Ladder {
    if strike >= policy.permanent_strike {
        return Ladder::Permanent;
    }
    let d = block_duration(policy.base_block_ms, strike).unwrap_or(Millis::MAX);
    Ladder::Until(start.saturating_add(d))
}

/// What a trip applies: its strike and the block it starts (rule 9; the would-be ladders of
/// rules 9a and 12 apply the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The new strike (after decay).
    pub strike: u32,
    /// When the block starts: `max(blocked_at, now)`.
    pub start: Millis,
    /// Its end; `None` = permanent.
    pub until: Option<Millis>,
}

impl Applied {
    /// The trip at `blocked_at`, processed at `now`, of a ladder at `strikes` whose last block
    /// ended at `last_end`: decay, one more strike, its block from `max(blocked_at, now)` (a
    /// block never lasts less than its length, whatever the lag).
    pub fn next(
        policy: &Policy,
        strikes: u32,
        last_end: Option<Millis>,
        blocked_at: Millis,
        now: Millis,
    ) -> Applied {
        let before = decayed_strikes(strikes, last_end, blocked_at, policy.strike_decay_ms);
        let strike = before.saturating_add(1);
        let start = blocked_at.max(now);
        let until = match block_for(policy, strike, start) {
            Ladder::Until(u) => Some(u),
            Ladder::Permanent => None,
        };
        Applied {
            strike,
            start,
            until,
        }
    }

    /// The block's length; `None` = permanent.
    pub fn length(&self) -> Option<Millis> {
        self.until.map(|u| u.saturating_sub(self.start))
    }

    /// The trip as data, with its evidence (`sent_at` order) sent from `first_sent_at` to
    /// `blocked_at`.
    pub fn facts(
        &self,
        first_sent_at: Millis,
        blocked_at: Millis,
        evidence_message_ids: Vec<String>,
        exempt: bool,
    ) -> TripFacts {
        TripFacts {
            strike: self.strike,
            first_sent_at,
            blocked_at,
            block_ms: self.length(),
            blocked_until: self.until,
            evidence_message_ids,
            exempt,
        }
    }
}

/// Strike count before a new trip at `blocked_at`, after the optional decay: one strike is
/// forgiven per full `decay_ms` between the end of the last block and `blocked_at`, never below 0.
/// No decay when off, when there was no block, or when the time difference is negative.
pub fn decayed_strikes(
    strikes: u32,
    last_block_end: Option<Millis>,
    blocked_at: Millis,
    decay_ms: Option<Millis>,
) -> u32 {
    let (Some(d), Some(end)) = (decay_ms, last_block_end) else {
        return strikes;
    };
    if d <= 0 || strikes == 0 {
        return strikes;
    }
    let elapsed = blocked_at.saturating_sub(end);
    if elapsed <= 0 {
        return strikes;
    }
    let periods = elapsed / d;
    let periods = u32::try_from(periods).unwrap_or(u32::MAX);
    strikes.saturating_sub(periods)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 3_600_000;

    #[test]
    fn ladder_is_1_2_4_8_16_hours_then_permanent() {
        let p = Policy::default();
        let at = 1_000;
        let got: Vec<Ladder> = (1..=7).map(|k| block_for(&p, k, at)).collect();
        assert_eq!(
            got,
            vec![
                Ladder::Until(at + H),
                Ladder::Until(at + 2 * H),
                Ladder::Until(at + 4 * H),
                Ladder::Until(at + 8 * H),
                Ladder::Until(at + 16 * H),
                Ladder::Permanent,
                Ladder::Permanent,
            ]
        );
    }

    #[test]
    fn duration_overflow_is_none() {
        assert_eq!(block_duration(1, 0), None);
        assert_eq!(block_duration(1, 63), Some(1 << 62));
        assert_eq!(block_duration(1, 64), None);
        assert_eq!(block_duration(i64::MAX, 2), None);
        assert_eq!(
            block_for(&Policy::default(), 1, i64::MAX - 1),
            Ladder::Until(i64::MAX)
        );
    }

    #[test]
    fn decay() {
        let d = Some(1_000);
        assert_eq!(decayed_strikes(3, Some(0), 999, d), 3);
        assert_eq!(decayed_strikes(3, Some(0), 1_000, d), 2);
        assert_eq!(decayed_strikes(3, Some(0), 2_500, d), 1);
        assert_eq!(decayed_strikes(3, Some(0), 1_000_000, d), 0);
        assert_eq!(decayed_strikes(3, Some(0), i64::MAX, d), 0);
        assert_eq!(decayed_strikes(3, Some(5_000), 0, d), 3);
        assert_eq!(decayed_strikes(3, None, 1_000_000, d), 3);
        assert_eq!(decayed_strikes(3, Some(0), 1_000_000, None), 3);
    }
}
