//! The dashboard (deploy/grafana/mailguard.json) and the alert rules
//! (deploy/prometheus/mailguard-rules.yaml) use only metrics that a real mailguard exports: a
//! pipeline runs in-process on the real broker, trips a mailbox so the event counters move, and
//! its `/metrics` is scraped over HTTP as Prometheus would. (scripts/check-ops checks that every
//! query parses, with promtool.)

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mailguard::policy::VerdictKind;
use mailguard::timers::SystemClock;

const T: Duration = Duration::from_secs(60);

/// Series that Prometheus itself writes for every target.
const PROMETHEUS_OWN: &[&str] = &["up", "scrape_duration_seconds"];

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Metric names in PromQL text: every `mailguard_*` / `process_*` token, and every identifier
/// directly followed by a label matcher `{` (a selector, whatever its prefix).
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = promql.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let word = &promql[start..i];
            let selector = bytes.get(i) == Some(&b'{');
            let ours = word.starts_with("mailguard_") || word.starts_with("process_");
            if (ours || selector) && !word.starts_with(|c: char| c.is_ascii_digit()) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every query of the dashboard.
fn dashboard_queries() -> Vec<String> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<String>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().expect("target expr").to_string());
            }
            walk(p["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let dash: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/mailguard.json")).expect("dashboard JSON");
    let mut out = Vec::new();
    walk(dash["panels"].as_array().expect("panels"), &mut out);
    out
}

/// The `expr:` of every rule (single-line or a `|` block).
fn rule_queries() -> Vec<String> {
    let text = repo_file("deploy/prometheus/mailguard-rules.yaml");
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        if rest.trim() == "|" {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                    break;
                }
                block.push_str(lines.next().unwrap().trim());
                block.push('\n');
            }
            out.push(block);
        } else {
            out.push(rest.trim().to_string());
        }
    }
    out
}

/// GET /metrics like a Prometheus scrape.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read /metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").expect("HTTP body").1;
    body.to_string()
}

/// Whether the exposition has a sample of `name` (with or without labels).
fn exported(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[test]
fn query_parsing_finds_the_metric_names() {
    let names = metric_names(
        r#"sum by (le) (rate(mailguard_restore_seconds_bucket{job="mailguard", le="60"}[5m])) / up{job="mailguard"} > 0.5e3"#,
    );
    let want: BTreeSet<String> = ["mailguard_restore_seconds_bucket", "up"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
    assert!(rule_queries().len() >= 9, "{:?}", rule_queries());
    assert!(dashboard_queries().len() >= 20);
}

#[test]
fn every_metric_the_dashboard_and_the_alert_rules_use_is_exported() {
    let (cfg, _dir) = test_config(2);
    let running = start(&cfg, Arc::new(SystemClock));
    running.wait_ready(T);

    // /metrics served the way `mailguard run` serves it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, serve) = rt
        .block_on(mailguard::http::bind(
            "127.0.0.1:0",
            running.metrics.clone(),
            running.health.clone(),
            None,
            async {
                let _ = stopped.await;
            },
        ))
        .expect("bind /metrics");
    let server = rt.spawn(serve);

    // A trip: five spam messages within a second (no directory entry: the scan is skipped).
    let mailbox = "ops@example.com";
    let now = now_ms();
    let records: Vec<(Option<&str>, Option<Vec<u8>>)> = (0..5)
        .map(|i| {
            let id = format!("ops-{i}");
            let sent_at = now - 5_000 + i * 1_000;
            let out = verdict_bytes("tenant-ops", mailbox, &id, sent_at, VerdictKind::Spam);
            (Some(mailbox), Some(out))
        })
        .collect();
    produce(&cfg.topics.verdicts, &records);
    consume_until(&cfg.topics.blocks, T, |r| !r.is_empty());

    // Consumer lag comes with librdkafka's statistics (every 5 s); the trip's counters with the
    // commit that published the block.
    let deadline = Instant::now() + T;
    let text = loop {
        let text = scrape(addr);
        if exported(&text, "mailguard_consumer_lag")
            && text.contains("mailguard_trips_total 1")
            && text.contains("mailguard_state_mailboxes{")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "lag, trip or state size never showed up:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    let mut used = BTreeSet::new();
    for q in dashboard_queries().iter().chain(&rule_queries()) {
        used.extend(metric_names(q));
    }
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !PROMETHEUS_OWN.contains(&n.as_str()) && !exported(&text, n))
        .collect();
    assert!(
        missing.is_empty(),
        "used by the dashboard or the alert rules but not exported: {missing:?}\n{text}"
    );
    // The label values the rules select on exist too.
    for series in [
        "mailguard_restore_seconds_bucket{le=\"60\"}",
        "mailguard_transactions_total{result=\"aborted\"}",
        "mailguard_ready 1",
        "mailguard_build_info{version=\"",
        &format!(
            "mailguard_consumer_lag{{partition=\"0\",topic=\"{}\"}}",
            cfg.topics.verdicts
        ),
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }

    let _ = stop_http.send(());
    rt.block_on(server).unwrap().unwrap();
    running.stop().expect("pipeline stops cleanly");
}
