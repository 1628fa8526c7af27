//! A bad configuration stops the binary at start, with a message naming the field.

mod common;

use std::io::Write;
use std::process::Command;

fn run_with(config: &str) -> (i32, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(config.as_bytes()).unwrap();
    let out = Command::new(common::binary())
        .args(["--config", f.path().to_str().unwrap(), "check-config"])
        .env_remove("MAILGUARD_CONFIG")
        .output()
        .expect("run mailguard");
    (
        out.status.code().unwrap_or(-1),
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
