//! The `mailguard backtest` command: arguments, candidate policy files, outputs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::input::{self, Range};
use super::report::Report;
use super::run::{Backtest, PolicySet, TenantOverrides};
use super::{html, parse_time, BacktestError};
use crate::codec::RecordType;
use crate::config::Config;
use crate::policy::Policy;

/// Arguments of `mailguard backtest`.
/// `Default`: no input, no candidate, JSON to stdout (for callers in code).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BacktestArgs {
    /// Read verdicts from this file: JSON lines (as `produce` takes them) or an Avro object
    /// container file (detected by its magic).
    #[arg(long, conflicts_with = "topic")]
    pub file: Option<PathBuf>,
    /// Read the verdicts topic (or this topic) over --from/--to (record timestamps).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub topic: Option<String>,
    /// Start of the range (inclusive): epoch ms or YYYY-MM-DDTHH:MM:SS[.mmm]Z.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<i64>,
    /// End of the range (exclusive).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<i64>,
    /// A candidate policy file (TOML: optional `name`, `[policy]`, `[tenants.<id>]`); repeat
    /// for more. The live policy (`[policy]` of the configuration) is always the first.
    #[arg(long = "candidate", short = 'p')]
    pub candidates: Vec<PathBuf>,
    /// Write the JSON report here (`-`: stdout; the default when no --html is given).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write every trip of every policy here as JSON lines (in the order they happened).
    #[arg(long)]
    pub trips: Option<PathBuf>,
}

/// A candidate policy file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateFile {
    /// Name in the report (default: the file name without extension).
    name: Option<String>,
    /// Same fields as the configuration's `[policy]`.
    #[serde(default)]
    policy: Policy,
    /// Overrides by tenant id.
    #[serde(default)]
    tenants: BTreeMap<String, TenantOverrides>,
}

/// Parses a candidate policy file (`scan_result_timeout_ms` is the live one's: it never
/// changes a trip). Every number is validated, a tenant's overrides applied included.
pub fn candidate(path: &Path, text: &str, live: &Policy) -> Result<PolicySet, BacktestError> {
    let err = |reason: String| BacktestError::Policy {
        path: path.display().to_string(),
        reason,
    };
    let f: CandidateFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut policy = f.policy;
    policy.scan_result_timeout_ms = live.scan_result_timeout_ms;
    policy.validate().map_err(|e| err(e.to_string()))?;
    for (tenant, o) in &f.tenants {
        let mut p = policy.clone();
        p.threshold = o.threshold.unwrap_or(p.threshold);
        p.window_ms = o.window_ms.unwrap_or(p.window_ms);
        p.base_block_ms = o.base_block_ms.unwrap_or(p.base_block_ms);
        p.permanent_strike = o.permanent_strike.unwrap_or(p.permanent_strike);
        p.validate()
            .map_err(|e| err(format!("tenants.{tenant}: {e}")))?;
    }
    let name = f.name.unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| "candidate".into(), |s| s.to_string_lossy().into_owned())
    });
    Ok(PolicySet {
        name,
        policy,
        tenants: f.tenants,
    })
}

fn output(path: &Path) -> Result<Box<dyn Write>, BacktestError> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdout().lock()));
    }
    let f = File::create(path).map_err(|e| BacktestError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Box::new(BufWriter::new(f)))
}

fn written(path: &Path, r: std::io::Result<()>) -> Result<(), BacktestError> {
    r.map_err(|e| BacktestError::Output {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// `mailguard backtest`: the live policy and the candidates over the input; the reports.
pub fn backtest(cfg: &Config, args: &BacktestArgs) -> Result<Report, BacktestError> {
    let mut sets = vec![PolicySet {
        name: "live".into(),
        policy: cfg.policy.clone(),
        tenants: BTreeMap::new(),
    }];
    for path in &args.candidates {
        let text = input::read_text(path)?;
        let set = candidate(path, &text, &cfg.policy)?;
        if sets.iter().any(|s| s.name == set.name) {
            return Err(BacktestError::Usage(format!(
                "two policies are named `{}`: set `name` in {}",
                set.name,
                path.display()
            )));
        }
        sets.push(set);
    }
    let range = Range {
        from: args.from,
        to: args.to,
    };
    if let (Some(f), Some(t)) = (range.from, range.to) {
        if f >= t {
            return Err(BacktestError::Usage("--from must be before --to".into()));
        }
    }
    let mut b = Backtest::new(sets);
    let trip_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    if let Some(path) = &args.trips {
        let mut out = output(path)?;
        let err = trip_error.clone();
        b.on_trip(move |t| {
            let r = serde_json::to_writer(&mut out, t)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(e) = r {
                err.lock().expect("trip error").get_or_insert(e);
            }
        });
    }
    let summary = match (&args.file, &args.topic) {
        (Some(path), None) => input::file(path, range, &cfg.limits, &mut b)?,
        (None, Some(topic)) => {
            let topic = if topic.is_empty() {
                cfg.topics.verdicts.as_str()
            } else {
                topic.as_str()
            };
            let codec = crate::wiring::codec_for(cfg, &[(topic, RecordType::OutboundVerdict)])
                .map_err(|e| BacktestError::Kafka(e.to_string()))?;
            input::topic(cfg, &codec, topic, range, &mut b)?
        }
        _ => return Err(BacktestError::Usage("give --file PATH or --topic".into())),
    };
    let report = Report::of(&b, summary);
    // Dropping the backtest flushes the trips file.
    drop(b);
    if let Some(e) = trip_error.lock().expect("trip error").take() {
        let path = args.trips.as_deref().unwrap_or(Path::new("-"));
        written(path, Err(e))?;
    }
    let json = args
        .json
        .clone()
        .or_else(|| args.html.is_none().then(|| PathBuf::from("-")));
    if let Some(path) = &json {
        let mut out = output(path)?;
        let r = serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        written(path, r)?;
    }
    if let Some(path) = &args.html {
        let mut out = output(path)?;
        let r = out
            .write_all(html::render(&report).as_bytes())
            .and_then(|()| out.flush());
        written(path, r)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_file_has_the_policy_fields_and_tenant_overrides() {
        let live = Policy::default();
        let text = "name = \"strict\"\n[policy]\nthreshold = 3\nwindow_ms = 1800000\n[tenants.acme]\nthreshold = 8\n";
        let s = candidate(Path::new("x.toml"), text, &live).unwrap();
        assert_eq!(
            (s.name.as_str(), s.policy.threshold, s.policy.window_ms),
            ("strict", 3, 1_800_000)
        );
        assert_eq!(s.tenants["acme"].threshold, Some(8));
        let unnamed = candidate(Path::new("dir/lenient.toml"), "", &live).unwrap();
        assert_eq!(
            (unnamed.name.as_str(), unnamed.policy.clone()),
            ("lenient", live.clone())
        );
        for (text, why) in [
            ("[policy]\nthreshold = 0\n", "policy.threshold must be >= 1"),
            ("[policy]\nthreshhold = 3\n", "unknown field"),
            (
                "[tenants.a]\nwindow_ms = -1\n",
                "tenants.a: policy.window_ms must be > 0",
            ),
            ("[tenants.a]\nmode = \"ENFORCE\"\n", "unknown field"),
        ] {
            let e = candidate(Path::new("c.toml"), text, &live)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
