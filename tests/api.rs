//! The admin and query API against real `mailguard run` processes (MAILGUARD_BIN) on the real
//! broker: the role × endpoint × tenant matrix, and a two-instance group across a rebalance.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;
use mailguard::codec::{Codec, EmailLicence, TenantRecord};
use mailguard::config::Config;
use mailguard::policy::{Effect, EventKind, PolicyOverrides, TenantSettings, Verdict, VerdictKind};

const T: Duration = Duration::from_secs(60);

/// A `mailguard run` process with the API on, stopped (SIGTERM) on drop.
struct Instance {
    child: Option<Child>,
    base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn toml_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The configuration file of an instance: the test topics, `instance_id`, the API tokens.
fn config_toml(
    cfg: &Config,
    instance: &str,
    state: &std::path::Path,
    port: u16,
    tokens: &[Tok],
) -> String {
    let t = &cfg.topics;
    let mut s = format!(
        "[kafka]\nbootstrap_servers = {}\ngroup_id = {}\ninstance_id = {}\ntransactional_id_prefix = {}\ncommit_interval_ms = 50\nsession_timeout_ms = 6000\n\
         [topics]\nverdicts = {}\nmailboxes = {}\ndevices = {}\ntenants = {}\ncommands = {}\nblocks = {}\nscan_requests = {}\nalerts = {}\nevents = {}\ndlq = {}\nchangelog = {}\npartitions = {}\ncreate_missing = true\n\
         [state]\ndir = {}\ntick_interval_ms = 100\n[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nfilter = \"warn\"\n[api]\nenabled = true\n",
        toml_str(&cfg.kafka.bootstrap_servers),
        toml_str(&cfg.kafka.group_id),
        toml_str(instance),
        toml_str(&cfg.kafka.transactional_id_prefix),
        toml_str(&t.verdicts),
        toml_str(&t.mailboxes),
        toml_str(&t.devices),
        toml_str(&t.tenants),
        toml_str(&t.commands),
        toml_str(&t.blocks),
        toml_str(&t.scan_requests),
        toml_str(&t.alerts),
        toml_str(&t.events),
        toml_str(&t.dlq),
        toml_str(&t.changelog),
        t.partitions,
        toml_str(&state.display().to_string()),
    );
    for tok in tokens {
        s.push_str(&format!(
            "[[api.tokens]]\nsha256 = \"{}\"\nprincipal = {}\nrole = \"{}\"\n",
            mailguard::api::auth::hash_token(&tok.secret),
            toml_str(&tok.principal),
            tok.role
        ));
        if let Some(t) = &tok.tenant {
            s.push_str(&format!("tenant = {}\n", toml_str(t)));
        }
    }
    s
}

impl Instance {
    fn start(cfg: &Config, instance: &str, tokens: &[Tok]) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("mailguard.toml");
        std::fs::write(
            &path,
            config_toml(cfg, instance, &dir.path().join("state"), port, tokens),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Proc::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mailguard");
        let inst = Instance {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Ready = the pipeline is ready and the view has caught up (a query answers 200).
        let support = tokens
            .iter()
            .find(|t| t.role == "SUPPORT" && t.tenant.is_none())
            .unwrap();
        let deadline = Instant::now() + T;
        loop {
            let ready = get(&inst.base, "/readyz", None).0 == 200
                && get(&inst.base, "/v1/tenants/x/blocked", Some(&support.secret)).0 == 200;
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {instance} not ready: {}",
                inst.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        inst
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// SIGTERM, then wait for the process to end.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Proc::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + T;
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = agent().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn post(base: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = agent().post(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut r = req
        .content_type("application/json")
        .send(body.to_string())
        .expect("post");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A caller.
#[derive(Debug, Clone)]
struct Tok {
    secret: String,
    principal: String,
    role: &'static str,
    tenant: Option<String>,
}

fn tok(principal: &str, role: &'static str, tenant: Option<&str>) -> Tok {
    Tok {
        secret: unique("token"),
        principal: principal.into(),
        role,
        tenant: tenant.map(str::to_owned),
    }
}

fn rank(role: &str) -> u8 {
    match role {
        "VIEWER" => 0,
        "ADMIN" => 1,
        _ => 2,
    }
}

/// Tenants whose first strike is permanent (so support-unblock has something to lift).
fn produce_tenants(cfg: &Config, tenants: &[&str]) {
    let codec = Codec::default();
    let recs: Vec<(Option<&str>, Option<Vec<u8>>)> = tenants
        .iter()
        .map(|t| {
            let mut out = Vec::new();
            codec
                .encode_tenant(
                    &TenantRecord {
                        tenant_id: t.to_string(),
                        settings: TenantSettings {
                            sync_security_enabled: true,
                            endpoint_licence: true,
                            overrides: PolicyOverrides {
                                permanent_strike: Some(1),
                                ..PolicyOverrides::default()
                            },
                        },
                        email_licence: EmailLicence::Standard,
                    },
                    &mut out,
                )
                .unwrap();
            (Some(*t), Some(out))
        })
        .collect();
    produce(&cfg.topics.tenants, &recs);
}

/// Five spam messages: trips the mailbox (permanently, with the tenants above).
fn trip(cfg: &Config, tenant: &str, mailbox: &str) {
    let codec = Codec::default();
    let now = now_ms();
    let recs: Vec<(Option<&str>, Option<Vec<u8>>)> = (0..5)
        .map(|i| {
            let mut out = Vec::new();
            codec
                .encode_verdict(
                    &Verdict {
                        message_id: format!("{mailbox}-{i}"),
                        tenant_id: tenant.into(),
                        mailbox: mailbox.into(),
                        sent_at: now - 5_000 + i,
                        verdict: VerdictKind::Spam,
                    },
                    &mut out,
                )
                .unwrap();
            (Some(mailbox), Some(out))
        })
        .collect();
    produce(&cfg.topics.verdicts, &recs);
}

/// Poll `path` on `base` until `ok(status, body)`, or fail after `T`.
fn await_answer(base: &str, path: &str, token: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (s, v) = get(base, path, Some(token));
        if ok(s, &v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: last answer {s} {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn blocked(status: u16, v: &Value) -> bool {
    status == 200 && v["state"] != "UNBLOCKED"
}

#[test]
fn role_endpoint_tenant_matrix() {
    let (cfg, _dir) = test_config(2);
    create_topics(&cfg);
    produce_tenants(&cfg, &["acme", "globex"]);
    let tokens = vec![
        tok("viewer-acme", "VIEWER", Some("acme")),
        tok("admin-acme", "ADMIN", Some("acme")),
        tok("support-acme", "SUPPORT", Some("acme")),
        tok("viewer-globex", "VIEWER", Some("globex")),
        tok("admin-globex", "ADMIN", Some("globex")),
        tok("support-global", "SUPPORT", None),
    ];
    let support = tokens[5].secret.clone();
    let inst = Instance::start(&cfg, "0", &tokens);
    let b = inst.base.clone();

    // Each tenant: a permanently blocked mailbox and a command on it (accepted: it lifts the
    // block), and a second blocked mailbox for the unblock calls of the matrix.
    let mut fixture = BTreeMap::new();
    for tenant in ["acme", "globex"] {
        let (m1, m2) = (format!("one@{tenant}.test"), format!("two@{tenant}.test"));
        trip(&cfg, tenant, &m1);
        trip(&cfg, tenant, &m2);
        let v1 = await_answer(
            &b,
            &format!("/v1/tenants/{tenant}/mailboxes/{m1}"),
            &support,
            blocked,
        );
        await_answer(
            &b,
            &format!("/v1/tenants/{tenant}/mailboxes/{m2}"),
            &support,
            blocked,
        );
        let incident = v1["incident_id"].as_str().unwrap().to_string();
        let (s, c) = post(
            &b,
            &format!("/v1/tenants/{tenant}/mailboxes/{m1}/support-unblock"),
            Some(&support),
            &json!({"ticket": "SETUP-1"}),
        );
        assert_eq!(s, 202, "{c}");
        let command = c["command_id"].as_str().unwrap().to_string();
        let st = await_answer(&b, c["status_url"].as_str().unwrap(), &support, |s, v| {
            s == 200 && v["status"] != "PENDING"
        });
        assert_eq!(st["status"], "ACCEPTED", "{st}");
        assert_eq!(st["actor"], "support-global");
        fixture.insert(tenant, (m1, m2, incident, command));
    }
    let mut setup_commands = 2;

    // The endpoints: (name, method, path for a tenant, the least role that may call it).
    type PathFn = Box<dyn Fn(&str) -> String>;
    let fx = fixture.clone();
    let path_of = |f: fn(&(String, String, String, String), &str) -> String| -> PathFn {
        let fx = fx.clone();
        Box::new(move |t: &str| f(&fx[t], t))
    };
    let endpoints: Vec<(&str, &str, PathFn, &str)> = vec![
        (
            "mailbox",
            "GET",
            path_of(|f, t| format!("/v1/tenants/{t}/mailboxes/{}", f.1)),
            "VIEWER",
        ),
        (
            "blocked",
            "GET",
            path_of(|_, t| format!("/v1/tenants/{t}/blocked?limit=5")),
            "VIEWER",
        ),
        (
            "incident",
            "GET",
            path_of(|f, t| format!("/v1/tenants/{t}/incidents/{}", f.2)),
            "ADMIN",
        ),
        (
            "command",
            "GET",
            path_of(|f, t| format!("/v1/tenants/{t}/mailboxes/{}/commands/{}", f.0, f.3)),
            "ADMIN",
        ),
        (
            "settings",
            "GET",
            path_of(|_, t| format!("/v1/tenants/{t}/settings")),
            "ADMIN",
        ),
        (
            "unblock",
            "POST",
            path_of(|f, t| format!("/v1/tenants/{t}/mailboxes/{}/support-unblock", f.1)),
            "SUPPORT",
        ),
    ];
    let bad = tok("nobody", "SUPPORT", None);
    let mut callers: Vec<Option<&Tok>> = tokens.iter().map(Some).collect();
    callers.push(Some(&bad)); // unknown token
    callers.push(None); // no token
    let mut authorised_unblocks = Vec::new();
    let mut checked = 0;
    for (name, method, path, least) in &endpoints {
        for tenant in ["acme", "globex"] {
            for caller in &callers {
                let p = path(tenant);
                let secret = caller.map(|c| c.secret.as_str());
                let (status, body) = if *method == "POST" {
                    post(&b, &p, secret, &json!({"ticket": "MATRIX"}))
                } else {
                    get(&b, &p, secret)
                };
                let expected = match caller {
                    None => 401,
                    Some(c) if c.principal == "nobody" => 401,
                    Some(c) if rank(c.role) < rank(least) => 403,
                    Some(c) if c.tenant.as_deref().is_some_and(|t| t != tenant) => 403,
                    Some(_) if *method == "POST" => 202,
                    Some(_) => 200,
                };
                let who = caller.map_or("-", |c| c.principal.as_str());
                assert_eq!(status, expected, "{name} {tenant} as {who}: {body}");
                if status >= 400 {
                    assert!(
                        body["error"].is_string(),
                        "{name} {tenant} as {who}: {body}"
                    );
                }
                if status == 202 {
                    authorised_unblocks.push((
                        who.to_string(),
                        body["command_id"].as_str().unwrap().to_string(),
                    ));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, endpoints.len() * 2 * callers.len());

    // Another tenant's objects are not found through one's own tenant (no existence leak).
    let admin_acme = &tokens[1].secret;
    let g = &fixture["globex"];
    assert_eq!(
        get(
            &b,
            &format!("/v1/tenants/acme/mailboxes/{}", g.1),
            Some(admin_acme)
        )
        .0,
        404
    );
    assert_eq!(
        get(
            &b,
            &format!("/v1/tenants/acme/incidents/{}", g.2),
            Some(admin_acme)
        )
        .0,
        404
    );
    assert_eq!(
        get(
            &b,
            &format!("/v1/tenants/acme/mailboxes/{}/commands/{}", g.0, g.3),
            Some(admin_acme)
        )
        .0,
        404
    );
    let support_acme = &tokens[2].secret;
    assert_eq!(
        post(
            &b,
            &format!("/v1/tenants/acme/mailboxes/{}/support-unblock", g.1),
            Some(support_acme),
            &json!({"ticket": "X"})
        )
        .0,
        404
    );
    // Health and metrics answer without credentials; the document does not.
    assert_eq!(get(&b, "/healthz", None).0, 200);
    assert_eq!(get(&b, "/v1/openapi.json", None).0, 401);
    assert_eq!(get(&b, "/v1/openapi.json", Some(&tokens[0].secret)).0, 200);

    // Only the authorised calls reached the commands topic, each with its principal as actor,
    // and each was audited on the events topic with that principal.
    setup_commands += authorised_unblocks.len();
    let codec = Codec::default();
    let commands = consume_exactly(
        &cfg.topics.commands,
        setup_commands,
        T,
        Duration::from_secs(2),
    );
    let actors: Vec<(String, String)> = commands
        .iter()
        .map(|r| {
            let c = codec.decode_command(r.value.as_deref().unwrap()).unwrap();
            (c.actor, c.command_id)
        })
        .collect();
    for a in &authorised_unblocks {
        assert!(actors.contains(a), "{a:?} not among {actors:?}");
    }
    let events = consume_until(&cfg.topics.events, T, |recs| {
        let audited = recs
            .iter()
            .filter_map(|r| match codec.decode_effect(r.value.as_deref()?) {
                Ok(Effect::Event(e))
                    if matches!(
                        e.kind,
                        EventKind::SupportUnblock | EventKind::CommandRejected
                    ) =>
                {
                    Some(e)
                }
                _ => None,
            })
            .count();
        audited >= setup_commands
    });
    for (who, id) in &authorised_unblocks {
        assert!(
            events.iter().any(|r| {
                matches!(codec.decode_effect(r.value.as_deref().unwrap()),
                    Ok(Effect::Event(e)) if e.detail.contains(&format!("by {who} (role SUPPORT)")) && e.detail.contains(id.as_str()))
            }),
            "no audit event for {who} {id}"
        );
    }
    // The permanent blocks the unauthorised calls aimed at were lifted only by the authorised
    // ones: the first authorised unblock of each tenant's second mailbox was accepted.
    for tenant in ["acme", "globex"] {
        let m2 = &fixture[tenant].1;
        let v = await_answer(
            &b,
            &format!("/v1/tenants/{tenant}/mailboxes/{m2}"),
            &support,
            |s, v| s == 200 && v["state"] == "UNBLOCKED",
        );
        assert_eq!(v["strikes"], 0);
    }
    // Requests are counted by route template, never by mailbox.
    let metrics = agent()
        .get(format!("{b}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("/v1/tenants/{tenant}/mailboxes/{mailbox}"));
    assert!(!metrics.contains("one@acme.test"));
}

/// The partitions mailguard's instances own, from `mailguard_assigned_partitions`.
fn assigned(base: &str) -> i64 {
    let text = agent()
        .get(format!("{base}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("mailguard_assigned_partitions "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(-1.0) as i64
}

#[test]
fn any_instance_answers_for_any_mailbox_across_a_rebalance() {
    let partitions = 4;
    let (cfg, _dir) = test_config(partitions);
    create_topics(&cfg);
    produce_tenants(&cfg, &["acme"]);
    let tokens = vec![tok("support", "SUPPORT", None)];
    let s = tokens[0].secret.clone();
    let a = Instance::start(&cfg, "0", &tokens);
    let mut b = Instance::start(&cfg, "1", &tokens);
    // Both members own partitions (range assignor: 2 + 2).
    let deadline = Instant::now() + T;
    while !(assigned(&a.base) == 2 && assigned(&b.base) == 2) {
        assert!(
            Instant::now() < deadline,
            "group did not settle on 2 + 2 partitions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Mailboxes on every partition: each instance owns half of them, and answers for all.
    let mut by_partition: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut n = 0;
    while by_partition.len() < partitions as usize || by_partition.values().any(|v| v.len() < 2) {
        let m = format!("user{n}@acme.test");
        let p = mailguard::kafka::partitioner::partition_for(m.as_bytes(), partitions);
        by_partition.entry(p).or_default().push(m);
        n += 1;
    }
    let mailboxes: Vec<String> = by_partition
        .values()
        .flat_map(|v| v.iter().take(2).cloned())
        .collect();
    let first: Vec<&String> = mailboxes.iter().step_by(2).collect();
    for m in &first {
        trip(&cfg, "acme", m);
    }
    let started = Instant::now();
    for inst in [&a, &b] {
        for m in &first {
            let v = await_answer(
                &inst.base,
                &format!("/v1/tenants/acme/mailboxes/{m}"),
                &s,
                blocked,
            );
            assert_eq!(v["state"], "PERMANENTLY_BLOCKED");
        }
        let page = await_answer(&inst.base, "/v1/tenants/acme/blocked", &s, |st, v| {
            st == 200
                && v["items"]
                    .as_array()
                    .is_some_and(|i| i.len() == first.len())
        });
        assert_eq!(page["next_cursor"], Value::Null);
    }
    eprintln!(
        "trip → visible on both instances for {} mailboxes: {:?}",
        first.len(),
        started.elapsed()
    );

    // Rebalance: B leaves (static member: A takes its partitions after the session timeout).
    // Meanwhile and after, A answers for every mailbox, and sees the new trips on B's former
    // partitions once it processes them.
    let watcher = {
        let (base, s, first) = (
            a.base.clone(),
            s.clone(),
            first.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let h = std::thread::spawn(move || {
            let mut queries = 0u64;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                for m in &first {
                    let (st, v) = get(&base, &format!("/v1/tenants/acme/mailboxes/{m}"), Some(&s));
                    assert_eq!(
                        (st, v["state"].as_str()),
                        (200, Some("PERMANENTLY_BLOCKED")),
                        "{m} during the rebalance"
                    );
                    queries += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            queries
        });
        (stop, h)
    };
    b.stop();
    let second: Vec<&String> = mailboxes.iter().skip(1).step_by(2).collect();
    for m in &second {
        trip(&cfg, "acme", m);
    }
    for m in &second {
        await_answer(
            &a.base,
            &format!("/v1/tenants/acme/mailboxes/{m}"),
            &s,
            blocked,
        );
    }
    let deadline = Instant::now() + T;
    while assigned(&a.base) != partitions as i64 {
        assert!(
            Instant::now() < deadline,
            "A did not take over every partition"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    watcher.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let queries = watcher
        .1
        .join()
        .expect("no wrong answer during the rebalance");
    assert!(queries > 0);
    let page = get(&a.base, "/v1/tenants/acme/blocked?limit=3", Some(&s)).1;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!(
                "/v1/tenants/acme/blocked?limit=3&cursor={}",
                c.replace('@', "%40")
            ),
            None => "/v1/tenants/acme/blocked?limit=3".to_string(),
        };
        let page = get(&a.base, &q, Some(&s)).1;
        for i in page["items"].as_array().unwrap() {
            all.push(i["mailbox"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = mailboxes.clone();
    expected.sort();
    assert_eq!(
        all, expected,
        "pages cover every blocked mailbox once, in order"
    );
    let _ = std::io::stderr().flush();
}

/// schemathesis (MAILGUARD_TEST_SCHEMATHESIS, from scripts/schemathesis-env) against the document
/// the instance serves: no 5xx and no response that violates the document. Twice: once fuzzing
/// every parameter (mostly unknown tenants and mailboxes), once with the path parameters fixed to
/// a real mailbox, incident and command, so the 200 and 202 answers are checked too.
#[test]
fn schemathesis_finds_no_violation() {
    let st = std::env::var("MAILGUARD_TEST_SCHEMATHESIS").expect(
        "MAILGUARD_TEST_SCHEMATHESIS is not set: the conformance test needs scripts/schemathesis-env; run `make test`",
    );
    let (cfg, dir) = test_config(2);
    create_topics(&cfg);
    produce_tenants(&cfg, &["acme"]);
    let tokens = vec![tok("support", "SUPPORT", None)];
    let s = tokens[0].secret.clone();
    let inst = Instance::start(&cfg, "0", &tokens);
    let b = inst.base.clone();
    let (m1, m2) = ("one@acme.test", "two@acme.test");
    trip(&cfg, "acme", m1);
    trip(&cfg, "acme", m2);
    for m in [m1, m2] {
        await_answer(&b, &format!("/v1/tenants/acme/mailboxes/{m}"), &s, blocked);
    }
    let incident = get(&b, &format!("/v1/tenants/acme/mailboxes/{m1}"), Some(&s)).1["incident_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, c) = post(
        &b,
        &format!("/v1/tenants/acme/mailboxes/{m1}/support-unblock"),
        Some(&s),
        &json!({"ticket": "ST-1"}),
    );
    let command = c["command_id"].as_str().unwrap().to_string();
    await_answer(&b, c["status_url"].as_str().unwrap(), &s, |st, v| {
        st == 200 && v["status"] == "ACCEPTED"
    });
    let fixed = dir.path().join("fixed.toml");
    std::fs::write(
        &fixed,
        format!(
            "[parameters]\n\"path.tenant\" = \"acme\"\n\"path.mailbox\" = \"{m2}\"\n\"path.incident_id\" = \"{incident}\"\n\"path.command_id\" = \"{command}\"\n"
        ),
    )
    .unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    for config in [&empty, &fixed] {
        let out = Proc::new(&st)
            .env("NO_COLOR", "1")
            // schemathesis keeps a cache of crashes in `.schemathesis/` of its working directory:
            // the test's own directory, not the repository.
            .current_dir(dir.path())
            .arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(format!("{b}/v1/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {s}")])
            .args(["--max-examples", "15"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            ])
            .output()
            .expect("run schemathesis");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis ({}) found problems:\n{text}\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = text
            .lines()
            .filter(|l| l.contains("generated"))
            .collect::<Vec<_>>();
        eprintln!(
            "schemathesis ({}): {summary:?}",
            config.file_name().unwrap().to_string_lossy()
        );
    }
    // No API call answered 5xx, by mailguard's own count either (/readyz said 503 while starting).
    let metrics = agent()
        .get(format!("{b}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("mailguard_http_requests_total{code=\"5") && l.contains("/v1")),
        "{metrics}"
    );
}
