//! `mailguard backtest`:
//!
//! - a generated history of more than a million verdicts gives exactly the trips of a naive
//!   model written here (deque of counted times, a set of counted ids, the ladder);
//! - the binary reads the same history as JSON lines and as an Avro object container file and
//!   reports the same thing, trips included;
//! - the HTML report, opened in headless Chromium (playwright-core from scripts/browser-env),
//!   renders both plots with their axes labelled and no error; the screenshot is kept under the
//!   target dir;
//! - a terminal gets a progress line (under `script`), a pipe none;
//! - on the real broker, the live-policy backtest of a verdicts topic the pipeline processed
//!   gives exactly the blocks the pipeline published (mailbox, strike, blocked_at, incident);
//!   with the schema registry, Confluent-framed verdicts are read through their ids.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailguard::backtest::{Backtest, BacktestArgs, PolicySet, TenantOverrides};
use mailguard::codec::{Codec, RecordType, VerdictRef};
use mailguard::policy::{BlockState, Effect, Millis, Policy, VerdictKind};

/// One generated verdict.
#[derive(Debug, Clone)]
struct Gen {
    id: String,
    tenant: usize,
    mailbox: usize,
    sent_at: Millis,
    kind: VerdictKind,
}

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

fn mailbox_name(i: usize) -> String {
    // Some spelled in upper case: the backtest lower-cases as the codec does.
    if i.is_multiple_of(5) {
        format!("User{i}@Example.COM")
    } else {
        format!("user{i}@example.com")
    }
}

/// A deterministic history: `n` verdicts over `mailboxes`, time going forward 0–4 s per
/// verdict (a million span about three weeks, so idle states are forgotten on the way). One
/// mailbox in 25 is compromised and bursts in a random one of 40 hours; 20 % to 40 % of the
/// traffic (more in the later hours of the day) comes from the bursting ones, 60 % of it
/// offending; the rest is spread over every mailbox with 0.5 % noise. 1 % of the offending
/// verdicts are delivered again a few seconds later (same id and `sent_at`).
fn history(n: usize, mailboxes: usize, seed: u64) -> Vec<Gen> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        s >> 33
    };
    let mix = |x: u64| {
        let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    };
    let compromised = (mailboxes / 25) as u64;
    let mut t = 1_764_547_200_000; // 2025-12-01T00:00:00Z
    let mut out = Vec::with_capacity(n + n / 50);
    let mut redeliver: VecDeque<(Gen, Millis)> = VecDeque::new();
    let (mut hour, mut bursting) = (u64::MAX, Vec::new());
    while out.len() < n {
        t += (next() % 4001) as Millis;
        while redeliver.front().is_some_and(|(_, at)| *at <= t) {
            out.push(redeliver.pop_front().expect("front").0);
        }
        if hour != (t / 3_600_000) as u64 {
            hour = (t / 3_600_000) as u64;
            bursting = (0..compromised)
                .filter(|k| mix(seed ^ (hour << 20) ^ k).is_multiple_of(40))
                .collect();
        }
        let share = 2 + (hour % 24) * 2 / 23;
        let (m, p) = if next() % 10 < share && !bursting.is_empty() {
            let k = bursting[next() as usize % bursting.len()];
            ((k * 25) as usize, 600)
        } else {
            ((next() as usize) % mailboxes, 5)
        };
        let kind = if next() % 1000 < p {
            if next().is_multiple_of(4) {
                VerdictKind::Virus
            } else {
                VerdictKind::Spam
            }
        } else {
            VerdictKind::Clean
        };
        let g = Gen {
            id: if kind.is_offending() {
                format!("m-{}", out.len())
            } else {
                String::new()
            },
            tenant: m % TENANTS.len(),
            mailbox: m,
            sent_at: t,
            kind,
        };
        if kind.is_offending() && next().is_multiple_of(100) {
            redeliver.push_back((g.clone(), t + 1 + (next() % 5000) as Millis));
        }
        out.push(g);
    }
    out
}

/// The live policy and a candidate: threshold 3 in 30 min, shorter blocks, permanent at the
/// fourth strike, with a tenant override (globex: threshold 7).
fn policy_sets() -> Vec<PolicySet> {
    vec![
        PolicySet {
            name: "live".into(),
            policy: Policy::default(),
            tenants: BTreeMap::new(),
        },
        PolicySet {
            name: "strict".into(),
            policy: Policy {
                threshold: 3,
                window_ms: 1_800_000,
                base_block_ms: 1_800_000,
                permanent_strike: 4,
                ..Policy::default()
            },
            tenants: [(
                "globex".to_string(),
                TenantOverrides {
                    threshold: Some(7),
                    ..TenantOverrides::default()
                },
            )]
            .into(),
        },
    ]
}

