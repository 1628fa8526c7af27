//! `mailguard backtest`: what the live policy and candidate policies would have done over a
//! history of verdicts (SPEC §8, DESIGN §9).
//!
//! The core is a pure state machine that takes time as an argument, so a backtest is the core
//! itself run over recorded verdicts: [`run::Backtest`] steps each verdict through one state per
//! policy per active mailbox and tallies the trips; [`report::Report`] is what it found, per
//! tenant and in total, written as JSON or drawn as one self-contained HTML file
//! ([`html`], SVG plots by `plotters`, no script).
//!
//! Modules: [`decode`] (Avro object container files and JSON lines, pure and fuzzed), [`run`]
//! (the policies over the stream, bounded memory), [`report`] (the JSON shape), and behind the
//! runtime: `input` (file and topic sources, the progress line), `html`, and the CLI here.

pub mod decode;
#[cfg(feature = "runtime")]
pub mod html;
#[cfg(feature = "runtime")]
pub mod input;
pub mod report;
pub mod run;

pub use report::Report;
pub use run::{Backtest, PolicySet, TenantOverrides, Trip};

/// Why a backtest could not run. Display says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The input cannot be read.
    #[error("input: {0}")]
    Input(String),
    /// A candidate policy file is not valid.
    #[error("policy file {path}: {reason}")]
    Policy {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The arguments contradict each other or a time does not parse.
    #[error("{0}")]
    Usage(String),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Writing an output failed.
    #[error("output {path}: {reason}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A time on the command line: epoch milliseconds or `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (UTC).
pub fn parse_time(s: &str) -> Result<crate::policy::Millis, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("`{s}` is neither epoch milliseconds nor YYYY-MM-DDTHH:MM:SS[.mmm]Z");
    let t = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (time, milli) = match time.split_once('.') {
        Some((t, m)) if m.len() == 3 => (t, num(m)?),
        Some(_) => return Err(bad()),
        None => (time, 0),
    };
    let hms: Vec<&str> = time.split(':').collect();
    let ([y, mo, day], [h, mi, se]) = (d.as_slice(), hms.as_slice()) else {
        return Err(bad());
    };
    let (y, mo, day, h, mi, se) = (num(y)?, num(mo)?, num(day)?, num(h)?, num(mi)?, num(se)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + milli)
}

#[cfg(feature = "runtime")]
mod cli;
#[cfg(feature = "runtime")]
pub use cli::{backtest, BacktestArgs};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_epoch_ms_or_utc() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.250Z"),
            Ok(1_700_000_000_250)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "yesterday",
            "2023-11-14 22:13:20Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        // The report's wording of times round-trips.
        let t = 1_764_000_123_456;
        assert_eq!(parse_time(&crate::policy::text::iso8601(t)), Ok(t));
    }
}
