//! Interoperability with implementations that are not ours, on the real broker and the real
//! schema registry that `make test` starts: Python confluent-kafka's `AvroSerializer` (and
//! fastavro's single-object encoding) writes verdicts — mailguard's v1 schema and an evolved v2
//! with an extra optional field, zstd-compressed — and confluent-kafka's `AvroDeserializer`
//! reads what mailguard writes. A round trip through our own codec would prove nothing here.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailguard::config::Config;
use mailguard::timers::SystemClock;
use serde_json::{json, Value};

use common::Rec;

/// The registry of this test run (`make test` starts it and sets the variable).
fn registry() -> String {
    std::env::var("MAILGUARD_TEST_REGISTRY").expect(
        "MAILGUARD_TEST_REGISTRY is not set: interop tests need the real registry; run `make test`",
    )
}

/// The Python of the interop venv (`scripts/interop-env`).
fn python() -> String {
    std::env::var("MAILGUARD_TEST_PYTHON").expect(
        "MAILGUARD_TEST_PYTHON is not set: interop tests need the venv of scripts/interop-env; run `make test`",
    )
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `interop/python/<script> --bootstrap <the test broker>` with `args`, feeding `stdin`;
/// returns stdout lines as JSON.
fn py(script: &str, args: &[&str], stdin: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(repo().join("interop/python").join(script))
        .args(["--bootstrap", &common::bootstrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the interop python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} {args:?} failed: {stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script}: {e}: {l}")))
        .collect()
}

/// Five SPAM verdicts of `mailbox` one second apart, as JSON lines; `extra` fields are added to
/// the last `v2` of them (an evolved writer's field).
fn spam_lines(
    mailbox: &str,
    tag: &str,
    range: std::ops::Range<i64>,
    extra: Option<Value>,
) -> String {
    let t0 = common::now_ms() - 60_000;
    range
        .map(|i| {
            let mut v = json!({
                "message_id": format!("{tag}-{i}"),
                "tenant_id": "acme",
                "mailbox": mailbox,
                "sent_at": t0 + i * 1_000,
                "verdict": "SPAM",
            });
            if let (Some(Value::Object(extra)), Value::Object(m)) = (&extra, &mut v) {
                m.extend(extra.clone());
            }
            format!("{v}\n")
        })
        .collect()
}

/// OutboundVerdict v2: v1 plus one optional field at the end, as a gateway team would evolve it.
fn v2_schema(dir: &std::path::Path) -> PathBuf {
    let mut schema: Value =
        serde_json::from_str(include_str!("../schemas/OutboundVerdict.avsc")).expect("v1 schema");
    schema["fields"].as_array_mut().unwrap().push(json!({
        "name": "spam_score", "type": ["null", "double"], "default": null,
        "doc": "v2: the gateway's spam score"
    }));
    let path = dir.join("OutboundVerdict.v2.avsc");
    std::fs::write(&path, schema.to_string()).unwrap();
    path
}

fn registry_config(partitions: i32) -> (Config, tempfile::TempDir) {
    let (mut cfg, dir) = common::test_config(partitions);
    cfg.registry.url = registry();
    (cfg, dir)
}

/// `n` records of `topic` as confluent-kafka's `AvroDeserializer` reads them (ids from `reg`).
fn consume_avro(reg: &str, topic: &str, n: usize) -> Vec<Value> {
    let n = n.to_string();
    let args = [
        "--registry",
        reg,
        "--topic",
        topic,
        "--expect",
        &n,
        "--timeout",
        "60",
    ];
    py("consume_avro.py", &args, "")
}

/// The DLQ stays empty for a second.
fn assert_nothing_dead_lettered(cfg: &Config) {
    let dlq = common::consume_exactly(
        &cfg.topics.dlq,
        0,
        Duration::from_secs(5),
        Duration::from_secs(1),
    );
    assert!(dlq.is_empty(), "{dlq:?}");
}

fn decoded_values(recs: &[Value]) -> Vec<&Value> {
    recs.iter().map(|r| &r["value"]).collect()
}

#[test]
fn reference_serializer_v1_and_v2_verdicts_block_and_the_reference_deserializer_reads_every_output()
{
    let (cfg, dir) = registry_config(2);
    common::create_topics(&cfg);
    let running = common::start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(60));
    let reg = registry();
    let v2 = v2_schema(dir.path());
    let mailbox = "Interop.User@Example.com";
    // Three with mailguard's schema, two with the evolved one: the trip needs both.
    let v1_out = py(
        "produce_verdicts.py",
        &[
            "--registry",
            &reg,
            "--topic",
            &cfg.topics.verdicts,
            "--compression",
            "zstd",
        ],
        &spam_lines(mailbox, "m", 0..3, None),
    );
    let v2_out = py(
        "produce_verdicts.py",
        &[
            "--registry",
            &reg,
            "--topic",
            &cfg.topics.verdicts,
            "--schema",
            v2.to_str().unwrap(),
            "--compression",
            "zstd",
        ],
        &spam_lines(mailbox, "m", 3..5, Some(json!({"spam_score": 9.5}))),
    );
    let (id1, id2) = (&v1_out[0]["schema_id"], &v2_out[0]["schema_id"]);
    assert_ne!(
        id1, id2,
        "v2 must be registered under a new id: {v1_out:?} {v2_out:?}"
    );

    // Exactly one block, read by our reader…
    let blocks = common::consume_exactly(
        &cfg.topics.blocks,
        1,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    assert_eq!(blocks[0].key.as_deref(), Some("interop.user@example.com"));
    // …and by confluent-kafka's AvroDeserializer, through the id mailguard registered.
    let consume = |topic: &str, n: usize| consume_avro(&reg, topic, n);
    let block = consume(&cfg.topics.blocks, 1);
    let block = decoded_values(&block)[0].clone();
    assert_eq!(block["state"], "BLOCKED", "{block}");
    assert_eq!(block["strike"], 1, "{block}");
    assert_eq!(block["mailbox"], "interop.user@example.com");
    let evidence = block["evidence_message_ids"].as_array().unwrap();
    assert_eq!(evidence.len(), 5, "{block}");
    let alerts = consume(&cfg.topics.alerts, 1);
    assert_eq!(
        decoded_values(&alerts)[0]["scan_skipped_reason"],
        "OWNER_UNKNOWN"
    );
    let events = consume(&cfg.topics.events, 3);
    let kinds: Vec<&Value> = decoded_values(&events).iter().map(|e| &e["kind"]).collect();
    assert_eq!(
        kinds,
        ["MAILBOX_BLOCKED", "SCAN_SKIPPED", "ALERT_SENT"],
        "{events:?}"
    );
    assert_nothing_dead_lettered(&cfg);
    running.stop().expect("pipeline ended cleanly");
}

#[test]
fn an_incompatible_writer_schema_is_dead_lettered_naming_its_id() {
    let (cfg, dir) = registry_config(1);
    common::create_topics(&cfg);
    let running = common::start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(60));
    // `sent_at` as a string: same record name, but no Avro resolution reads it as a long.
    let mut schema: Value =
        serde_json::from_str(include_str!("../schemas/OutboundVerdict.avsc")).unwrap();
    for f in schema["fields"].as_array_mut().unwrap() {
        if f["name"] == "sent_at" {
            f["type"] = json!("string");
        }
    }
    let path = dir.path().join("incompatible.avsc");
    std::fs::write(&path, schema.to_string()).unwrap();
    let line = json!({"message_id": "x-1", "tenant_id": "acme", "mailbox": "bad@example.com",
                      "sent_at": "yesterday", "verdict": "SPAM"});
    let out = py(
        "produce_verdicts.py",
        &[
            "--registry",
            &registry(),
            "--topic",
            &cfg.topics.verdicts,
            "--schema",
            path.to_str().unwrap(),
        ],
        &format!("{line}\n"),
    );
    let id = out[0]["schema_id"].as_u64().expect("schema id");
    let dlq: Vec<Rec> = common::consume_exactly(
        &cfg.topics.dlq,
        1,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let reason = &dlq[0].headers["mailguard.error.reason"];
    assert!(reason.contains(&format!("schema id {id}")), "{reason}");
    assert!(
        reason.contains("sent_at"),
        "the reason names the field: {reason}"
    );
    running.stop().expect("pipeline ended cleanly");
}

#[test]
fn single_object_verdicts_from_fastavro_v1_and_a_known_v2_writer_trip_without_a_registry() {
    let (mut cfg, dir) = common::test_config(1);
    let schemas = dir.path().join("writer-schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let v2 = v2_schema(&schemas);
    cfg.codec.writer_schemas_dir = Some(schemas);
    common::create_topics(&cfg);
    let running = common::start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(60));
    let mailbox = "so@example.com";
    py(
        "produce_verdicts.py",
        &["--topic", &cfg.topics.verdicts, "--single-object"],
        &spam_lines(mailbox, "s", 0..3, None),
    );
    py(
        "produce_verdicts.py",
        &[
            "--topic",
            &cfg.topics.verdicts,
            "--single-object",
            "--schema",
            v2.to_str().unwrap(),
            "--compression",
            "zstd",
        ],
        &spam_lines(mailbox, "s", 3..5, Some(json!({"spam_score": 1.0}))),
    );
    let blocks = common::consume_exactly(
        &cfg.topics.blocks,
        1,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    assert_eq!(blocks[0].key.as_deref(), Some(mailbox));
    // The reference decoder reads mailguard's single-object output with schemas/ alone.
    let out = py(
        "consume_avro.py",
        &[
            "--topic",
            &cfg.topics.blocks,
            "--expect",
            "1",
            "--schema",
            repo().join("schemas/MailboxBlock.avsc").to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out[0]["value"]["state"], "BLOCKED", "{out:?}");
    running.stop().expect("pipeline ended cleanly");
}

#[test]
fn verdicts_from_kafkas_own_java_client_zstd_compressed_trip_a_block() {
    let (cfg, _dir) = common::test_config(2);
    common::create_topics(&cfg);
    let running = common::start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(60));
    let mailbox = "Java.Client@Example.com";
    // Kafka's Java producer (zstd batches, its murmur2 partitioner) and Java Avro's
    // BinaryMessageEncoder: no line of it shares code with mailguard or librdkafka.
    let mut child = Command::new(repo().join("scripts/java-produce"))
        .args(["--bootstrap", &common::bootstrap()])
        .args(["--topic", &cfg.topics.verdicts, "--compression", "zstd"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/java-produce");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spam_lines(mailbox, "j", 0..5, None).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "java-produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blocks = common::consume_exactly(
        &cfg.topics.blocks,
        1,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    assert_eq!(blocks[0].key.as_deref(), Some("java.client@example.com"));
    assert_nothing_dead_lettered(&cfg);
    running.stop().expect("pipeline ended cleanly");
}

/// The registry's own compatibility check (`BACKWARD`, Confluent's default) of every schema in
/// `schemas/` against each earlier version in `schemas/history/`: records that earlier writers
/// produced stay readable by the current schema. A deliberately incompatible change is refused,
/// so the check can fail.
#[test]
fn every_schema_is_backward_compatible_with_its_history() {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let call = |method: &str, path: &str, body: Value| -> (u16, Value) {
        let url = format!("{}{path}", registry());
        let req = match method {
            "PUT" => agent.put(&url),
            _ => agent.post(&url),
        };
        let mut r = req
            .content_type("application/vnd.schemaregistry.v1+json")
            .send(body.to_string())
            .expect("registry answers");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    // Registers `old` under a new subject with BACKWARD and asks whether `new` may follow it.
    let compatible = |old: &str, new: &str| -> bool {
        let subject = common::unique("compat");
        let (s, v) = call(
            "PUT",
            &format!("/config/{subject}"),
            json!({"compatibility": "BACKWARD"}),
        );
        assert_eq!(s, 200, "set compatibility: {v}");
        let (s, v) = call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            json!({"schema": old}),
        );
        assert_eq!(s, 200, "register: {v}");
        let (s, v) = call(
            "POST",
            &format!("/compatibility/subjects/{subject}/versions/latest"),
            json!({"schema": new}),
        );
        assert_eq!(s, 200, "compatibility check: {v}");
        v["is_compatible"].as_bool().expect("is_compatible")
    };
    let history = repo().join("schemas/history");
    let mut checked = 0;
    for entry in std::fs::read_dir(&history).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(record) = name.strip_suffix(".avsc").and_then(|n| n.split_once(".v")) else {
            continue;
        };
        let old = std::fs::read_to_string(&path).unwrap();
        let new =
            std::fs::read_to_string(repo().join(format!("schemas/{}.avsc", record.0))).unwrap();
        assert!(
            compatible(&old, &new),
            "schemas/{}.avsc cannot read {name}",
            record.0
        );
        checked += 1;
    }
    assert!(checked > 0, "no schema history in {}", history.display());
    // The control: a new field without a default cannot read the old records.
    let old = std::fs::read_to_string(history.join("EventLogEntry.v1.avsc")).unwrap();
    let mut breaking: Value = serde_json::from_str(&old).unwrap();
    breaking["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "required_new", "type": "string"}));
    assert!(
        !compatible(&old, &breaking.to_string()),
        "the registry accepted a field without a default"
    );
}

/// Scan results written by confluent-kafka's `AvroSerializer` (the registry's id, as an
/// endpoint management system would) end the incident; the `INCIDENT_UPDATE` alert and the new
/// events are read by its `AvroDeserializer` through the ids mailguard registered.
#[test]
fn scan_results_from_the_reference_serializer_end_an_incident_read_by_the_reference_deserializer() {
    let (cfg, _dir) = registry_config(2);
    common::create_topics(&cfg);
    let mailbox = "scanned.user@example.com";
    let (owner, devices) = common::owner_records(mailbox, "acme", "o-i", &["pc-1", "pc-2"]);
    common::produce(&cfg.topics.mailboxes, &[(Some(mailbox), Some(owner))]);
    common::produce(&cfg.topics.devices, &[(Some("o-i"), Some(devices))]);
    let running = common::start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(60));
    let reg = registry();
    py(
        "produce_verdicts.py",
        &["--registry", &reg, "--topic", &cfg.topics.verdicts],
        &spam_lines(mailbox, "s", 0..5, None),
    );
    let consume = |topic: &str, n: usize| consume_avro(&reg, topic, n);
    let requests = consume(&cfg.topics.scan_requests, 2);
    let lines: String = decoded_values(&requests)
        .iter()
        .map(|q| {
            let status = if q["device_id"] == "pc-1" {
                "CLEAN"
            } else {
                "THREATS_REMAINING"
            };
            let r = json!({
                "_key": q["device_id"],
                "request_id": q["request_id"],
                "incident_id": q["incident_id"],
                "tenant_id": q["tenant_id"],
                "device_id": q["device_id"],
                "status": status,
                "threats": if status == "CLEAN" { json!([]) } else { json!(["EICAR"]) },
                "started_at": q["requested_at"],
                "completed_at": q["requested_at"],
                "mailbox": q["mailbox"],
            });
            format!("{r}\n")
        })
        .collect();
    let schema = repo().join("schemas/ScanResult.avsc");
    py(
        "produce_verdicts.py",
        &[
            "--registry",
            &reg,
            "--topic",
            &cfg.topics.scan_results,
            "--schema",
            schema.to_str().unwrap(),
        ],
        &lines,
    );
    let alerts = consume(&cfg.topics.alerts, 2);
    let update = decoded_values(&alerts)
        .into_iter()
        .find(|a| a["kind"] == "INCIDENT_UPDATE")
        .cloned()
        .expect("an INCIDENT_UPDATE alert");
    let summary = update["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!(
            "Incident of {mailbox} needs attention: 1 of 2 devices"
        )),
        "{summary}"
    );
    let events = consume(&cfg.topics.events, 8);
    let kinds: Vec<&Value> = decoded_values(&events).iter().map(|e| &e["kind"]).collect();
    assert_eq!(
        kinds[4..],
        [
            "SCAN_COMPLETED",
            "SCAN_COMPLETED",
            "INCIDENT_NEEDS_ATTENTION",
            "ALERT_SENT"
        ],
        "{events:?}"
    );
    assert_nothing_dead_lettered(&cfg);
    running.stop().expect("pipeline ended cleanly");
}