const CANDIDATE_TOML: &str = "name = \"strict\"\n[policy]\nthreshold = 3\nwindow_ms = 1800000\nbase_block_ms = 1800000\npermanent_strike = 4\n[tenants.globex]\nthreshold = 7\n";

/// A trip: (policy, mailbox, strike, blocked_at, permanent).
type T = (String, String, u32, Millis, bool);

/// The naive model of one mailbox under one policy.
#[derive(Default)]
struct Naive {
    counted: VecDeque<Millis>,
    ids: HashSet<String>,
    strikes: u32,
    floor: Option<Millis>,
    permanent: bool,
}

/// The trips of `sets` over `h`, by the rules as a person reads them: an offending message
/// counts once, unless the mailbox is permanently blocked or it was sent before the end of the
/// last block; `threshold` counted messages within `window_ms` trip; strike k blocks for base ×
/// 2^(k−1) from the trip, permanently at `permanent_strike`; the window starts empty again.
/// (The history is in time order but for redeliveries, so the clock is the largest `sent_at`.)
fn naive(h: &[Gen], sets: &[PolicySet]) -> Vec<T> {
    let mut state: HashMap<(usize, usize), Naive> = HashMap::new();
    let mut trips = Vec::new();
    let mut now = Millis::MIN;
    for g in h {
        now = now.max(g.sent_at);
        if !g.kind.is_offending() {
            continue;
        }
        for (i, set) in sets.iter().enumerate() {
            let o = set.tenants.get(TENANTS[g.tenant]);
            let threshold = o.and_then(|o| o.threshold).unwrap_or(set.policy.threshold) as usize;
            let p = &set.policy;
            let s = state.entry((i, g.mailbox)).or_default();
            if s.permanent || s.floor.is_some_and(|f| g.sent_at < f) || s.ids.contains(&g.id) {
                continue;
            }
            s.ids.insert(g.id.clone());
            s.counted.push_back(g.sent_at);
            while s
                .counted
                .front()
                .is_some_and(|&f| f < g.sent_at - p.window_ms)
            {
                s.counted.pop_front();
            }
            if s.counted.len() >= threshold {
                s.strikes += 1;
                s.counted.clear();
                if s.strikes >= p.permanent_strike {
                    s.permanent = true;
                } else {
                    let from = g.sent_at.max(now);
                    s.floor = Some(from + p.base_block_ms * (1 << (s.strikes - 1)));
                }
                let name = mailbox_name(g.mailbox).to_lowercase();
                trips.push((set.name.clone(), name, s.strikes, g.sent_at, s.permanent));
            }
        }
    }
    trips
}

/// Runs the history through the library's backtest; the trips in order, and the backtest.
fn backtest(h: &[Gen], sets: Vec<PolicySet>) -> (Vec<T>, Backtest) {
    let names: Vec<String> = (0..=h.iter().map(|g| g.mailbox).max().unwrap_or(0))
        .map(mailbox_name)
        .collect();
    let trips = Arc::new(Mutex::new(Vec::new()));
    let mut b = Backtest::new(sets);
    let sink = trips.clone();
    b.on_trip(move |t| {
        sink.lock().unwrap().push((
            t.policy.to_string(),
            t.mailbox.to_string(),
            t.strike,
            t.blocked_at,
            t.permanent,
        ))
    });
    for g in h {
        let v = VerdictRef {
            message_id: if g.id.is_empty() { "clean" } else { &g.id },
            tenant_id: TENANTS[g.tenant],
            mailbox: &names[g.mailbox],
            sent_at: g.sent_at,
            verdict: g.kind,
        };
        b.verdict(&v, g.sent_at);
    }
    let t = trips.lock().unwrap().clone();
    (t, b)
}

