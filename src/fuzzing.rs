//! Bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, cargo-fuzz/libFuzzer), one function per
//! target taking the raw input. They live here, not in the fuzz crate, so that
//! `tests/fuzz_replay.rs` replays the committed corpus and every crash found (as regression
//! inputs) through the very same code in an ordinary `cargo test`, without nightly.
//!
//! What each target checks, beyond "no panic" (libFuzzer's `-malloc_limit_mb`/`-rss_limit_mb`
//! add "no allocation out of proportion to the input"):
//!
//! - [`verdict`]: the compiled field program ([`Codec::decode_verdict`],
//!   [`Codec::decode_verdict_ref`]) and apache-avro's generic path
//!   ([`Codec::decode_verdict_generic`]) agree: same verdict when both succeed, and one fails
//!   exactly when the other does.
//! - [`command`], [`owner`], [`devices`], [`tenant`], [`effect`]: the generic decoders.
//! - [`framing`]: [`Codec::header`], [`Codec::detect`], [`detect`](crate::codec::detect),
//!   [`Codec::body`], consistent with one another.
//! - [`json`]: [`Codec::json_to_avro`] (the CLI's JSON path); what it writes reads back.
//! - [`state`]: [`MailboxState::decode`]; a decoded state re-encodes and decodes to itself.
//! - [`ocf`]: the backtest's Avro object container reader
//!   ([`OcfReader`](crate::backtest::decode::OcfReader)) over the input as a whole file;
//!   every verdict it gives has its required fields, and nothing is read past the input.
//! - [`jsonl`]: the backtest's JSON-lines verdict ([`json_line`](crate::backtest::decode::json_line));
//!   a line it accepts, `produce`'s path ([`Codec::json_to_avro`]) accepts too and decodes to the
//!   same verdict.
//! - [`resolve`]: a writer schema made from the input (mutations of `schemas/*.avsc`, or raw
//!   JSON text) through [`Codec::add_writer_schema`], then a body decoded with it; verdicts
//!   differentially, as in [`verdict`].
//!
//! Inputs of the record targets start with a *mode* byte that frames the rest, so the fuzzer
//! spends its time on bodies rather than on guessing 8-byte fingerprints: bit 0 picks the codec
//! (single-object / Confluent ids), bits 1–2 pick the header: 0 the codec's own for the record
//! type, 1 the legacy fingerprint, 2 and 3 none (the rest is the whole value, header included).
//!
//! Not part of the API: `#[doc(hidden)]`, may change with the targets.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{json, Value as Json};

use crate::codec::{schema_fingerprint, Codec, CodecError, RecordType, WriterKey};
use crate::policy::state::MailboxState;

/// The body of a fuzz target.
pub type Target = fn(&[u8]);

/// Names of every target, as in `fuzz/fuzz_targets/<name>.rs`, with its body.
pub const TARGETS: [(&str, Target); 12] = [
    ("verdict", verdict),
    ("command", command),
    ("owner", owner),
    ("devices", devices),
    ("tenant", tenant),
    ("effect", effect),
    ("framing", framing),
    ("json", json),
    ("state", state),
    ("resolve", resolve),
    ("ocf", ocf),
    ("jsonl", jsonl),
];

static SINGLE: LazyLock<Codec> = LazyLock::new(Codec::default);

/// Confluent id of each record type in the Confluent codec: 100 + its index.
fn confluent_id(rt: RecordType) -> u32 {
    100 + rt as u32
}

static CONFLUENT: LazyLock<Codec> =
    LazyLock::new(|| Codec::new(RecordType::ALL.map(|rt| (rt, confluent_id(rt))).into()));

/// Splits off the mode byte and frames the rest as a value of `rt` (see the module docs).
fn framed(rt: RecordType, data: &[u8]) -> Option<(&'static Codec, Vec<u8>)> {
    let (&mode, rest) = data.split_first()?;
    let codec: &Codec = if mode & 1 == 0 { &SINGLE } else { &CONFLUENT };
    let mut out = Vec::with_capacity(rest.len() + 10);
    match (mode >> 1) & 3 {
        0 => codec.write_header(rt, &mut out),
        1 => {
            out.extend_from_slice(&crate::codec::SINGLE_OBJECT_MAGIC);
            out.extend_from_slice(&rt.legacy_fingerprint().to_le_bytes());
        }
        _ => {}
    }
    out.extend_from_slice(rest);
    Some((codec, out))
}

