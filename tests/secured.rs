//! mailguard on a secured cluster, as a platform team runs it: SASL_SSL with SCRAM-SHA-512, TLS
//! from the cluster's CA, and KRaft's StandardAuthorizer enforcing ACLs. The principal gets
//! exactly the grants README "Connect to your cluster" lists (`kafka-local grant-mailguard`), and
//! every misconfiguration stops mailguard at start with a message naming the cause and the
//! resource, never the secret.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mailguard::config::Config;
use mailguard::policy::{Millis, VerdictKind};
use mailguard::timers::SystemClock;

use common::Cluster;

/// The secured broker of this test run (`make test` starts it).
fn secure_dir() -> PathBuf {
    PathBuf::from(std::env::var("MAILGUARD_TEST_SECURE_DIR").expect(
        "MAILGUARD_TEST_SECURE_DIR is not set: secured tests need the SASL_SSL broker; run `make test`",
    ))
}

fn secure_bootstrap() -> String {
    std::env::var("MAILGUARD_TEST_SECURE_BOOTSTRAP")
        .expect("MAILGUARD_TEST_SECURE_BOOTSTRAP is not set; run `make test`")
}

fn kafka_local(args: &[&str]) -> String {
    common::kafka_local(&secure_dir(), args)
}

/// librdkafka properties of `user` on the secured broker; the password as a `${file:}`
/// reference (what mailguard is given) or read (what the test's own clients use).
fn sasl_props(user: &str, password: &str) -> BTreeMap<String, String> {
    let ca = secure_dir().join("ca.pem");
    [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", user),
        ("sasl.password", password),
        ("ssl.ca.location", ca.to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn password_file(user: &str) -> PathBuf {
    secure_dir().join("users").join(format!("{user}.password"))
}

fn read_password(user: &str) -> String {
    std::fs::read_to_string(password_file(user))
        .unwrap()
        .trim()
        .to_string()
}

/// The super user, for the test's own producers and readers.
fn admin() -> Cluster {
    Cluster {
        bootstrap: secure_bootstrap(),
        props: sasl_props("admin", &read_password("admin")),
    }
}

/// A deployment: topics created by the admin, a SCRAM user granted exactly mailguard's ACLs.
/// Shared by the tests of this file (a grant costs several JVM starts).
struct Deployment {
    cfg: Config,
    user: String,
    _dir: tempfile::TempDir,
}

/// The pipeline's grants only (`api.enabled` off).
fn deployment() -> &'static Deployment {
    static D: OnceLock<Deployment> = OnceLock::new();
    D.get_or_init(|| grant(false))
}

/// The pipeline's and the API's grants (`grant-mailguard --api`).
fn api_deployment() -> &'static Deployment {
    static D: OnceLock<Deployment> = OnceLock::new();
    D.get_or_init(|| grant(true))
}

fn grant(api: bool) -> Deployment {
    let (mut cfg, dir) = common::test_config(2);
    cfg.kafka.bootstrap_servers = secure_bootstrap();
    cfg.topics.create_missing = false;
    let mut admin_cfg = cfg.clone();
    admin_cfg.kafka.client_properties = admin().props;
    common::create_topics(&admin_cfg);
    let user = common::unique("mg");
    kafka_local(&["user", "add", &user]);
    let t = &cfg.topics;
    let topics = [
        ("verdicts", &t.verdicts),
        ("commands", &t.commands),
        ("mailboxes", &t.mailboxes),
        ("devices", &t.devices),
        ("tenants", &t.tenants),
        ("changelog", &t.changelog),
        ("blocks", &t.blocks),
        ("scan_requests", &t.scan_requests),
        ("alerts", &t.alerts),
        ("events", &t.events),
        ("dlq", &t.dlq),
        ("exemptions", &t.exemptions),
        ("scan_results", &t.scan_results),
        ("scan_results_routed", &t.scan_results_routed),
    ]
    .iter()
    .map(|(role, name)| format!("{role}={name}"))
    .collect::<Vec<_>>()
    .join(",");
    let mut args = vec![
        "grant-mailguard",
        "--user",
        &user,
        "--group",
        &cfg.kafka.group_id,
        "--transactional-id-prefix",
        &cfg.kafka.transactional_id_prefix,
        "--topics",
        &topics,
    ];
    if api {
        args.push("--api");
    }
    kafka_local(&args);
    // mailguard is given the password as a file reference, as a mounted Secret would be.
    let reference = format!("${{file:{}}}", password_file(&user).display());
    cfg.kafka.client_properties = sasl_props(&user, &reference);
    Deployment {
        cfg,
        user,
        _dir: dir,
    }
}

/// `cfg` with the secret references resolved, as `Config::load` would leave it.
fn resolved(cfg: &Config) -> Config {
    let text = toml::to_string(cfg).unwrap();
    Config::from_sources(&text, Path::new("test.toml"), std::env::vars()).expect("valid config")
}

fn verdict(mailbox: &str, id: &str, sent_at: Millis) -> Vec<u8> {
    common::verdict_bytes("acme", mailbox, id, sent_at, VerdictKind::Spam)
}

/// Five spam verdicts of `mailbox` within a minute (ids `<prefix>-0` …), produced as the admin.
fn trip(cfg: &Config, mailbox: &str, prefix: &str) {
    let t0 = common::now_ms() - 60_000;
    let records: Vec<(Option<&str>, Option<Vec<u8>>)> = (0..5)
        .map(|i| {
            (
                Some(mailbox),
                Some(verdict(mailbox, &format!("{prefix}-{i}"), t0 + i * 1_000)),
            )
        })
        .collect();
    common::produce_on(&admin(), &cfg.topics.verdicts, &records);
}

#[test]
fn exactly_once_over_sasl_ssl_with_only_the_documented_acls() {
    let d = deployment();
    let cfg = resolved(&d.cfg);
    let running = common::start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(90));
    let (timeout, settle) = (Duration::from_secs(60), Duration::from_secs(2));
    // An exemption of a domain: written to mailguard.exemptions in the transaction and read
    // back by the table reader, both with only the documented ACLs.
    let mut cmd = Vec::new();
    let c = mailguard::policy::Command {
        command_id: common::unique("cmd"),
        mailbox: "*@exempt.example.com".into(),
        tenant_id: "acme".into(),
        kind: mailguard::policy::CommandKind::ExemptionPut,
        actor: "ada".into(),
        actor_role: mailguard::policy::ActorRole::Admin,
        ticket: String::new(),
        issued_at: common::now_ms(),
        reason: Some("newsletter".into()),
        expires_at: None,
    };
    mailguard::codec::Codec::default()
        .encode_command(&c, &mut cmd)
        .unwrap();
    common::produce_on(
        &admin(),
        &cfg.topics.commands,
        &[(Some(c.mailbox.as_str()), Some(cmd))],
    );
    let x = common::consume_exactly_on(&admin(), &cfg.topics.exemptions, 1, timeout, settle);
    assert_eq!(x[0].key.as_deref(), Some("acme/*@exempt.example.com"));
    let tables = "mailguard_table_records_total{table=\"exemptions\"} 1";
    let deadline = Instant::now() + timeout;
    while !running.metrics.render().contains(tables) {
        assert!(
            Instant::now() < deadline,
            "the exemptions table was not read"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    trip(&cfg, "news@exempt.example.com", "x");
    let mailbox = "secure@example.com";
    trip(&cfg, mailbox, "s");
    let blocks = common::consume_exactly_on(&admin(), &cfg.topics.blocks, 1, timeout, settle);
    assert_eq!(blocks[0].key.as_deref(), Some(mailbox));
    let alerts = common::consume_exactly_on(&admin(), &cfg.topics.alerts, 2, timeout, settle);
    let codec = mailguard::codec::Codec::default();
    let kinds: Vec<_> = alerts
        .iter()
        .map(
            |r| match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
                mailguard::policy::Effect::Alert(a) => (a.mailbox, a.kind),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert!(
        kinds.contains(&(
            "news@exempt.example.com".into(),
            mailguard::policy::AlertKind::ExemptTrip
        )),
        "{kinds:?}"
    );
    // Owner unknown: MAILBOX_BLOCKED, SCAN_SKIPPED, ALERT_SENT; and EXEMPTION_ADDED,
    // TRIP_EXEMPTED, ALERT_SENT.
    common::consume_exactly_on(&admin(), &cfg.topics.events, 6, timeout, settle);
    common::consume_exactly_on(&admin(), &cfg.topics.dlq, 0, timeout, settle);
    running.stop().expect("pipeline ended cleanly");
}

/// Scan results over SASL_SSL with only the documented ACLs: read from `endpoint.scan-results`
/// by the group, re-keyed onto `mailguard.scan-results` in the transaction, read back by the
/// partition owning the incident, which ends it.
#[test]
fn scan_results_end_an_incident_over_sasl_ssl_with_only_the_documented_acls() {
    static D: OnceLock<Deployment> = OnceLock::new();
    let d = D.get_or_init(|| grant(false));
    let cfg = resolved(&d.cfg);
    let codec = mailguard::codec::Codec::default();
    let mailbox = "scanned@example.com";
    let (owner, devices) = common::owner_records(mailbox, "acme", "o-s", &["d-1", "d-2"]);
    // In the tables before the pipeline starts (it reads them to their end first).
    common::produce_on(
        &admin(),
        &cfg.topics.mailboxes,
        &[(Some(mailbox), Some(owner))],
    );
    common::produce_on(
        &admin(),
        &cfg.topics.devices,
        &[(Some("o-s"), Some(devices))],
    );
    let running = common::start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(90));
    let (timeout, settle) = (Duration::from_secs(60), Duration::from_secs(2));
    trip(&cfg, mailbox, "r");
    let requests =
        common::consume_exactly_on(&admin(), &cfg.topics.scan_requests, 2, timeout, settle);
    let results: Vec<(Option<&str>, Option<Vec<u8>>)> = requests
        .iter()
        .map(|r| {
            let mailguard::policy::Effect::Scan(q) =
                codec.decode_effect(r.value.as_deref().unwrap()).unwrap()
            else {
                panic!("a scan request")
            };
            let res = mailguard::policy::ScanResult {
                request_id: q.request_id,
                incident_id: q.incident_id,
                tenant_id: q.tenant_id,
                device_id: q.device_id,
                mailbox: Some(q.mailbox),
                status: mailguard::policy::ScanStatus::Clean,
                threats: Vec::new(),
                started_at: q.requested_at,
                completed_at: q.requested_at + 1,
            };
            let mut out = Vec::new();
            codec.encode_scan_result(&res, &mut out).unwrap();
            (r.key.as_deref(), Some(out))
        })
        .collect();
    common::produce_on(&admin(), &cfg.topics.scan_results, &results);
    let alerts = common::consume_exactly_on(&admin(), &cfg.topics.alerts, 2, timeout, settle);
    let update = alerts
        .iter()
        .find_map(
            |r| match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
                mailguard::policy::Effect::Alert(a)
                    if a.kind == mailguard::policy::AlertKind::IncidentUpdate =>
                {
                    Some(a)
                }
                _ => None,
            },
        )
        .expect("the incident's update alert");
    assert!(
        update
            .summary
            .starts_with(&format!("Incident of {mailbox} remediated: 2 of 2")),
        "{}",
        update.summary
    );
    let routed = common::consume_exactly_on(
        &admin(),
        &cfg.topics.scan_results_routed,
        2,
        timeout,
        settle,
    );
    assert!(routed.iter().all(|r| r.key.as_deref() == Some(mailbox)));
    // MAILBOX_BLOCKED, 2 × SCAN_REQUESTED, ALERT_SENT; 2 × SCAN_COMPLETED,
    // INCIDENT_REMEDIATED, ALERT_SENT.
    common::consume_exactly_on(&admin(), &cfg.topics.events, 8, timeout, settle);
    common::consume_exactly_on(&admin(), &cfg.topics.dlq, 0, timeout, settle);
    running.stop().expect("pipeline ended cleanly");
}

/// How mailguard stopped: the one-line error it ends with, and everything it wrote to stderr
/// (librdkafka's own log lines included, where a secret must not appear either).
struct Failure {
    message: String,
    stderr: String,
}

/// `mailguard backtest --topic` over SASL_SSL with only README's ACLs: it reads the verdicts
/// (assigned, read_committed, under the `G.reader.` groups) and finds the trip.
#[test]
fn a_backtest_reads_the_verdicts_over_sasl_ssl_with_only_the_documented_acls() {
    let d = grant(false);
    let cfg = resolved(&d.cfg);
    trip(&cfg, "bt@acme.example", "bt");
    let dir = tempfile::tempdir().unwrap();
    let args = mailguard::backtest::BacktestArgs {
        topic: Some(String::new()),
        json: Some(dir.path().join("report.json")),
        ..mailguard::backtest::BacktestArgs::default()
    };
    let r = mailguard::backtest::backtest(&cfg, &args).expect("backtest over SASL_SSL");
    assert_eq!((r.input.verdicts, r.input.rejected), (5, 0));
    let live = &r.tenants["acme"].policies[0];
    assert_eq!((live.trips, live.blocked_mailboxes), (1, 1));
}

/// Runs the binary on `cfg` and returns how it failed once it exited.
fn run_expecting_failure(cfg: &Config) -> Failure {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailguard.toml");
    let mut cfg = cfg.clone();
    cfg.state.dir = dir.path().join("state");
    // Its own member of the group (static membership would fence the other tests' members).
    cfg.kafka.instance_id = common::unique("i");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let mut child = Command::new(common::binary())
        .args(["--config", path.to_str().unwrap(), "run"])
        .env_remove("MAILGUARD_CONFIG")
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailguard");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!status.success(), "mailguard should have failed: {err}");
            // main() ends a failed run with "mailguard: <cause>".
            let message = err
                .lines()
                .rev()
                .find(|l| l.starts_with("mailguard: "))
                .unwrap_or_else(|| panic!("no final error line: {err}"))
                .to_string();
            return Failure {
                message,
                stderr: err,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "mailguard did not stop within 90 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_wrong_password_stops_mailguard_at_start_naming_the_cause_not_the_secret() {
    let d = deployment();
    let mut cfg = d.cfg.clone();
    let wrong = "not-the-password-4711";
    cfg.kafka
        .client_properties
        .insert("sasl.password".into(), wrong.into());
    let f = run_expecting_failure(&cfg);
    let err = &f.message;
    assert!(
        err.contains("SASL authentication error") && err.contains("invalid credentials"),
        "names the cause: {err}"
    );
    assert!(
        err.contains(&secure_bootstrap()),
        "names the cluster: {err}"
    );
    for secret in [wrong.to_string(), read_password(&d.user)] {
        assert!(
            !f.stderr.contains(&secret),
            "a password leaked: {}",
            f.stderr
        );
    }
}

#[test]
fn an_untrusted_certificate_stops_mailguard_at_start_naming_the_cause() {
    let d = deployment();
    let mut cfg = d.cfg.clone();
    // The system's public roots do not include the cluster's private CA.
    cfg.kafka.client_properties.insert(
        "ssl.ca.location".into(),
        "/etc/ssl/certs/ca-certificates.crt".into(),
    );
    let f = run_expecting_failure(&cfg);
    let err = &f.message;
    assert!(
        err.contains("SSL") && err.contains("certificate"),
        "names the TLS failure: {err}"
    );
    assert!(
        !f.stderr.contains(&read_password(&d.user)),
        "the password leaked: {}",
        f.stderr
    );
}

#[test]
fn a_missing_acl_stops_mailguard_at_start_naming_the_resource() {
    let d = deployment();
    // An output topic the principal was granted nothing on.
    let mut cfg = d.cfg.clone();
    cfg.topics.alerts = format!("{}.ungranted", d.cfg.topics.alerts);
    let mut admin_cfg = cfg.clone();
    admin_cfg.kafka.client_properties = admin().props;
    common::create_topics(&admin_cfg);
    let f = run_expecting_failure(&cfg);
    let err = &f.message;
    assert!(
        err.contains(&format!("Topic:{}", cfg.topics.alerts)),
        "names the topic: {err}"
    );
    assert!(
        err.contains(&format!("User:{}", d.user)),
        "names the principal: {err}"
    );
}

#[test]
fn a_missing_group_acl_stops_mailguard_at_start_naming_the_group() {
    let d = deployment();
    // A group the principal was granted nothing on (nor on its `.reader.` prefix).
    let mut cfg = d.cfg.clone();
    cfg.kafka.group_id = common::unique("ungranted-group");
    let f = run_expecting_failure(&cfg);
    let err = &f.message;
    assert!(
        err.contains(&format!("Group:{}", cfg.kafka.group_id)),
        "names the group: {err}"
    );
    assert!(
        err.contains(&format!("User:{}", d.user)),
        "names the principal: {err}"
    );
}

#[test]
fn a_missing_transactional_id_acl_stops_mailguard_at_start_naming_the_id() {
    let d = deployment();
    // A transactional-id prefix outside the granted `T-` prefix.
    let mut cfg = d.cfg.clone();
    cfg.kafka.transactional_id_prefix = common::unique("ungranted-txn");
    let f = run_expecting_failure(&cfg);
    let err = &f.message;
    assert!(
        err.contains(&format!(
            "TransactionalId:{}",
            cfg.kafka.transactional_id_prefix
        )),
        "names the transactional id: {err}"
    );
    assert!(
        err.contains(&format!("User:{}", d.user)),
        "names the principal: {err}"
    );
}

#[test]
fn a_group_with_describe_but_not_read_stops_mailguard_naming_the_group_and_read() {
    let d = deployment();
    // Under the granted `G.reader.` prefix: its readers' groups (`G.reader.x.reader.…`) may be
    // described, so the tables load, but the group itself lacks READ, which joining needs.
    let mut cfg = d.cfg.clone();
    cfg.kafka.group_id = format!("{}.reader.{}", d.cfg.kafka.group_id, common::unique("g"));
    let f = run_expecting_failure(&cfg);
    let err = &f.message;
    assert!(
        err.contains(&format!("READ on Group:{}", cfg.kafka.group_id)),
        "names the group and the operation: {err}"
    );
}

/// `cfg` with the API on `port`, one all-tenant SUPPORT token (`secret`).
fn with_api(cfg: &Config, port: u16, secret: &str) -> Config {
    let mut cfg = cfg.clone();
    cfg.api.enabled = true;
    cfg.http.listen = format!("127.0.0.1:{port}");
    cfg.api.tokens = vec![mailguard::config::ApiToken {
        sha256: mailguard::api::auth::hash_token(secret),
        principal: "support-1".into(),
        role: mailguard::config::ApiRole::Support,
        tenant: None,
    }];
    cfg
}

fn api_call(url: &str, token: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let answer = match body {
        None => agent.get(url).header("Authorization", &auth).call(),
        Some(b) => agent
            .post(url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(b),
    };
    match answer {
        Ok(mut r) => {
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (
                r.status().as_u16(),
                serde_json::from_str(&text).unwrap_or_default(),
            )
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// Polls `url` until `ok` holds for its answer (or fails after `within`, showing the last one).
fn await_api(
    url: &str,
    token: &str,
    within: Duration,
    ok: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, v) = api_call(url, token, None);
        if ok(status, &v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{url}: last answer {status} {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_api_answers_over_sasl_ssl_with_only_the_documented_acls() {
    let d = api_deployment();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = common::unique("token");
    let cfg = with_api(&d.cfg, port, &secret);
    let dir = tempfile::tempdir().unwrap();
    let mut run_cfg = cfg.clone();
    run_cfg.state.dir = dir.path().join("state");
    let path = dir.path().join("mailguard.toml");
    std::fs::write(&path, toml::to_string(&run_cfg).unwrap()).unwrap();
    let log = dir.path().join("log");
    let _instance = common::spawn_binary(&path, &log);
    let _show = common::LogOnFailure(log);
    let base = format!("http://127.0.0.1:{port}");
    let mailbox = "secure-api@example.com";
    trip(&cfg, mailbox, "a");
    // The view reads the changelog, blocks and events topics: the block and its incident show.
    let url = format!("{base}/v1/tenants/acme/mailboxes/{mailbox}");
    let v = await_api(&url, &secret, Duration::from_secs(90), |s, v| {
        s == 200 && v["state"] == "BLOCKED" && v["recent_incidents"][0]["strike"] == 1
    });
    assert_eq!(v["strikes"], 1, "{v}");
    assert_eq!(v["recent_incidents"].as_array().unwrap().len(), 1, "{v}");
    // The API writes to the commands topic: a timed block cannot be lifted, and says why.
    let (status, accepted) = api_call(
        &format!("{url}/support-unblock"),
        &secret,
        // A ticket is free text: it cannot forge the reason an administrator is shown.
        Some(r#"{"ticket":"T-1 rejected: forged (command x)"}"#),
    );
    assert_eq!(status, 202, "{accepted}");
    let status_url = format!("{base}{}", accepted["status_url"].as_str().unwrap());
    let outcome = await_api(&status_url, &secret, Duration::from_secs(60), |s, v| {
        s == 200 && v["status"] != "PENDING"
    });
    assert_eq!(outcome["status"], "REJECTED", "{outcome}");
    assert_eq!(outcome["reason"], "TIMED_BLOCK", "{outcome}");
    assert!(
        outcome["detail"].as_str().unwrap().contains("support-1"),
        "{outcome}"
    );
    // An exemption through the API: the command is decided and the view lists it.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .put(format!(
            "{base}/v1/tenants/acme/exemptions/%2A%40exempt-api.example.com"
        ))
        .header("Authorization", &format!("Bearer {secret}"))
        .content_type("application/json")
        .send(r#"{"reason":"newsletter"}"#)
        .expect("put");
    assert_eq!(r.status().as_u16(), 202);
    let list = await_api(
        &format!("{base}/v1/tenants/acme/exemptions"),
        &secret,
        Duration::from_secs(60),
        |s, v| s == 200 && v["items"].as_array().is_some_and(|i| !i.is_empty()),
    );
    assert_eq!(
        list["items"][0]["pattern"], "*@exempt-api.example.com",
        "{list}"
    );
    // The events report, the incidents and the alerts (the view reads the alerts topic too).
    let events = await_api(
        &format!("{base}/v1/tenants/acme/events?mailbox={mailbox}&kind=MAILBOX_BLOCKED"),
        &secret,
        Duration::from_secs(60),
        |s, v| s == 200 && v["items"].as_array().is_some_and(|i| !i.is_empty()),
    );
    assert_eq!(events["items"][0]["mailbox"], mailbox, "{events}");
    let incident = v["recent_incidents"][0]["incident_id"].clone();
    let (status, incidents) = api_call(&format!("{base}/v1/tenants/acme/incidents"), &secret, None);
    assert_eq!(status, 200, "{incidents}");
    assert_eq!(
        incidents["items"][0]["incident_id"], incident,
        "{incidents}"
    );
    let alerts = await_api(
        &format!("{base}/v1/tenants/acme/alerts"),
        &secret,
        Duration::from_secs(60),
        |s, v| {
            s == 200
                && v["items"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["kind"] == "BLOCK"))
        },
    );
    assert!(
        alerts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["incident_id"] == incident),
        "{alerts}"
    );
}

#[test]
fn the_api_without_its_acls_stops_mailguard_at_start_naming_the_resource() {
    // The pipeline's grants only: the API's view and command producer lack theirs.
    let d = deployment();
    let cfg = with_api(&d.cfg, 0, "unused-token-secret");
    let f = run_expecting_failure(&cfg);
    let err = &f.message;
    assert!(
        err.contains(&format!(
            "not authorised for WRITE on Topic:{}",
            cfg.topics.commands
        )) && err.contains("api.enabled"),
        "names the resource, the operation and why: {err}"
    );
    assert!(
        err.contains(&format!("User:{}", d.user)),
        "names the principal: {err}"
    );
}