#[test]
fn a_million_verdicts_trip_as_the_naive_model_says() {
    let h = history(1_000_000, 20_000, 7);
    assert!(h.len() >= 1_000_000);
    let sets = policy_sets();
    let expected = naive(&h, &sets);
    let (got, b) = backtest(&h, sets);
    // A history that exercises the ladder: many trips, second strikes and permanent blocks
    // under the strict policy, and a difference between the two.
    let strict: Vec<&T> = expected.iter().filter(|t| t.0 == "strict").collect();
    assert!(expected.len() > 1000, "{} trips", expected.len());
    let permanent = strict.iter().filter(|t| t.4).count();
    eprintln!(
        "{} verdicts: {} trips (strict {}, of which {permanent} permanent)",
        h.len(),
        expected.len(),
        strict.len()
    );
    assert!(strict.iter().any(|t| t.2 == 2) && permanent > 0);
    assert!(expected.iter().any(|t| t.0 == "live" && t.2 == 2));
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "trip {i} differs");
    }
    // Memory is bounded by the active mailboxes: of 20 000, far fewer were held at once.
    let c = b.counts();
    assert_eq!(c.verdicts as usize, h.len());
    assert!(c.peak_active < 5_000, "peak {} states", c.peak_active);
}

/// The history written as JSON lines (with one line that is not a verdict) and as an Avro
/// object container file (deflate blocks, written by apache-avro).
fn write_files(h: &[Gen], dir: &Path) -> (PathBuf, PathBuf) {
    use std::io::Write;
    let json = dir.join("history.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&json).unwrap());
    writeln!(f, "# generated by tests/backtest.rs").unwrap();
    for (i, g) in h.iter().enumerate() {
        let v = serde_json::json!({
            "message_id": if g.id.is_empty() { format!("c-{i}") } else { g.id.clone() },
            "tenant_id": TENANTS[g.tenant],
            "mailbox": mailbox_name(g.mailbox),
            "sent_at": g.sent_at,
            "verdict": g.kind.as_str(),
        });
        writeln!(f, "{v}").unwrap();
        if i == 10 {
            writeln!(f, "{{\"message_id\": \"x\"}}").unwrap();
        }
    }
    f.flush().unwrap();
    let avro = dir.join("history.avro");
    let schema = RecordType::OutboundVerdict.schema();
    let out = std::fs::File::create(&avro).unwrap();
    let codec = apache_avro::Codec::Deflate(Default::default());
    let mut w = apache_avro::Writer::with_codec(schema, std::io::BufWriter::new(out), codec);
    use apache_avro::types::{Record, Value};
    for (i, g) in h.iter().enumerate() {
        let mut r = Record::new(schema).unwrap();
        r.put(
            "message_id",
            if g.id.is_empty() {
                format!("c-{i}")
            } else {
                g.id.clone()
            },
        );
        r.put("tenant_id", TENANTS[g.tenant]);
        r.put("mailbox", mailbox_name(g.mailbox));
        r.put("sent_at", Value::TimestampMillis(g.sent_at));
        let idx = match g.kind {
            VerdictKind::Clean => 0,
            VerdictKind::Spam => 1,
            VerdictKind::Virus => 2,
        };
        r.put("verdict", Value::Enum(idx, g.kind.as_str().into()));
        r.put("recipient_count", Value::Union(0, Box::new(Value::Null)));
        r.put("gateway_id", Value::Union(0, Box::new(Value::Null)));
        w.append(r).unwrap();
    }
    w.flush().unwrap();
    drop(w.into_inner().unwrap());
    (json, avro)
}

/// `mailguard backtest --file <input> --candidate strict.toml`, writing JSON, HTML and trips
/// into `dir` under `stem`; returns the JSON report and the trips.
fn run_binary(
    input: &Path,
    dir: &Path,
    stem: &str,
    more: &[(&str, &str)],
) -> (serde_json::Value, Vec<T>) {
    let mut candidates = vec![dir.join("strict.toml")];
    std::fs::write(&candidates[0], CANDIDATE_TOML).unwrap();
    for (name, toml) in more {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        candidates.push(path);
    }
    let json = dir.join(format!("{stem}.json"));
    let mut cmd = Command::new(common::binary());
    cmd.arg("backtest").arg("--file").arg(input);
    for c in &candidates {
        cmd.arg("--candidate").arg(c);
    }
    let out = cmd
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(dir.join(format!("{stem}.html")))
        .arg("--trips")
        .arg(dir.join(format!("{stem}.trips")))
        .env_remove("MAILGUARD_CONFIG")
        .output()
        .expect("run mailguard backtest");
    assert!(
        out.status.success(),
        "backtest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No progress bar when stderr is not a terminal.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("verdicts,"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("JSON report");
    let trips = std::fs::read_to_string(dir.join(format!("{stem}.trips")))
        .unwrap()
        .lines()
        .map(|l| {
            let t: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                t["policy"].as_str().unwrap().to_string(),
                t["mailbox"].as_str().unwrap().to_string(),
                t["strike"].as_u64().unwrap() as u32,
                t["blocked_at"].as_i64().unwrap(),
                t["permanent"].as_bool().unwrap(),
            )
        })
        .collect();
    (report, trips)
}

/// Where the browser test's artefacts go (the screenshot): under the target dir.
fn artefacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let d = target.join("backtest-report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn both_file_formats_give_the_same_report_and_the_naive_trips() {
    let h = history(60_000, 1_500, 11);
    let expected = naive(&h, &policy_sets());
    let dir = tempfile::tempdir().unwrap();
    let (json, avro) = write_files(&h, dir.path());
    let (mut from_json, json_trips) = run_binary(&json, dir.path(), "json", &[]);
    let (mut from_avro, avro_trips) = run_binary(&avro, dir.path(), "avro", &[]);
    assert_eq!(json_trips, expected);
    assert_eq!(avro_trips, expected);
    // The malformed line is counted and named; nothing else was refused.
    assert_eq!(from_json["input"]["rejected"], 1);
    let why = from_json["input"]["rejected_examples"][0].as_str().unwrap();
    assert!(
        why.starts_with("line 13:") && why.contains("missing field"),
        "{why}"
    );
    assert_eq!(from_avro["input"]["rejected"], 0);
    for r in [&mut from_json, &mut from_avro] {
        let input = r["input"].as_object_mut().unwrap();
        for k in ["source", "rejected", "rejected_examples"] {
            input.remove(k);
        }
    }
    assert_eq!(from_json, from_avro);
    // The report's figures are the trips'.
    let total = &from_json["total"]["policies"];
    for (i, name) in ["live", "strict"].iter().enumerate() {
        let mine: Vec<&T> = expected.iter().filter(|t| t.0 == *name).collect();
        let mailboxes: HashSet<&str> = mine.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(total[i]["name"], *name);
        assert_eq!(total[i]["trips"], mine.len());
        assert_eq!(total[i]["blocked_mailboxes"], mailboxes.len());
        assert_eq!(
            total[i]["permanent_blocks"],
            mine.iter().filter(|t| t.4).count()
        );
    }
    let live: HashSet<&str> = expected
        .iter()
        .filter(|t| t.0 == "live")
        .map(|t| t.1.as_str())
        .collect();
    let strict: HashSet<&str> = expected
        .iter()
        .filter(|t| t.0 == "strict")
        .map(|t| t.1.as_str())
        .collect();
    let d = &from_json["total"]["differences"][1];
    assert_eq!(
        (d["blocked_by"].as_str(), d["not_by"].as_str()),
        (Some("strict"), Some("live"))
    );
    assert_eq!(d["count"], strict.difference(&live).count());
    let hours: u64 = from_json["trips_per_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trips"][1].as_u64().unwrap())
        .sum();
    assert_eq!(
        hours as usize,
        expected.iter().filter(|t| t.0 == "strict").count()
    );
    std::fs::copy(
        dir.path().join("avro.html"),
        artefacts().join("report.html"),
    )
    .unwrap();
}