/// Every error must render (it is the DLQ reason) and have a code.
fn touch(e: &CodecError) {
    let _ = e.to_string();
    let _ = e.code();
    let _ = e.is_transient();
}

fn check<T>(r: Result<T, CodecError>) -> Option<T> {
    r.inspect_err(touch).ok()
}

/// The three verdict decoders of `codec` on `bytes` agree.
fn verdict_differential(codec: &Codec, bytes: &[u8]) {
    let fast = codec.decode_verdict(bytes);
    let borrowed = codec.decode_verdict_ref(bytes).map(|v| v.to_owned());
    let generic = codec.decode_verdict_generic(bytes);
    match (&fast, &borrowed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "decode_verdict and decode_verdict_ref disagree"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("decode_verdict {fast:?} but decode_verdict_ref {borrowed:?}"),
    }
    match (&fast, &generic) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "fast and generic verdict decoders disagree"),
        (Err(a), Err(b)) => {
            touch(a);
            touch(b);
        }
        _ => panic!("fast verdict decoder {fast:?} but generic {generic:?}"),
    }
}

/// `OutboundVerdict`: fast and generic decoders, differentially.
pub fn verdict(data: &[u8]) {
    if let Some((codec, bytes)) = framed(RecordType::OutboundVerdict, data) {
        verdict_differential(codec, &bytes);
    }
}

/// `AdminCommand`.
pub fn command(data: &[u8]) {
    if let Some((codec, bytes)) = framed(RecordType::AdminCommand, data) {
        check(codec.decode_command(&bytes));
    }
}

/// `MailboxOwner`.
pub fn owner(data: &[u8]) {
    if let Some((codec, bytes)) = framed(RecordType::MailboxOwner, data) {
        check(codec.decode_owner(&bytes));
    }
}

/// `OwnerDevices`.
pub fn devices(data: &[u8]) {
    if let Some((codec, bytes)) = framed(RecordType::OwnerDevices, data) {
        check(codec.decode_devices(&bytes));
    }
}

/// `TenantSettings`.
pub fn tenant(data: &[u8]) {
    if let Some((codec, bytes)) = framed(RecordType::TenantSettings, data) {
        check(codec.decode_tenant_record(&bytes));
    }
}

const OUTPUTS: [RecordType; 4] = [
    RecordType::MailboxBlock,
    RecordType::ScanRequest,
    RecordType::Alert,
    RecordType::EventLogEntry,
];

/// The outputs (`MailboxBlock`, `ScanRequest`, `Alert`, `EventLogEntry`) through
/// [`Codec::decode_effect`]; bits 5–6 of the mode byte pick the record type of the header.
pub fn effect(data: &[u8]) {
    let Some(&mode) = data.first() else { return };
    let rt = OUTPUTS[usize::from(mode >> 5) % 4];
    if let Some((codec, bytes)) = framed(rt, data) {
        if let Some(e) = check(codec.decode_effect(&bytes)) {
            assert_eq!(Codec::effect_type(&e), rt, "decoded as another type");
        }
    }
}

/// Framing: the header, both `detect`s and `body`, on raw bytes and both codecs.
pub fn framing(data: &[u8]) {
    let header = Codec::header(data);
    if let Err(e) = &header {
        touch(e);
    }
    let by_fingerprint = crate::codec::detect(data);
    for codec in [&*SINGLE, &*CONFLUENT] {
        let detected = codec.detect(data);
        if detected.is_some() {
            assert!(
                header.is_ok(),
                "detected a type in a value without a header"
            );
        }
        if let Some(rt) = by_fingerprint {
            assert_eq!(
                detected,
                Some(rt),
                "codec::detect and Codec::detect disagree"
            );
        }
        for rt in RecordType::ALL {
            let body = codec.body(rt, data);
            if let Ok(body) = &body {
                let (_, b) = header.as_ref().expect("a body without a header");
                assert_eq!(body, b);
            }
            if detected == Some(rt) {
                // A known earlier writer schema of ours (schemas/history) is detected too, but
                // only the embedded one has a raw body; the others are read through a decoder.
                let older = matches!(&body, Err(CodecError::IncompatibleSchema { record, .. }) if *record == rt);
                assert!(
                    body.is_ok() || older,
                    "detected as {rt} but no body: {body:?}"
                );
                if older {
                    let _ = codec.decode_value(rt, data);
                }
            }
        }
    }
}

