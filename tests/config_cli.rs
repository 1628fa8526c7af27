//! A bad configuration stops the binary at start, with a message naming the field — and never
//! a secret; `mailguard admin unblock` exits 0 only for an accepted command.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;

fn run_with(config: &str) -> (i32, String) {
    let (code, _, err) = check_config(config, &[]);
    (code, err)
}

/// `mailguard --config <file with config> check-config` with `env` added: exit code, stdout, stderr.
fn check_config(config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(config.as_bytes()).unwrap();
    mailguard(
        &["--config", f.path().to_str().unwrap(), "check-config"],
        env,
    )
}

/// The binary with `args` and `env` added (no MAILGUARD_CONFIG): exit code, stdout, stderr.
fn mailguard(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(common::binary())
        .args(args)
        .env_remove("MAILGUARD_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run mailguard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_field_fails_naming_it() {
    let (code, err) = run_with("[kafka]\nbootstrap_server = \"x:1\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bootstrap_server"), "{err}");
}

#[test]
fn wrong_type_fails_naming_the_field() {
    let (code, err) = run_with("[policy]\nwindow_ms = \"ten minutes\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("policy.window_ms"), "{err}");
}

#[test]
fn invalid_value_fails_naming_the_field() {
    let (code, err) = run_with("[policy]\nthreshold = 0\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("threshold"), "{err}");
    let (code, err) = run_with("[state]\ntick_interval_ms = 5000\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("state.tick_interval_ms"), "{err}");
}

#[test]
fn valid_config_prints_the_resolved_values() {
    let (code, err) = run_with("[policy]\nthreshold = 7\n");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_missing_input_topic_fails_at_start_naming_it() {
    // The real broker, topics not created and not to be created.
    let (mut cfg, dir) = common::test_config(1);
    cfg.topics.create_missing = false;
    let path = dir.path().join("mailguard.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let out = Command::new(common::binary())
        .args(["--config", path.to_str().unwrap(), "run"])
        .env_remove("MAILGUARD_CONFIG")
        .env("RUST_LOG", "error")
        .output()
        .expect("run mailguard");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&cfg.topics.verdicts), "{err}");
}

/// A password no message would contain by chance; digits only, so that it is also a valid TOML
/// integer (the wrong-type path quotes integers).
const PASSWORD: &str = "86753094172";

/// Runs `config` with `env`, asserting the exit code, that [`PASSWORD`] is in neither output,
/// and that stderr contains every one of `named`.
fn assert_no_password(case: &str, config: &str, env: &[(&str, &str)], code: i32, named: &[&str]) {
    let (got, out, err) = check_config(config, env);
    assert_eq!(got, code, "{case}: {err}");
    assert!(
        !out.contains(PASSWORD) && !err.contains(PASSWORD),
        "{case}: the password was printed:\n{out}\n{err}"
    );
    for n in named {
        assert!(err.contains(n), "{case}: `{n}` not in: {err}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn no_path_prints_a_password() {
    let pw = PASSWORD;
    let dir = tempfile::tempdir().unwrap();
    let registry = "[registry]\nurl = \"http://127.0.0.1:1\"\nusername = \"u\"\n";
    // README's one-line client_properties with a syntax error on the password's line.
    assert_no_password(
        "syntax error",
        &format!(
            "[kafka]\nclient_properties = {{ \"security.protocol\" = \"SASL_SSL\", \"sasl.password\" = \"{pw}\" \"x\" }}\n"
        ),
        &[],
        2,
        &["line 2, column "],
    );
    // Wrong types: serde quotes the integer it found.
    assert_no_password(
        "wrong-typed registry password",
        &format!("{registry}password = {pw}\n"),
        &[],
        2,
        &["registry.password", "expected a string"],
    );
    assert_no_password(
        "wrong-typed client property",
        &format!("[kafka]\nclient_properties = {{ \"sasl.password\" = {pw} }}\n"),
        &[],
        2,
        &["kafka.client_properties.sasl.password"],
    );
    // The environment: taken as the literal string, accepted, printed redacted.
    let (code, out, err) = check_config(registry, &[("MAILGUARD_REGISTRY__PASSWORD", pw)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("password = \"[redacted]\"") && !out.contains(pw),
        "{out}"
    );
    let (code, out, err) = check_config(
        registry,
        &[("MAILGUARD_REGISTRY__PASSWORD", &format!("\"{pw}\""))],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(pw), "{out}");
    assert_no_password(
        "environment password without a username",
        "[registry]\nurl = \"http://127.0.0.1:1\"\n",
        &[("MAILGUARD_REGISTRY__PASSWORD", pw)],
        2,
        &["registry.password"],
    );
    assert_no_password(
        "environment client property that is not a table",
        "",
        &[(
            "MAILGUARD_KAFKA__CLIENT_PROPERTIES",
            &format!("{{ \"sasl.password\" = {pw}x }}"),
        )],
        2,
        &[
            "MAILGUARD_KAFKA__CLIENT_PROPERTIES",
            "kafka.client_properties",
        ],
    );
    // `${file:}` references that fail: a token file holding a password, not a hash; a
    // password that merely looks like a reference; a missing file.
    let token = write(dir.path(), "token", &format!("{pw}\n"));
    assert_no_password(
        "token hash from a file holding a password",
        &format!(
            "[[api.tokens]]\nsha256 = \"${{file:{token}}}\"\nprincipal = \"p\"\nrole = \"SUPPORT\"\n"
        ),
        &[],
        2,
        &["api.tokens[0].sha256"],
    );
    assert_no_password(
        "a password shaped like a reference",
        &format!("{registry}password = \"${{{pw}}}\"\n"),
        &[],
        2,
        &["registry.password"],
    );
    assert_no_password(
        "a missing secret file",
        "[kafka]\nclient_properties = { \"sasl.password\" = \"${file:/nonexistent/pw}\" }\n",
        &[],
        2,
        &["kafka.client_properties.sasl.password", "/nonexistent/pw"],
    );
    // client_properties_file: a bad line, a refused key beside the password, and a good file.
    for (case, text, named) in [
        ("continuation", format!("sasl.password={pw}\\\n"), "line 1"),
        (
            "refused key",
            format!("sasl.password={pw}\nisolation.level=read_uncommitted\n"),
            "`isolation.level`",
        ),
        ("no separator", format!("# the password:\n{pw}\n"), "line 2"),
    ] {
        let props = write(dir.path(), "client.properties", &text);
        assert_no_password(
            case,
            &format!("[kafka]\nclient_properties_file = \"{props}\"\n"),
            &[],
            2,
            &["kafka.client_properties_file", &props, named],
        );
    }
    let props = write(
        dir.path(),
        "ok.properties",
        &format!("sasl.password={pw}\n"),
    );
    assert_no_password(
        "a valid properties file",
        &format!("[kafka]\nclient_properties_file = \"{props}\"\n"),
        &[],
        0,
        &[],
    );
}

#[test]
fn safety_critical_client_properties_are_refused_with_every_other_error() {
    let (code, err) = run_with(
        "[kafka]\nclient_properties = { \"isolation.level\" = \"read_uncommitted\", \"enable.auto.commit\" = \"true\", \"linger.ms\" = \"20\" }\n[policy]\nthreshold = 0\n",
    );
    assert_eq!(code, 2, "{err}");
    for named in [
        "3 errors:",
        "kafka.client_properties.isolation.level",
        "read_committed",
        "kafka.client_properties.enable.auto.commit",
        "policy.threshold",
    ] {
        assert!(err.contains(named), "`{named}` not in: {err}");
    }
    assert!(!err.contains("linger.ms"), "{err}");
}

#[test]
fn a_principal_over_the_command_limit_is_refused() {
    let hash = "a".repeat(64);
    let (code, err) = run_with(&format!(
        "[limits]\nmax_text_bytes = 16\n[[api.tokens]]\nsha256 = \"{hash}\"\nprincipal = \"{}\"\nrole = \"SUPPORT\"\n",
        "p".repeat(17)
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("api.tokens[0].principal") && err.contains("over limits.max_text_bytes (16)"),
        "{err}"
    );
}

/// A stand-in for the API that answers a support-unblock with PENDING and every status query
/// with `status`; returns its base URL.
fn fake_api(status: &'static str) -> String {
    fake_api_answering("202 Accepted", false, status)
}

/// A stand-in API whose support-unblock answers `post` and whose status URL answers 404 first
/// when `not_landed_first`, then `status`.
fn fake_api_answering(post: &'static str, not_landed_first: bool, status: &'static str) -> String {
    let mut landed = !not_landed_first;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut request, mut length) = (String::new(), 0usize);
            reader.read_line(&mut request).unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line.trim().is_empty() {
                    break;
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            let (code, body) = if request.starts_with("POST") {
                (
                    post,
                    r#"{"command_id":"c1","status":"PENDING","status_url":"/v1/tenants/t/mailboxes/m/commands/c1"}"#.to_string(),
                )
            } else if !landed {
                landed = true;
                (
                    "404 Not Found",
                    r#"{"error":"no such command in this tenant"}"#.to_string(),
                )
            } else {
                (
                    "200 OK",
                    format!(r#"{{"command_id":"c1","status":"{status}"}}"#),
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

fn admin_unblock(url: &str, wait: &str) -> (i32, String, String) {
    mailguard(
        &[
            "admin",
            "--url",
            url,
            "unblock",
            "--tenant",
            "t",
            "--ticket",
            "T-1",
            "--wait",
            wait,
            "m@example.com",
        ],
        &[("MAILGUARD_API_TOKEN", "mgt_test")],
    )
}

#[test]
fn admin_unblock_exits_zero_only_for_an_accepted_command() {
    let (code, out, err) = admin_unblock(&fake_api("ACCEPTED"), "5");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"ACCEPTED\""), "{out}");
    let (code, out, err) = admin_unblock(&fake_api("REJECTED"), "5");
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("command rejected"), "{err}");
    // Still pending when the wait ends: the outcome is unknown, which is not success.
    let (code, out, err) = admin_unblock(&fake_api("PENDING"), "0.3");
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("outcome unknown") && err.contains("/v1/tenants/t/mailboxes/m/commands/c1"),
        "{err}"
    );
    assert!(out.contains("\"PENDING\""), "{out}");
    // Sent but not acknowledged in time (503 with the status URL): it is followed until it lands.
    let api = fake_api_answering("503 Service Unavailable", true, "ACCEPTED");
    let (code, out, err) = admin_unblock(&api, "5");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"ACCEPTED\"") && err.contains("not yet acknowledged"),
        "{out} {err}"
    );
    // `--wait 0` asks for the command id alone.
    let (code, out, err) = admin_unblock(&fake_api("PENDING"), "0");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"c1\""), "{out}");
}