/// `scripts/browser-env`: the directory holding playwright-core (installed on demand).
fn browser_env() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser-env");
    let out = Command::new(script).output().expect("scripts/browser-env");
    assert!(
        out.status.success(),
        "scripts/browser-env failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn the_html_report_renders_in_chromium_with_both_plots() {
    let h = history(60_000, 1_500, 11);
    let dir = tempfile::tempdir().unwrap();
    let (_, avro) = write_files(&h, dir.path());
    // A third policy, more lenient than the live one: some mailboxes only live blocks.
    let lenient = "[policy]\nthreshold = 8\nwindow_ms = 300000\n";
    let (report, _) = run_binary(&avro, dir.path(), "r", &[("lenient", lenient)]);
    let d = &report["total"]["differences"][1];
    assert_eq!(
        (d["blocked_by"].as_str(), d["not_by"].as_str()),
        (Some("live"), Some("lenient"))
    );
    assert!(d["count"].as_u64().unwrap() > 0, "{d}");
    let page = dir.path().join("r.html");
    let modules = browser_env();
    let shot = artefacts().join("report.png");
    let _ = std::fs::remove_file(&shot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/render-report.cjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&page)
        .arg(&shot)
        .env("NODE_PATH", &modules)
        .env(
            "MAILGUARD_CHROMIUM",
            std::env::var("MAILGUARD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        )
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "the browser check failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["title"], "mailguard backtest");
    let plots = r["plots"].as_array().unwrap();
    assert_eq!(plots.len(), 2, "{r}");
    let by_id = |id: &str| {
        plots
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("no plot {id}: {r}"))
    };
    for (id, axis, caption) in [
        ("trips-per-hour", "hour (UTC)", "Trips per hour"),
        (
            "time-to-block",
            "time to block",
            "Time from first offending message to block",
        ),
    ] {
        let p = by_id(id);
        // Drawn at its size, on screen.
        assert!(
            p["width"].as_f64().unwrap() >= 900.0 && p["height"].as_f64().unwrap() >= 350.0,
            "{p}"
        );
        let texts: Vec<&str> = p["texts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        for want in [axis, "trips", caption, "live", "strict", "lenient"] {
            assert!(texts.contains(&want), "{id}: no text `{want}` in {texts:?}");
        }
        // Tick labels on both axes: numbers on the y axis.
        assert!(
            texts.iter().filter(|t| t.parse::<u64>().is_ok()).count() >= 3,
            "{id}: {texts:?}"
        );
    }
    // The lines of both policies, and bars with a height.
    assert!(by_id("trips-per-hour")["lines"].as_u64().unwrap() >= 3);
    assert!(by_id("time-to-block")["bars"].as_u64().unwrap() >= 3);
    assert!(r["tables"].as_u64().unwrap() >= 4, "{r}");
    let png = std::fs::read(&shot).expect("screenshot");
    let (w, hgt) = png_size(&png);
    assert!(w >= 1000 && hgt >= 1000, "screenshot {w}×{hgt}");
    assert!(
        png.len() > 20_000,
        "a screenshot of {} bytes is blank",
        png.len()
    );
    if std::env::var_os("MAILGUARD_WRITE_REPORT_PNG").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/backtest-report.png");
        std::fs::copy(&shot, docs).unwrap();
    }
}