/// The CLI's JSON path: the first byte picks the record type, the rest is JSON. What
/// `json_to_avro` writes decodes and converts back to JSON.
pub fn json(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let rt = RecordType::ALL[usize::from(sel) % RecordType::ALL.len()];
    let Ok(j) = serde_json::from_slice::<Json>(rest) else {
        return;
    };
    let codec: &Codec = if sel & 0x80 == 0 { &SINGLE } else { &CONFLUENT };
    let mut out = Vec::new();
    match codec.json_to_avro(rt, &j, &mut out) {
        Ok(()) => {
            let back = codec
                .avro_to_json(rt, &out)
                .unwrap_or_else(|e| panic!("json_to_avro wrote what avro_to_json refuses: {e}"));
            let mut again = Vec::new();
            // Numbers written as floats (e.g. 1.0 for a double) come back the same, so the
            // JSON of the Avro value is a fixed point.
            codec
                .json_to_avro(rt, &back, &mut again)
                .unwrap_or_else(|e| panic!("avro_to_json gave JSON json_to_avro refuses: {e}"));
            assert_eq!(out, again, "JSON → Avro → JSON → Avro is not stable");
        }
        Err(e) => {
            touch(&e);
            assert!(out.is_empty(), "json_to_avro failed but left bytes in out");
        }
    }
}

/// The state encoding: decode, and a decoded state round-trips.
pub fn state(data: &[u8]) {
    let Ok(s) = MailboxState::decode(data) else {
        return;
    };
    let bytes = s.to_bytes();
    let again = MailboxState::decode(&bytes)
        .unwrap_or_else(|e| panic!("the encoding of a decoded state does not decode: {e}"));
    assert_eq!(s, again, "state does not round-trip");
    assert_eq!(bytes, again.to_bytes(), "state encoding is not canonical");
}

// ---------------------------------------------------------------------------------------------
// Schema resolution

/// Field types a mutation may give a writer field: every Avro kind, promotions, unions, named
/// types (`n` makes the names unique within the schema).
fn palette(k: u8, n: usize) -> Json {
    match k % 20 {
        0 => json!("null"),
        1 => json!("boolean"),
        2 => json!("int"),
        3 => json!("long"),
        4 => json!("float"),
        5 => json!("double"),
        6 => json!("bytes"),
        7 => json!("string"),
        8 => json!({"type": "long", "logicalType": "timestamp-millis"}),
        9 => json!({"type": "array", "items": "string"}),
        10 => json!({"type": "map", "values": "long"}),
        11 => json!(["null", "string"]),
        12 => json!(["string", "null"]),
        13 => json!(["null", "int", "string"]),
        14 => json!(["null", "long"]),
        15 => {
            json!({"type": "enum", "name": format!("E{n}"), "symbols": ["CLEAN", "SPAM", "VIRUS", "BULK"]})
        }
        16 => json!({"type": "fixed", "name": format!("F{n}"), "size": 4}),
        17 => {
            json!({"type": "record", "name": format!("R{n}"), "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": ["null", "string"]}]})
        }
        18 => json!({"type": "array", "items": {"type": "array", "items": "long"}}),
        _ => json!({"type": "int", "logicalType": "date"}),
    }
}

