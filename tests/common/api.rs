//! `mailguard run` processes with the API on (MAILGUARD_BIN) and their HTTP callers: what the
//! API and console tests share.

use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use mailguard::codec::{Codec, EmailLicence, TenantRecord};
use mailguard::config::Config;
use mailguard::policy::{Effect, EventKind, PolicyOverrides, TenantSettings, VerdictKind};

pub const T: Duration = Duration::from_secs(60);

/// A `mailguard run` process with the API on, stopped (SIGTERM) on drop.
pub struct Instance {
    pub child: Option<Child>,
    pub base: String,
    pub _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn toml_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The configuration file of an instance: the test topics, `instance_id`, the API tokens.
pub fn config_toml(
    cfg: &Config,
    instance: &str,
    state: &std::path::Path,
    port: u16,
    tokens: &[Tok],
) -> String {
    let t = &cfg.topics;
    let mut s = format!(
        "[kafka]\nbootstrap_servers = {}\ngroup_id = {}\ninstance_id = {}\ntransactional_id_prefix = {}\ncommit_interval_ms = 50\nsession_timeout_ms = 6000\n\
         [topics]\nverdicts = {}\nmailboxes = {}\ndevices = {}\ntenants = {}\ncommands = {}\nblocks = {}\nscan_requests = {}\nalerts = {}\nevents = {}\ndlq = {}\nchangelog = {}\nexemptions = {}\nscan_results = {}\nscan_results_routed = {}\npartitions = {}\ncreate_missing = true\n\
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
        toml_str(&t.exemptions),
        toml_str(&t.scan_results),
        toml_str(&t.scan_results_routed),
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
    pub fn start(cfg: &Config, instance: &str, tokens: &[Tok]) -> Instance {
        Self::start_with(cfg, instance, tokens, "")
    }

    /// [`Instance::start`] with more configuration (whole TOML tables) after the rest.
    pub fn start_with(cfg: &Config, instance: &str, tokens: &[Tok], extra: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("mailguard.toml");
        let toml = config_toml(cfg, instance, &dir.path().join("state"), port, tokens) + extra;
        std::fs::write(&path, toml).unwrap();
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// SIGTERM, then wait for the process to end (killed after `T`).
    pub fn stop(&mut self) {
        if self.terminate(T).is_none() {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// SIGTERM; how the process ended if it did within `within` (else it is left running).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let _ = Proc::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

pub fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
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

pub fn post(base: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    send("POST", base, path, token, Some(body))
}

/// A request with `method`, with a JSON body or none.
pub fn send(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => agent().run(
            req.header("Content-Type", "application/json")
                .body(b.to_string())
                .unwrap(),
        ),
        None => agent().run(req.body(()).unwrap()),
    };
    let mut r = result.expect(method);
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A caller.
#[derive(Debug, Clone)]
pub struct Tok {
    pub secret: String,
    pub principal: String,
    pub role: &'static str,
    pub tenant: Option<String>,
}

pub fn tok(principal: &str, role: &'static str, tenant: Option<&str>) -> Tok {
    Tok {
        secret: unique("token"),
        principal: principal.into(),
        role,
        tenant: tenant.map(str::to_owned),
    }
}

pub fn rank(role: &str) -> u8 {
    match role {
        "VIEWER" => 0,
        "ADMIN" => 1,
        _ => 2,
    }
}

/// Tenants whose first strike is permanent (so support-unblock has something to lift).
pub fn produce_tenants(cfg: &Config, tenants: &[&str]) {
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
                            mode: Default::default(),
                            sync_security_enabled: true,
                            endpoint_licence: true,
                            overrides: PolicyOverrides {
                                permanent_strike: Some(1),
                                ..PolicyOverrides::default()
                            },
                            shadow: None,
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
pub fn trip(cfg: &Config, tenant: &str, mailbox: &str) {
    let now = now_ms();
    let recs: Vec<(Option<&str>, Option<Vec<u8>>)> = (0..5)
        .map(|i| {
            let id = format!("{mailbox}-{i}");
            let out = verdict_bytes(tenant, mailbox, &id, now - 5_000 + i, VerdictKind::Spam);
            (Some(mailbox), Some(out))
        })
        .collect();
    produce(&cfg.topics.verdicts, &recs);
}

/// Poll `path` on `base` until `ok(status, body)`, or fail after `T`.
pub fn await_answer(
    base: &str,
    path: &str,
    token: &str,
    ok: impl Fn(u16, &Value) -> bool,
) -> Value {
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

pub fn blocked(status: u16, v: &Value) -> bool {
    status == 200 && v["state"] != "UNBLOCKED"
}

/// An `EventLogEntry` record of the events topic (a warning), keyed by its mailbox.
pub fn event_record(
    tenant: &str,
    mailbox: &str,
    n: u32,
    at: i64,
    detail: &str,
) -> (String, Vec<u8>) {
    let e = mailguard::policy::EventLogEntry {
        event_id: format!("report-{tenant}-{n:05}"),
        incident_id: None,
        tenant_id: tenant.into(),
        mailbox: mailbox.into(),
        kind: EventKind::MailboxWarned,
        at,
        detail: detail.into(),
        reason: None,
        trip: None,
    };
    let mut out = Vec::new();
    Codec::default()
        .encode_effect(&Effect::Event(e), &mut out)
        .unwrap();
    (mailbox.to_owned(), out)
}