#[test]
fn the_live_backtest_of_a_processed_topic_equals_the_published_blocks() {
    let (cfg, _dir) = common::test_config(3);
    common::create_topics(&cfg);
    let codec = Codec::default();
    let now = common::now_ms();
    // 8 mailboxes send 5 offending messages within a minute (one block each), 4 mailboxes
    // 4 (none), one sends 12 (one block: the rest come while it is blocked), and CLEAN noise.
    let mut records = Vec::new();
    let mut expected_mailboxes = Vec::new();
    for (m, n) in (0..13).map(|m| {
        (
            m,
            if m < 8 {
                5
            } else if m < 12 {
                4
            } else {
                12
            },
        )
    }) {
        let mailbox = format!("bt{m}@example.com");
        if n >= 5 {
            expected_mailboxes.push(mailbox.clone());
        }
        for i in 0..n {
            let kind = if i % 2 == 0 {
                VerdictKind::Spam
            } else {
                VerdictKind::Virus
            };
            let v =
                common::verdict_bytes("acme", &mailbox, &format!("{m}-{i}"), now + i * 1000, kind);
            records.push((mailbox.clone(), v));
            let clean = common::verdict_bytes(
                "acme",
                &mailbox,
                &format!("{m}-c{i}"),
                now + i * 1000,
                VerdictKind::Clean,
            );
            records.push((mailbox.clone(), clean));
        }
    }
    common::produce_keyed(&cfg.topics.verdicts, &records);
    // Refused by both: a key that is not a normalised mailbox.
    let upper = common::verdict_bytes("acme", "Bt@example.com", "u", now, VerdictKind::Spam);
    common::produce(
        &cfg.topics.verdicts,
        &[(Some("Bt@example.com"), Some(upper))],
    );
    let running = common::start(&cfg, Arc::new(mailguard::timers::SystemClock));
    let published = common::consume_until(&cfg.topics.blocks, Duration::from_secs(60), |r| {
        r.len() >= expected_mailboxes.len()
    });
    running.stop().unwrap();
    // Nothing more was published.
    common::consume_exactly(
        &cfg.topics.blocks,
        published.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    let mut blocks: Vec<(String, u32, Millis, String)> = published
        .iter()
        .map(
            |r| match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
                Effect::Block(b) => {
                    assert_eq!(b.state, BlockState::Blocked, "{b:?}");
                    (b.mailbox, b.strike, b.blocked_at, b.incident_id)
                }
                other => panic!("not a block: {other:?}"),
            },
        )
        .collect();
    blocks.sort();
    assert_eq!(blocks.iter().map(|b| b.0.clone()).collect::<Vec<_>>(), {
        let mut e = expected_mailboxes.clone();
        e.sort();
        e
    });

    let dir = tempfile::tempdir().unwrap();
    let trips_path = dir.path().join("trips.jsonl");
    let args = BacktestArgs {
        topic: Some(String::new()),
        from: Some(now - 60_000),
        json: Some(dir.path().join("report.json")),
        trips: Some(trips_path.clone()),
        ..BacktestArgs::default()
    };
    let report = mailguard::backtest::backtest(&cfg, &args).expect("backtest");
    assert_eq!(report.input.verdicts as usize, records.len());
    assert_eq!(report.input.rejected, 1);
    let why = &report.input.rejected_examples[0];
    assert!(why.contains("not a normalised mailbox"), "{why}");
    let mut trips: Vec<(String, u32, Millis, String)> = std::fs::read_to_string(&trips_path)
        .unwrap()
        .lines()
        .map(|l| {
            let t: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                t["mailbox"].as_str().unwrap().to_string(),
                t["strike"].as_u64().unwrap() as u32,
                t["blocked_at"].as_i64().unwrap(),
                t["incident_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    trips.sort();
    assert_eq!(trips, blocks);
    assert_eq!(report.total.policies[0].trips as usize, blocks.len());
    // A range that starts after every record reads nothing.
    let later = BacktestArgs {
        from: Some(common::now_ms() + 3_600_000),
        trips: None,
        ..args
    };
    let empty = mailguard::backtest::backtest(&cfg, &later).expect("backtest");
    assert_eq!(
        (empty.input.verdicts, empty.total.policies[0].trips),
        (0, 0)
    );
}

#[test]
fn a_terminal_gets_a_progress_line() {
    let h = history(5_000, 200, 3);
    let dir = tempfile::tempdir().unwrap();
    let (json, _) = write_files(&h, dir.path());
    // `script` gives the command a terminal and copies what it writes there to our stdout.
    let cmd = format!(
        "{} backtest --file {} --json {}",
        common::binary().display(),
        json.display(),
        dir.path().join("r.json").display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("MAILGUARD_CONFIG")
        .output()
        .expect("script (util-linux)");
    assert!(out.status.success(), "{out:?}");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(
        tty.contains("100.0 %") && tty.contains(&format!("{} verdicts,", h.len())),
        "no progress line on the terminal: {tty:?}"
    );
}

/// With a schema registry: verdicts in Confluent framing (the schema registered under the
/// topic's subject, as `produce` and any Confluent serializer do) are read through the
/// registry's id.
#[test]
fn a_backtest_reads_registry_framed_verdicts() {
    let (mut cfg, _dir) = common::test_config(2);
    cfg.registry.url = std::env::var("MAILGUARD_TEST_REGISTRY").expect(
        "MAILGUARD_TEST_REGISTRY is not set: this test needs the real registry; run `make test`",
    );
    common::create_topics(&cfg);
    let topic = cfg.topics.verdicts.clone();
    let codec =
        mailguard::wiring::codec_for(&cfg, &[(topic.as_str(), RecordType::OutboundVerdict)])
            .expect("codec with the registry");
    let now = common::now_ms();
    let records: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            let v = mailguard::policy::Verdict {
                message_id: format!("r{i}"),
                tenant_id: "acme".into(),
                mailbox: "reg@example.com".into(),
                sent_at: now + i * 1000,
                verdict: VerdictKind::Spam,
            };
            let mut out = Vec::new();
            codec.encode_verdict(&v, &mut out).unwrap();
            assert_eq!(out[0], 0, "Confluent framing (magic byte 0)");
            ("reg@example.com".to_string(), out)
        })
        .collect();
    common::produce_keyed(&topic, &records);
    let dir = tempfile::tempdir().unwrap();
    let args = BacktestArgs {
        topic: Some(String::new()),
        json: Some(dir.path().join("report.json")),
        ..BacktestArgs::default()
    };
    let r = mailguard::backtest::backtest(&cfg, &args).expect("backtest");
    assert_eq!(
        (r.input.verdicts, r.input.rejected),
        (6, 0),
        "{:?}",
        r.input
    );
    assert_eq!(r.total.policies[0].trips, 1);
}