/// Applies one 3-byte mutation `[op, field, arg]` to the schema's fields.
fn mutate(fields: &mut Vec<Json>, [op, i, arg]: [u8; 3], n: usize) {
    let len = fields.len();
    let i = usize::from(i) % len.max(1);
    match op % 9 {
        0 if len > 0 => {
            fields.remove(i);
        }
        1 if len > 0 => fields.swap(i, usize::from(arg) % len),
        2 if len > 0 => fields[i]["type"] = palette(arg, n),
        3 if len > 0 => {
            let t = fields[i]["type"].take();
            fields[i]["type"] = match t {
                Json::Array(mut branches) if !branches.is_empty() => {
                    branches.swap_remove(usize::from(arg) % branches.len())
                }
                t if arg & 1 == 0 => json!(["null", t]),
                t => json!([t, "null"]),
            };
        }
        4 => fields.insert(
            i.min(len),
            json!({"name": format!("x{n}"), "type": palette(arg, n)}),
        ),
        5 if len > 0 => fields[i]["name"] = json!(format!("x{n}")),
        6 if len > 0 => {
            // Enum symbols: drop one, add one, or reverse them.
            let t = &mut fields[i]["type"];
            if let Some(symbols) = t.get_mut("symbols").and_then(Json::as_array_mut) {
                match arg % 3 {
                    0 if !symbols.is_empty() => {
                        symbols.remove(usize::from(arg) % symbols.len());
                    }
                    1 => symbols.push(json!(format!("NEW{arg}"))),
                    _ => symbols.reverse(),
                }
            }
        }
        7 if len > 0 => {
            let t = fields[i]["type"].take();
            fields[i]["type"] = if arg & 1 == 0 {
                json!({"type": "array", "items": t})
            } else {
                json!({"type": "map", "values": t})
            };
        }
        8 if len > 0 => {
            // Defaults do not matter to a writer, but a bad one must be refused, not crash.
            fields[i]["default"] = match arg % 4 {
                0 => json!(null),
                1 => json!(arg),
                2 => json!("d"),
                _ => json!([]),
            };
        }
        _ => {}
    }
}

/// A writer schema from the input and a body for it. First byte: bits 0–3 the record type,
/// bit 7 set: raw schema JSON text up to the first NUL, then the body; clear: the next byte is
/// the number of 3-byte mutations of the embedded schema (mod 8) that follow, then the body.
fn writer_schema(data: &[u8]) -> Option<(RecordType, String, &[u8])> {
    let (&sel, rest) = data.split_first()?;
    let rt = RecordType::ALL[usize::from(sel & 0x0F) % RecordType::ALL.len()];
    if sel & 0x80 != 0 {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let text = std::str::from_utf8(&rest[..end]).ok()?;
        return Some((rt, text.to_owned(), rest.get(end + 1..).unwrap_or_default()));
    }
    let (&n, rest) = rest.split_first()?;
    let n = usize::from(n % 8);
    let ops = rest.get(..n * 3)?;
    let mut schema: Json = serde_json::from_str(rt.schema_json()).expect("embedded schema");
    let fields = schema["fields"].as_array_mut().expect("a record's fields");
    for (k, op) in ops.chunks_exact(3).enumerate() {
        mutate(fields, [op[0], op[1], op[2]], k);
    }
    Some((rt, schema.to_string(), &rest[n * 3..]))
}

