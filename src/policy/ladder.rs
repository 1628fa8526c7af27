//! The lockout ladder: strike k lasts `base × 2^(k−1)` (1 h, 2 h, 4 h, 8 h, 16 h by default), the
//! `permanent_strike`-th strike (6th by default) is permanent, and the optional strike decay.

use super::config::Policy;
use super::model::Millis;

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
