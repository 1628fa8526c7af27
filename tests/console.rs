//! The console (`/ui`) against a real `mailguard run` (MAILGUARD_BIN) on the real broker: every
//! page and action answers each caller as its `/v1` endpoint does (the role × tenant matrix),
//! sessions and CSRF hold, and a person uses it in headless Chromium (Debian's package, driven
//! by playwright-core: tests/browser/console.cjs), with an axe-core check of every page.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::api::Instance;
use common::api::*;
use common::*;

/// A browser-like client of the console: keeps the session cookie, follows no redirect.
struct Client {
    base: String,
    cookie: Option<String>,
    agent: ureq::Agent,
}

struct Answer {
    status: u16,
    location: String,
    set_cookie: String,
    csp: String,
    body: String,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            cookie: None,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .into(),
        }
    }

    fn run(&self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", format!("mailguard_session={c}"));
        }
        let r = match form {
            Some(f) => {
                let body = f
                    .iter()
                    .map(|(k, v)| format!("{k}={}", urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.agent.run(
                    req.header("Content-Type", "application/x-www-form-urlencoded")
                        .body(body)
                        .unwrap(),
                )
            }
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut r = r.expect(method);
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (location, set_cookie, csp) =
            (h("location"), h("set-cookie"), h("content-security-policy"));
        Answer {
            status: r.status().as_u16(),
            location,
            set_cookie,
            csp,
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.run("GET", path, None)
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.run("POST", path, Some(form))
    }

    /// Signs in with `token`: the session cookie's value.
    fn sign_in(&mut self, token: &str) -> Answer {
        let a = self.post("/ui/login", &[("token", token)]);
        self.cookie = a
            .set_cookie
            .split(';')
            .next()
            .and_then(|c| c.strip_prefix("mailguard_session="))
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        a
    }

    /// The CSRF token of the session, as its pages' forms carry it.
    fn csrf(&self, page: &str) -> String {
        let body = self.get(page).body;
        let at = body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("{page} has no form: {body}"));
        let rest = &body[at + 19..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The world both tests need: tenants acme and globex (first strike permanent), a trip in each,
/// and the tokens of each role.
struct World {
    cfg: mailguard::config::Config,
    _dir: tempfile::TempDir,
    inst: Instance,
    viewer: Tok,
    admin: Tok,
    support: Tok,
    support_all: Tok,
    globex_viewer: Tok,
    mailbox: String,
    globex_mailbox: String,
}

fn world() -> World {
    let (cfg, dir) = test_config(2);
    let viewer = tok("vera", "VIEWER", Some("acme"));
    let admin = tok("ada", "ADMIN", Some("acme"));
    let support = tok("sam", "SUPPORT", Some("acme"));
    let support_all = tok("sue", "SUPPORT", None);
    let globex_viewer = tok("gus", "VIEWER", Some("globex"));
    let tokens = [
        viewer.clone(),
        admin.clone(),
        support.clone(),
        support_all.clone(),
        globex_viewer.clone(),
    ];
    create_topics(&cfg);
    produce_tenants(&cfg, &["acme", "globex"]);
    let inst = Instance::start(&cfg, "console-1", &tokens);
    World {
        mailbox: format!("{}@acme.example", unique("m")),
        globex_mailbox: format!("{}@globex.example", unique("g")),
        cfg,
        _dir: dir,
        inst,
        viewer,
        admin,
        support,
        support_all,
        globex_viewer,
    }
}

fn enc(s: &str) -> String {
    urlencode(s)
}

#[test]
fn every_console_page_and_action_answers_as_its_api_endpoint_does() {
    let w = world();
    let base = &w.inst.base;
    trip(&w.cfg, "acme", &w.mailbox);
    trip(&w.cfg, "globex", &w.globex_mailbox);
    let mb = await_answer(
        base,
        &format!("/v1/tenants/acme/mailboxes/{}", enc(&w.mailbox)),
        &w.support_all.secret,
        blocked,
    );
    let incident = mb["incident_id"].as_str().unwrap().to_owned();
    let gmb = await_answer(
        base,
        &format!("/v1/tenants/globex/mailboxes/{}", enc(&w.globex_mailbox)),
        &w.support_all.secret,
        blocked,
    );
    let globex_incident = gmb["incident_id"].as_str().unwrap().to_owned();

    // Each page and its endpoint, for a tenant's own and another tenant's data.
    let pages = |tenant: &str, mailbox: &str, incident: &str| {
        let (t, m, i) = (enc(tenant), enc(mailbox), enc(incident));
        vec![
            (format!("/ui/t/{t}"), format!("/v1/tenants/{t}/blocked")),
            (
                format!("/ui/t/{t}/events"),
                format!("/v1/tenants/{t}/events"),
            ),
            (
                format!("/ui/t/{t}/events.csv"),
                format!("/v1/tenants/{t}/events?format=csv"),
            ),
            (
                format!("/ui/t/{t}/mailboxes/{m}"),
                format!("/v1/tenants/{t}/mailboxes/{m}"),
            ),
            (
                format!("/ui/t/{t}/incidents/{i}"),
                format!("/v1/tenants/{t}/incidents/{i}"),
            ),
            (
                format!("/ui/t/{t}/exemptions"),
                format!("/v1/tenants/{t}/exemptions"),
            ),
            (
                format!("/ui/t/{t}/shadow"),
                format!("/v1/tenants/{t}/shadow"),
            ),
        ]
    };
    let mut cases = pages("acme", &w.mailbox, &incident);
    cases.extend(pages("globex", &w.globex_mailbox, &globex_incident));
    // acme's incident asked for under globex: "not found" in this tenant, in both.
    cases.extend(
        pages("globex", &w.globex_mailbox, &incident)
            .into_iter()
            .skip(4)
            .take(1),
    );
    let callers = [
        &w.viewer,
        &w.admin,
        &w.support,
        &w.support_all,
        &w.globex_viewer,
    ];
    let mut checked = 0;
    for who in callers {
        let mut c = Client::new(base);
        assert_eq!(c.sign_in(&who.secret).status, 303, "{}", who.principal);
        // The overview shows a role only what its operations answer it.
        let home = who.tenant.as_deref().unwrap_or("acme");
        let overview = c.get(&format!("/ui/t/{home}")).body;
        let admin = who.role != "VIEWER";
        for part in [
            "id=\"trips-plot\"",
            "id=\"policy\"",
            "Incidents that need attention",
        ] {
            assert_eq!(overview.contains(part), admin, "{}: {part}", who.principal);
        }
        assert_eq!(
            overview.contains("href=\"/ui/t/acme/events\""),
            admin && home == "acme"
        );
        for (ui, v1) in &cases {
            let (api_status, _) = get(base, v1, Some(&who.secret));
            let page = c.get(ui);
            assert_eq!(
                page.status, api_status,
                "{} {ui}: the console answers {} where the API answers {api_status}: {}",
                who.principal, page.status, page.body
            );
            assert!(
                page.csp.contains("default-src 'none'"),
                "{ui}: {}",
                page.csp
            );
            if api_status == 403 {
                assert!(page.body.contains("may not"), "{ui}: {}", page.body);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, callers.len() * 15);

    // Actions: each caller's answer is the API's, 202 there and a redirect to the outcome here.
    let actions = |tenant: &str, mailbox: &str| {
        let (t, m) = (enc(tenant), enc(mailbox));
        let pattern = format!("bulk-{}@{tenant}.example", unique("x"));
        vec![
            (
                format!("/ui/t/{t}/exemptions"),
                vec![
                    ("pattern", pattern.clone()),
                    ("reason", "newsletter".into()),
                ],
                (
                    "PUT",
                    format!("/v1/tenants/{t}/exemptions/{}", enc(&pattern)),
                    json!({"reason": "newsletter"}),
                ),
            ),
            (
                format!("/ui/t/{t}/mailboxes/{m}/unblock"),
                vec![("ticket", "".into()), ("confirm", "yes".into())],
                (
                    "POST",
                    format!("/v1/tenants/{t}/mailboxes/{m}/support-unblock"),
                    json!({"ticket": ""}),
                ),
            ),
        ]
    };
    for who in callers {
        let mut c = Client::new(base);
        c.sign_in(&who.secret);
        let csrf = c.csrf(
            "/ui/t/acme/exemptions"
                .replace("acme", who.tenant.as_deref().unwrap_or("acme"))
                .as_str(),
        );
        for tenant in ["acme", "globex"] {
            let mailbox = if tenant == "acme" {
                &w.mailbox
            } else {
                &w.globex_mailbox
            };
            for (ui, form, (method, v1, body)) in actions(tenant, mailbox) {
                let (api_status, _) = send(method, base, &v1, Some(&who.secret), Some(&body));
                let mut form: Vec<(&str, &str)> =
                    form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                form.push(("csrf", &csrf));
                let a = c.post(&ui, &form);
                let expected = if api_status == 202 { 303 } else { api_status };
                assert_eq!(
                    a.status, expected,
                    "{} POST {ui}: console {} where the API answers {api_status}: {}",
                    who.principal, a.status, a.body
                );
            }
        }
    }

    // Sessions: not signed in → to the sign-in page; an unknown token → 401; a form without the
    // session's CSRF token → 403; sign-out ends the session.
    let anon = Client::new(base);
    let a = anon.get("/ui/t/acme");
    assert_eq!((a.status, a.location.as_str()), (303, "/ui/login"));
    assert_eq!(anon.get("/ui/login").status, 200);
    let mut c = Client::new(base);
    let bad = c.sign_in("not-a-token");
    assert_eq!(bad.status, 401);
    assert!(bad.set_cookie.is_empty() && bad.body.contains("not known"));
    let ok = c.sign_in(&w.admin.secret);
    assert_eq!((ok.status, ok.location.as_str()), (303, "/ui"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(ok.set_cookie.contains(attr), "{}", ok.set_cookie);
    }
    assert!(
        !ok.set_cookie.contains(&w.admin.secret),
        "the cookie never holds the token"
    );
    assert!(!ok.set_cookie.contains("Secure"), "plain HTTP: not Secure");
    assert_eq!(c.get("/ui").location, "/ui/t/acme");
    let forged = c.post(
        "/ui/t/acme/exemptions",
        &[
            ("pattern", "x@acme.example"),
            ("reason", "r"),
            ("csrf", "forged"),
        ],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("CSRF"));
    let csrf = c.csrf("/ui/t/acme");
    let cross = {
        let mut req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{base}/ui/logout"))
            .header(
                "Cookie",
                format!("mailguard_session={}", c.cookie.as_ref().unwrap()),
            )
            .header("Origin", "https://evil.example")
            .header("Content-Type", "application/x-www-form-urlencoded");
        req = req.header("Sec-Fetch-Site", "cross-site");
        c.agent
            .run(req.body(format!("csrf={csrf}")).unwrap())
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(cross, 403, "a cross-site form is refused");
    let out = c.post("/ui/logout", &[("csrf", &csrf)]);
    assert_eq!((out.status, out.location.as_str()), (303, "/ui/login"));
    assert!(out.set_cookie.contains("Max-Age=0"));
    assert_eq!(
        c.get("/ui/t/acme").status,
        303,
        "signed out: the session is gone"
    );
    // Behind a TLS-terminating proxy the cookie is Secure.
    let tls = {
        let r = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{base}/ui/login"))
            .header("X-Forwarded-Proto", "https")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={}", urlencode(&w.viewer.secret)))
            .unwrap();
        let r = c.agent.run(r).unwrap();
        r.headers()["set-cookie"].to_str().unwrap().to_owned()
    };
    assert!(tls.ends_with("; Secure"), "{tls}");
    let css = anon.get("/ui/assets/console.css");
    assert_eq!(css.status, 200);
    assert!(css.body.contains(".state"));
}

/// Where the screenshots of this run go (artefacts, never committed): MAILGUARD_TEST_LOGS when
/// set, else a directory beside the other build outputs.
fn artefacts() -> std::path::PathBuf {
    let dir = match std::env::var_os("MAILGUARD_TEST_LOGS") {
        Some(d) => std::path::PathBuf::from(d).join("console"),
        None => std::env::temp_dir().join("mailguard-console-screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_person_uses_the_console_in_chromium() {
    let w = world();
    let base = w.inst.base.clone();
    // More events than one page of the report (50): warnings of other mailboxes of acme.
    let now = now_ms();
    let events: Vec<(String, Vec<u8>)> = (0..70)
        .map(|n| {
            event_record(
                "acme",
                &format!("filler-{n}@acme.example"),
                n,
                now - 60_000 + i64::from(n),
                "filler",
            )
        })
        .collect();
    produce_keyed(&w.cfg.topics.events, &events);
    let node_path = Proc::new("scripts/browser-env")
        .output()
        .expect("scripts/browser-env");
    assert!(
        node_path.status.success(),
        "{}",
        String::from_utf8_lossy(&node_path.stderr)
    );
    let node_path = String::from_utf8(node_path.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let shots = artefacts();
    let mut child = Proc::new("node")
        .arg("tests/browser/console.cjs")
        .env("NODE_PATH", &node_path)
        .env("CONSOLE_BASE", &base)
        .env("CONSOLE_MAILBOX", &w.mailbox)
        .env("CONSOLE_SUPPORT_TOKEN", &w.support.secret)
        .env("CONSOLE_GLOBEX_TOKEN", &w.globex_viewer.secret)
        .env("CONSOLE_SHOTS", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    // The script says when it has seen the overview without the mailbox; then the trip.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut report = None;
    let mut tripped = false;
    while report.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "READY overview" => {
                trip(&w.cfg, "acme", &w.mailbox);
                tripped = true;
            }
            Ok(line) if line.starts_with('{') => report = Some(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if report.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    reader.join().unwrap();
    let report: Value = serde_json::from_str(report.as_deref().unwrap_or("null")).unwrap();
    assert!(
        status.success() && tripped,
        "the browser run failed ({status}): {stderr}\n{report}\n{}",
        w.inst.log()
    );
    let r = &report;
    assert_eq!(r["errors"], json!([]), "console, page or CSP errors: {r}");
    assert_eq!(r["login_redirect"], true, "{r}");
    assert_eq!(r["overview_before"], false, "{r}");
    assert_eq!(r["overview_after"], "PERMANENTLY_BLOCKED", "{r}");
    assert_eq!(r["mailbox_state"], "PERMANENTLY_BLOCKED", "{r}");
    assert!(
        r["incident_timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "MAILBOX_PERMANENTLY_BLOCKED"),
        "{r}"
    );
    let (p1, p2) = (
        r["events_page1"].as_array().unwrap(),
        r["events_page2"].as_array().unwrap(),
    );
    assert_eq!(p1.len(), 50, "{r}");
    assert!(!p2.is_empty(), "{r}");
    assert!(
        p1.iter().all(|e| !p2.contains(e)),
        "the second page repeats none of the first"
    );
    let csv = r["csv"].as_str().unwrap();
    assert!(
        csv.starts_with("at,at_ms,kind,mailbox,incident_id,event_id,reason,detail\r\n"),
        "{csv}"
    );
    assert!(
        csv.contains("MAILBOX_PERMANENTLY_BLOCKED") && csv.contains("filler-"),
        "{csv}"
    );
    assert_eq!(r["command_status"], "ACCEPTED", "{r}");
    assert_eq!(r["mailbox_after_unblock"], "UNBLOCKED", "{r}");
    assert!(r["exemption_listed"].as_bool().unwrap(), "{r}");
    assert_eq!(r["other_tenant_status"], 403, "{r}");
    assert!(
        r["other_tenant_text"]
            .as_str()
            .unwrap()
            .contains("may not access this tenant"),
        "{r}"
    );
    assert_eq!(
        r["refused_nav"],
        json!(["/ui/t/globex", "/ui/t/globex/exemptions"]),
        "the refusal's links lead to the caller's own tenant: {r}"
    );
    // The API agrees with what the person saw.
    let (_, v) = get(
        &base,
        &format!("/v1/tenants/acme/mailboxes/{}", enc(&w.mailbox)),
        Some(&w.support.secret),
    );
    assert_eq!(v["state"], "UNBLOCKED", "{v}");
    // axe-core: no serious or critical violation on any page.
    let axe = r["axe"].as_object().unwrap();
    assert!(axe.len() >= 8, "{r}");
    for (page, violations) in axe {
        assert_eq!(violations, &json!([]), "{page}: accessibility violations");
    }
    for shot in r["screenshots"].as_array().unwrap() {
        let p = shots.join(shot.as_str().unwrap());
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "{}",
            p.display()
        );
    }
}