/// Schema resolution: [`Codec::add_writer_schema`] with a writer schema made from the input
/// (see `writer_schema`), then the body, framed with the schema's key, through the decoder of
/// the record type it names (verdicts: fast and generic, differentially).
pub fn resolve(data: &[u8]) {
    let Some((_, schema, body)) = writer_schema(data) else {
        return;
    };
    // A fresh codec per input: its schema store keeps every writer it was given.
    let codec = Codec::new(HashMap::new());
    let key = schema_fingerprint(&schema).unwrap_or(0x5eed);
    let Some(rt) = check(codec.add_writer_schema(WriterKey::Fingerprint(key), &schema)) else {
        return;
    };
    let mut bytes = Vec::with_capacity(body.len() + 10);
    bytes.extend_from_slice(&crate::codec::SINGLE_OBJECT_MAGIC);
    bytes.extend_from_slice(&key.to_le_bytes());
    bytes.extend_from_slice(body);
    assert_eq!(codec.detect(&bytes), Some(rt));
    match rt {
        RecordType::OutboundVerdict => verdict_differential(&codec, &bytes),
        RecordType::AdminCommand => drop(check(codec.decode_command(&bytes))),
        RecordType::MailboxOwner => drop(check(codec.decode_owner(&bytes))),
        RecordType::OwnerDevices => drop(check(codec.decode_devices(&bytes))),
        RecordType::TenantSettings => drop(check(codec.decode_tenant_record(&bytes))),
        _ => {
            if let Some(e) = check(codec.decode_effect(&bytes)) {
                assert_eq!(Codec::effect_type(&e), rt);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds

/// One valid record of each type, as the friendly JSON of `mailguard produce`.
fn sample_json(rt: RecordType) -> Json {
    match rt {
        RecordType::OutboundVerdict => json!({"message_id": "m-1", "tenant_id": "t-1",
            "mailbox": "Alice@Example.COM", "sent_at": 1_700_000_000_000_i64, "verdict": "SPAM",
            "recipient_count": 3, "gateway_id": "gw-1"}),
        RecordType::MailboxOwner => json!({"mailbox": "alice@example.com", "tenant_id": "t-1",
            "owner_id": "o-1", "owner_name": "Alice"}),
        RecordType::OwnerDevices => json!({"owner_id": "o-1", "tenant_id": "t-1",
            "device_ids": ["d-1", "d-2"]}),
        RecordType::TenantSettings => json!({"tenant_id": "t-1", "sync_security_enabled": true,
            "endpoint_licence": true, "email_licence": "ADVANCED", "threshold": 5,
            "window_ms": 600_000, "base_block_ms": 3_600_000, "permanent_strike": 3}),
        RecordType::AdminCommand => json!({"command_id": "c-1", "mailbox": "alice@example.com",
            "tenant_id": "t-1", "kind": "SUPPORT_UNBLOCK", "actor": "bob", "actor_role": "SUPPORT",
            "ticket": "T-1", "issued_at": 1_700_000_000_000_i64}),
        RecordType::MailboxBlock => json!({"mailbox": "alice@example.com", "tenant_id": "t-1",
            "state": "BLOCKED", "strike": 1, "blocked_at": 1_700_000_000_000_i64,
            "blocked_until": 1_700_003_600_000_i64,
            "incident_id": "6f1c2d3e-4a5b-5c6d-8e7f-8091a2b3c4d5",
            "evidence_message_ids": ["m-1", "m-2"], "updated_at": 1_700_000_000_001_i64}),
        RecordType::ScanRequest => json!({"request_id": "r-1",
            "incident_id": "6f1c2d3e-4a5b-5c6d-8e7f-8091a2b3c4d5", "tenant_id": "t-1",
            "device_id": "d-1", "owner_id": "o-1", "mailbox": "alice@example.com",
            "requested_at": 1_700_000_000_000_i64}),
        RecordType::Alert => json!({"alert_id": "a-1",
            "incident_id": "6f1c2d3e-4a5b-5c6d-8e7f-8091a2b3c4d5", "tenant_id": "t-1",
            "mailbox": "alice@example.com", "owner_id": "o-1", "strike": 1, "state": "BLOCKED",
            "blocked_until": 1_700_003_600_000_i64, "devices_scanned": ["d-1"],
            "scan_skipped_reason": null, "summary": "blocked"}),
        RecordType::EventLogEntry => json!({"event_id": "e-1",
            "incident_id": "6f1c2d3e-4a5b-5c6d-8e7f-8091a2b3c4d5", "tenant_id": "t-1",
            "mailbox": "alice@example.com", "kind": "MAILBOX_BLOCKED",
            "at": 1_700_000_000_000_i64, "detail": "strike 1"}),
        RecordType::Exemption => json!({"tenant_id": "t-1", "pattern": "*@news.example.com",
            "reason": "newsletter", "actor": "bob", "actor_role": "ADMIN", "command_id": "c-1",
            "created_at": 1_700_000_000_000_i64, "expires_at": 1_700_003_600_000_i64}),
        RecordType::ScanResult => json!({"request_id": "r-1",
            "incident_id": "6f1c2d3e-4a5b-5c6d-8e7f-8091a2b3c4d5", "tenant_id": "t-1",
            "device_id": "d-1", "status": "THREATS_REMAINING", "threats": ["EICAR"],
            "started_at": 1_700_000_000_000_i64, "completed_at": 1_700_000_060_000_i64,
            "mailbox": "alice@example.com"}),
    }
}

/// The Avro body (no header) of the sample record of `rt`.
fn sample_body(rt: RecordType) -> Vec<u8> {
    let mut out = Vec::new();
    SINGLE
        .json_to_avro(rt, &sample_json(rt), &mut out)
        .unwrap_or_else(|e| panic!("sample {rt}: {e}"));
    out.split_off(10)
}

fn zigzag(v: i64, out: &mut Vec<u8>) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

/// A few valid inputs per target to start the fuzzer from (`fuzz/corpus/<target>/seed-*`,
/// written by `tests/fuzz_replay.rs`), including the shape of the allocation bomb fixed in
/// `wire.rs` (`skip_blocks`): an `OwnerDevices` whose `device_ids` block has count −2^29.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("verdict", record_seeds(RecordType::OutboundVerdict)),
        ("command", record_seeds(RecordType::AdminCommand)),
        ("owner", record_seeds(RecordType::MailboxOwner)),
        ("devices", devices_seeds()),
        ("tenant", record_seeds(RecordType::TenantSettings)),
        ("effect", effect_seeds()),
        ("framing", framing_seeds()),
        ("json", json_seeds()),
        ("state", state_seeds()),
        ("resolve", resolve_seeds()),
        ("ocf", ocf_seeds()),
        ("jsonl", jsonl_seeds()),
    ]
}

/// A fuzz input: the target's mode byte, then `body`.
fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    [&[mode][..], body].concat()
}

/// The sample of an input record type `rt` after each codec's own header (modes 0, 1), after the
/// legacy fingerprint (2), and as a whole value framed by our own header (4).
fn record_seeds(rt: RecordType) -> Vec<Vec<u8>> {
    let body = sample_body(rt);
    let mut raw = Vec::new();
    SINGLE.write_header(rt, &mut raw);
    raw.extend_from_slice(&body);
    vec![
        with_mode(0, &body),
        with_mode(1, &body),
        with_mode(2, &body),
        with_mode(4, &raw),
    ]
}

/// `OwnerDevices`' record seeds and the allocation bomb: owner_id, tenant_id, then a
/// `device_ids` block of count −536 870 912, byte size 0, nothing after.
fn devices_seeds() -> Vec<Vec<u8>> {
    let mut devices = record_seeds(RecordType::OwnerDevices);
    let mut bomb = Vec::new();
    for s in ["o", "t"] {
        zigzag(s.len() as i64, &mut bomb);
        bomb.extend_from_slice(s.as_bytes());
    }
    zigzag(-536_870_912, &mut bomb);
    zigzag(0, &mut bomb);
    bomb.push(0);
    devices.push(with_mode(0, &bomb));
    devices
}

/// Each output record type's sample, its type in bits 5–6 of the mode byte, on both codecs.
fn effect_seeds() -> Vec<Vec<u8>> {
    OUTPUTS
        .iter()
        .enumerate()
        .flat_map(|(i, &rt)| {
            let body = sample_body(rt);
            let m = (i as u8) << 5;
            [with_mode(m, &body), with_mode(m | 1, &body)]
        })
        .collect()
}

/// Every record type's header in our framing and in Confluent's.
fn framing_seeds() -> Vec<Vec<u8>> {
    RecordType::ALL
        .iter()
        .flat_map(|&rt| {
            let mut a = Vec::new();
            SINGLE.write_header(rt, &mut a);
            let mut b = Vec::new();
            CONFLUENT.write_header(rt, &mut b);
            [a, b]
        })
        .collect()
}

/// Every record type's sample as friendly JSON.
fn json_seeds() -> Vec<Vec<u8>> {
    RecordType::ALL
        .iter()
        .map(|&rt| with_mode(rt as u8, sample_json(rt).to_string().as_bytes()))
        .collect()
}

/// A mailbox state idle with strikes and a window, the same blocked, the default, and the
/// blocked one with a shadow.
fn state_seeds() -> Vec<Vec<u8>> {
    let mut s = MailboxState {
        strikes: 2,
        touched_at: 1_700_000_000_000,
        tenant_id: "t-1".into(),
        counting_floor: Some(1_699_999_000_000),
        last_block_end: Some(1_699_999_000_000),
        ..MailboxState::default()
    };
    s.window.insert(1_700_000_000_000, "m-1");
    s.window.insert(1_700_000_000_500, "m-2");
    let idle = s.to_bytes();
    s.block = Some(crate::policy::state::CurrentBlock {
        strike: 2,
        blocked_at: 1_700_000_000_500,
        blocked_until: Some(1_700_007_200_500),
        incident_id: uuid::Uuid::from_u128(0x6f1c_2d3e_4a5b_5c6d_8e7f_8091_a2b3_c4d5),
        evidence_message_ids: vec!["m-1".into(), "m-2".into()],
    });
    let blocked = s.to_bytes();
    // Beside it, a shadow policy's own window and would-be ladder (flag 512).
    let mut shadow = crate::policy::ShadowState::default();
    shadow.window.insert(1_700_000_000_600, "m-3");
    shadow.strikes = 1;
    shadow.until = Some(1_700_003_600_500);
    shadow.touched_at = 1_700_000_000_600;
    s.shadow = Some(Box::new(shadow));
    let shadowed = s.to_bytes();
    vec![idle, blocked, MailboxState::default().to_bytes(), shadowed]
}

/// Per record type, its sample read by an unmutated writer schema, by one with a field dropped
/// and its type changed, and by the raw text of the schema.
fn resolve_seeds() -> Vec<Vec<u8>> {
    RecordType::ALL
        .iter()
        .flat_map(|&rt| {
            let body = sample_body(rt);
            let plain = [&[rt as u8, 0][..], &body].concat();
            let mutated = [&[rt as u8, 2, 2, 0, 3, 8, 1, 7][..], &body].concat();
            let raw = [
                &[0x80 | rt as u8][..],
                rt.schema_json().as_bytes(),
                &[0],
                &body,
            ]
            .concat();
            [plain, mutated, raw]
        })
        .collect()
}

/// The backtest's container reader over the input as a file: total, every verdict it gives
/// has its required fields, nothing is read past the input.
pub fn ocf(data: &[u8]) {
    use crate::backtest::decode::OcfReader;
    let Ok(mut r) = OcfReader::new(data).inspect_err(|e| drop(e.to_string())) else {
        return;
    };
    let mut n = 0u64;
    loop {
        match r.next_block(|v| {
            n += 1;
            assert!(!v.message_id.is_empty() && !v.tenant_id.is_empty() && !v.mailbox.is_empty());
        }) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
    assert!(r.offset() <= data.len() as u64, "read past the input");
}

/// The backtest's JSON line, against `produce`'s JSON path.
pub fn jsonl(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(Some(v)) = crate::backtest::decode::json_line(line) else {
        return;
    };
    let j = json!({
        "message_id": &*v.message_id,
        "tenant_id": &*v.tenant_id,
        "mailbox": &*v.mailbox,
        "sent_at": v.sent_at,
        "verdict": v.verdict.as_str(),
    });
    let mut out = Vec::new();
    SINGLE
        .json_to_avro(RecordType::OutboundVerdict, &j, &mut out)
        .unwrap_or_else(|e| panic!("the backtest accepts {line:?}, produce does not: {e}"));
    let back = SINGLE
        .decode_verdict(&out)
        .expect("json_to_avro checked it");
    assert_eq!(
        back,
        v.as_ref().to_owned(),
        "the backtest and produce read {line:?} differently"
    );
}

/// A container file of two sample verdicts with each codec, and an empty one (written here:
/// apache-avro's writer picks a random sync marker, and seeds must be reproducible).
fn ocf_seeds() -> Vec<Vec<u8>> {
    let long = |out: &mut Vec<u8>, v: i64| zigzag(v, out);
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        zigzag(b.len() as i64, out);
        out.extend_from_slice(b);
    };
    let rt = RecordType::OutboundVerdict;
    let file = |codec: &str, n: usize| {
        let sync = *b"mailguard-seed!!";
        let mut out = b"Obj\x01".to_vec();
        long(&mut out, 2);
        bytes(&mut out, b"avro.schema");
        bytes(&mut out, rt.schema_json().as_bytes());
        bytes(&mut out, b"avro.codec");
        bytes(&mut out, codec.as_bytes());
        long(&mut out, 0);
        out.extend_from_slice(&sync);
        if n > 0 {
            let mut data = Vec::new();
            for _ in 0..n {
                data.extend_from_slice(&sample_body(rt));
            }
            if codec == "deflate" {
                data = miniz_oxide::deflate::compress_to_vec(&data, 6);
            }
            long(&mut out, n as i64);
            bytes(&mut out, &data);
            out.extend_from_slice(&sync);
        }
        out
    };
    vec![file("null", 2), file("deflate", 2), file("null", 0)]
}

/// A verdict line, one with escapes and the informational fields, a comment.
fn jsonl_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"message_id":"m-1","tenant_id":"t-1","mailbox":"alice@example.com","sent_at":1700000000000,"verdict":"SPAM"}"#,
        r#"{"message_id":"m\u00e9","tenant_id":"t","mailbox":"B\u00d6B@x.org","sent_at":-5,"verdict":"VIRUS","recipient_count":2,"gateway_id":null}"#,
        "# a comment",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
