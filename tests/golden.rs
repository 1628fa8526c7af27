//! mailguard's codec against golden vectors written by the reference implementation, Apache Avro
//! 1.12.1 for Java, and cross-checked with fastavro (`tests/golden`, regenerated and checked by
//! `scripts/golden-vectors`). No broker.
//!
//! Each aspect is its own test, and each test reports every mismatch of every vector at once, so
//! a failure says precisely what disagrees: the canonical form, the fingerprint (the single-object
//! header), the body bytes (the Avro encoding proper, compared without any header), or reading.
//! Bodies are also checked under Confluent framing, which carries no fingerprint, so a wrong
//! fingerprint cannot hide a body mismatch or the other way round.
//!
//! `evolution/` holds newer writer schemas of `OutboundVerdict` (v2: a field appended; v2b:
//! fields reordered and a new `Verdict` symbol) with Java's resolved reading; the resolution tests
//! are resolved with the writer schema registered by its fingerprint (see [`codec_with_writer_schema`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mailguard::codec::{Codec, CodecError, RecordType, WriterKey};
use serde::Deserialize;
use serde_json::Value as Json;

// -------------------------------------------------------------------------------------------------
// Loading

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    record: String,
    schema_file: String,
    #[allow(dead_code)]
    generator: String,
    canonical_form: String,
    fingerprint_hex: String,
    fingerprint_u64: String,
    records: Vec<Record>,
    /// Evolution vectors only: the reader's schema and fingerprint.
    reader_schema_file: Option<String>,
    #[allow(dead_code)]
    reader_fingerprint_u64: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    note: String,
    /// Valid Avro that mailguard's validation refuses (why, for humans).
    mailguard_rejects: Option<String>,
    json: Json,
    single_object_hex: String,
    body_hex: String,
    /// Evolution vectors only: Java's reading with mailguard's schema as the reader.
    resolved: Option<Json>,
}

struct Golden {
    /// Path relative to `tests/golden`, for messages.
    file: String,
    rt: RecordType,
    v: Vectors,
}

impl Golden {
    /// The fingerprint as the little-endian u64 of the header bytes (what `RecordType::fingerprint`
    /// returns).
    fn fingerprint(&self) -> u64 {
        let bytes: [u8; 8] = unhex(&self.v.fingerprint_hex)
            .try_into()
            .unwrap_or_else(|_| panic!("{}: fingerprint_hex is not 8 bytes", self.file));
        u64::from_le_bytes(bytes)
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(dir: &Path) -> Vec<Golden> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/golden-vectors)", dir.display()))
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let file = path
                .strip_prefix(golden_dir())
                .expect("under tests/golden")
                .display()
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            let v: Vectors = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            let rt = v
                .record
                .parse::<RecordType>()
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            Golden { file, rt, v }
        })
        .collect()
}

/// One vector file per record type, `tests/golden/<Record>.json`.
fn current() -> Vec<Golden> {
    load(&golden_dir())
}

/// Newer writer schemas of our records, `tests/golden/evolution/*.json`.
fn evolution() -> Vec<Golden> {
    load(&golden_dir().join("evolution"))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s:?}: {e}")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Collects mismatches and fails once, listing them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }
    fn finish(self, what: &str) {
        if !self.0.is_empty() {
            panic!(
                "{what}: {} mismatch(es) with the Java Avro golden vectors:\n  {}",
                self.0.len(),
                self.0.join("\n  ")
            );
        }
    }
}

fn label(g: &Golden, i: usize, r: &Record) -> String {
    format!("{} record {i} ({})", g.file, r.note)
}

/// Encodes `json` with mailguard (`produce`'s path).
fn encode(codec: &Codec, rt: RecordType, json: &Json) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    codec.json_to_avro(rt, json, &mut out)?;
    Ok(out)
}

/// Runs the typed decoder mailguard uses for `rt` (which also validates the content).
fn typed_decode(codec: &Codec, rt: RecordType, bytes: &[u8]) -> Result<(), CodecError> {
    match rt {
        RecordType::OutboundVerdict => codec.decode_verdict(bytes).map(drop),
        RecordType::MailboxOwner => codec.decode_owner(bytes).map(drop),
        RecordType::OwnerDevices => codec.decode_devices(bytes).map(drop),
        RecordType::TenantSettings => codec.decode_tenant_record(bytes).map(drop),
        RecordType::AdminCommand => codec.decode_command(bytes).map(drop),
        RecordType::ScanResult => codec.decode_scan_result(bytes).map(drop),
        RecordType::MailboxBlock
        | RecordType::ScanRequest
        | RecordType::Alert
        | RecordType::EventLogEntry
        | RecordType::Exemption => codec.decode_effect(bytes).map(drop),
    }
}

const CONFLUENT_ID: u32 = 4242;

fn confluent_codec(rt: RecordType) -> Codec {
    Codec::new(HashMap::from([(rt, CONFLUENT_ID)]))
}

fn confluent_frame(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&CONFLUENT_ID.to_be_bytes());
    v.extend_from_slice(body);
    v
}

// -------------------------------------------------------------------------------------------------
// The vectors themselves

#[test]
fn every_record_type_has_vectors() {
    let have: BTreeSet<String> = current().iter().map(|g| g.file.clone()).collect();
    let want: BTreeSet<String> = RecordType::ALL
        .iter()
        .map(|rt| format!("{}.json", rt.name()))
        .collect();
    assert_eq!(
        have, want,
        "tests/golden must hold one file per record type"
    );
    for g in current() {
        assert_eq!(g.v.record, g.rt.full_name(), "{}", g.file);
        assert_eq!(g.v.schema_file, format!("schemas/{}.avsc", g.rt.name()));
        assert!(g.v.reader_schema_file.is_none(), "{}", g.file);
        assert!(g.v.records.len() >= 2, "{}: too few records", g.file);
    }
    assert!(!evolution().is_empty(), "tests/golden/evolution is empty");
}

/// Guards against hand edits: the single-object bytes are `C3 01` + fingerprint + body.
#[test]
fn vectors_are_self_consistent() {
    let mut f = Failures::default();
    for g in current().into_iter().chain(evolution()) {
        if g.v.fingerprint_u64 != format!("{:#018x}", g.fingerprint()) {
            f.push(format!(
                "{}: fingerprint_u64 is not the LE u64 of fingerprint_hex",
                g.file
            ));
        }
        for (i, r) in g.v.records.iter().enumerate() {
            let want = format!("c301{}{}", g.v.fingerprint_hex, r.body_hex);
            if r.single_object_hex != want {
                f.push(format!(
                    "{}: single_object_hex is not c301 + fingerprint + body",
                    label(&g, i, r)
                ));
            }
            if g.v.reader_schema_file.is_some() != r.resolved.is_some() {
                f.push(format!(
                    "{}: `resolved` belongs to (and only to) evolution vectors",
                    label(&g, i, r)
                ));
            }
        }
    }
    f.finish("golden vectors");
}

// -------------------------------------------------------------------------------------------------
// Schemas

#[test]
fn canonical_forms_match_java() {
    let mut f = Failures::default();
    for g in current() {
        let ours = g.rt.canonical_form();
        if ours != g.v.canonical_form {
            f.push(format!(
                "{}: canonical form\n    mailguard: {ours}\n    Java:      {}",
                g.rt, g.v.canonical_form
            ));
        }
    }
    f.finish("Parsing Canonical Form");
}

#[test]
fn fingerprints_match_java() {
    let mut f = Failures::default();
    for g in current() {
        let (ours, java) = (g.rt.fingerprint(), g.fingerprint());
        if ours != java {
            let pcf = if g.rt.canonical_form() == g.v.canonical_form {
                "same canonical form, so the hash or its byte order differs"
            } else {
                "the canonical forms differ too"
            };
            f.push(format!(
                "{}: single-object fingerprint: mailguard writes header bytes {} (u64 {ours:#018x}), \
                 Java writes {} (u64 {java:#018x}); {pcf}",
                g.rt,
                hex(&ours.to_le_bytes()),
                g.v.fingerprint_hex,
            ));
        }
    }
    f.finish("CRC-64-AVRO fingerprint");
}

// -------------------------------------------------------------------------------------------------
// Writing

/// The Avro body mailguard writes for the friendly JSON, compared without the header.
#[test]
fn bodies_match_java() {
    let codec = Codec::default();
    let mut f = Failures::default();
    for g in current() {
        for (i, r) in g.v.records.iter().enumerate() {
            if r.mailguard_rejects.is_some() {
                continue; // refused before any bytes exist: see rejected_records_are_refused
            }
            match encode(&codec, g.rt, &r.json) {
                Err(e) => f.push(format!("{}: json_to_avro failed: {e}", label(&g, i, r))),
                Ok(out) => {
                    let body = out.get(10..).unwrap_or_default();
                    if hex(body) != r.body_hex {
                        f.push(format!(
                            "{}: body\n    mailguard: {}\n    Java:      {}",
                            label(&g, i, r),
                            hex(body),
                            r.body_hex
                        ));
                    }
                }
            }
        }
    }
    f.finish("Avro body written by mailguard");
}

/// The whole single-object value, header included, byte for byte.
#[test]
fn single_object_bytes_match_java() {
    let codec = Codec::default();
    let mut f = Failures::default();
    for g in current() {
        for (i, r) in g.v.records.iter().enumerate() {
            if r.mailguard_rejects.is_some() {
                continue;
            }
            let Ok(out) = encode(&codec, g.rt, &r.json) else {
                continue; // reported by bodies_match_java
            };
            if hex(&out) != r.single_object_hex {
                let what = match (
                    out.get(..10) == unhex(&r.single_object_hex).get(..10),
                    hex(out.get(10..).unwrap_or_default()) == r.body_hex,
                ) {
                    (false, true) => "header (fingerprint) differs, body identical",
                    (true, false) => "body differs, header identical",
                    _ => "header and body differ",
                };
                f.push(format!(
                    "{}: {what}\n    mailguard: {}\n    Java:      {}",
                    label(&g, i, r),
                    hex(&out),
                    r.single_object_hex
                ));
            }
        }
    }
    f.finish("single-object bytes written by mailguard");
}

/// Confluent framing: `00` + id + the same body; no fingerprint involved.
#[test]
fn confluent_bytes_match_java() {
    let mut f = Failures::default();
    for g in current() {
        let codec = confluent_codec(g.rt);
        for (i, r) in g.v.records.iter().enumerate() {
            if r.mailguard_rejects.is_some() {
                continue;
            }
            match encode(&codec, g.rt, &r.json) {
                Err(e) => f.push(format!(
                    "{}: json_to_avro (Confluent) failed: {e}",
                    label(&g, i, r)
                )),
                Ok(out) => {
                    let want = confluent_frame(&unhex(&r.body_hex));
                    if out != want {
                        f.push(format!(
                            "{}: Confluent-framed\n    mailguard: {}\n    Java body: {}",
                            label(&g, i, r),
                            hex(&out),
                            hex(&want)
                        ));
                    }
                }
            }
        }
    }
    f.finish("Confluent-framed bytes written by mailguard");
}

/// Records that are valid Avro but fail mailguard's validation are refused by `produce`'s path.
#[test]
fn rejected_records_are_refused() {
    let codec = Codec::default();
    let mut n = 0;
    for g in current() {
        for (i, r) in g.v.records.iter().enumerate() {
            if let Some(why) = &r.mailguard_rejects {
                n += 1;
                assert!(
                    encode(&codec, g.rt, &r.json).is_err(),
                    "{}: json_to_avro accepted a record mailguard must refuse ({why})",
                    label(&g, i, r)
                );
            }
        }
    }
    assert!(n > 0, "the vectors hold no refused record any more");
}

// -------------------------------------------------------------------------------------------------
// Reading Java's bytes

/// Java's single-object bytes read back to the same friendly JSON, and pass the typed decoder
/// (unless the record is one mailguard refuses).
#[test]
fn java_single_object_bytes_decode() {
    let codec = Codec::default();
    let mut f = Failures::default();
    for g in current() {
        for (i, r) in g.v.records.iter().enumerate() {
            read_back(&codec, &g, i, r, &unhex(&r.single_object_hex), &mut f);
        }
    }
    f.finish("reading Java's single-object bytes");
}

/// The same bodies under Confluent framing (so body decoding is checked independently of the
/// fingerprint).
#[test]
fn java_bodies_decode_with_confluent_framing() {
    let mut f = Failures::default();
    for g in current() {
        let codec = confluent_codec(g.rt);
        for (i, r) in g.v.records.iter().enumerate() {
            read_back(
                &codec,
                &g,
                i,
                r,
                &confluent_frame(&unhex(&r.body_hex)),
                &mut f,
            );
        }
    }
    f.finish("reading Java's bodies (Confluent framing)");
}

fn read_back(codec: &Codec, g: &Golden, i: usize, r: &Record, bytes: &[u8], f: &mut Failures) {
    match codec.avro_to_json(g.rt, bytes) {
        Err(e) => f.push(format!("{}: avro_to_json failed: {e}", label(g, i, r))),
        Ok(json) if json != r.json => f.push(format!(
            "{}: avro_to_json\n    mailguard: {json}\n    Java:      {}",
            label(g, i, r),
            r.json
        )),
        Ok(_) => {}
    }
    match (typed_decode(codec, g.rt, bytes), &r.mailguard_rejects) {
        (Err(e), None) => f.push(format!("{}: typed decode failed: {e}", label(g, i, r))),
        (Ok(()), Some(why)) => f.push(format!(
            "{}: typed decode accepted a record mailguard must refuse ({why})",
            label(g, i, r)
        )),
        _ => {}
    }
    if g.rt == RecordType::OutboundVerdict {
        if let Err(e) = check_verdict(codec, bytes, &r.json) {
            f.push(format!("{}: {e}", label(g, i, r)));
        }
    }
}

/// The hot-path verdict decoders (owned and borrowed) give the fields of `want` (friendly JSON of
/// our `OutboundVerdict`), the mailbox lower-cased by the owned one.
fn check_verdict(codec: &Codec, bytes: &[u8], want: &Json) -> Result<(), String> {
    let v = codec
        .decode_verdict(bytes)
        .map_err(|e| format!("decode_verdict failed: {e}"))?;
    let r = codec
        .decode_verdict_ref(bytes)
        .map_err(|e| format!("decode_verdict_ref failed: {e}"))?;
    let s = |k: &str| want[k].as_str().unwrap_or_default().to_string();
    let got = (
        v.message_id.clone(),
        v.tenant_id.clone(),
        v.mailbox.clone(),
        v.sent_at,
        v.verdict.as_str().to_string(),
    );
    let expected = (
        s("message_id"),
        s("tenant_id"),
        s("mailbox").to_lowercase(),
        want["sent_at"].as_i64().unwrap_or_default(),
        s("verdict"),
    );
    if got != expected {
        return Err(format!("decode_verdict gave {got:?}, want {expected:?}"));
    }
    if r.to_owned() != v || r.mailbox != s("mailbox") {
        return Err(format!(
            "decode_verdict_ref gave {r:?}, decode_verdict {v:?}"
        ));
    }
    Ok(())
}

// -------------------------------------------------------------------------------------------------
// Schema evolution: bytes of newer writer schemas of OutboundVerdict

/// A codec that knows `writer_avsc` as a writer schema of `rt` besides mailguard's own schemas,
/// under its reference fingerprint (what a producer's single-object header carries).
fn codec_with_writer_schema(rt: RecordType, writer_avsc: &str) -> Codec {
    let codec = Codec::default();
    let fp = mailguard::codec::schema_fingerprint(writer_avsc).expect("writer schema parses");
    let got = codec
        .add_writer_schema(WriterKey::Fingerprint(fp), writer_avsc)
        .expect("writer schema accepted");
    assert_eq!(got, rt);
    codec
}

fn writer_avsc(g: &Golden) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(&g.v.schema_file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn evolution_vector(name: &str) -> Golden {
    evolution()
        .into_iter()
        .find(|g| g.file == format!("evolution/{name}.json"))
        .unwrap_or_else(|| panic!("tests/golden/evolution/{name}.json is missing"))
}

fn check_resolution(name: &str) {
    let g = evolution_vector(name);
    assert_eq!(g.rt, RecordType::OutboundVerdict);
    assert_eq!(
        g.v.reader_schema_file.as_deref(),
        Some("schemas/OutboundVerdict.avsc")
    );
    let codec = codec_with_writer_schema(g.rt, &writer_avsc(&g));
    let mut f = Failures::default();
    for (i, r) in g.v.records.iter().enumerate() {
        let bytes = unhex(&r.single_object_hex);
        let want = r
            .resolved
            .as_ref()
            .expect("evolution vectors carry `resolved`");
        match codec.avro_to_json(g.rt, &bytes) {
            Err(e) => f.push(format!("{}: avro_to_json failed: {e}", label(&g, i, r))),
            Ok(json) if &json != want => f.push(format!(
                "{}: resolved\n    mailguard: {json}\n    Java:      {want}",
                label(&g, i, r)
            )),
            Ok(_) => {}
        }
        if let Err(e) = check_verdict(&codec, &bytes, want) {
            f.push(format!("{}: {e}", label(&g, i, r)));
        }
    }
    f.finish(&format!(
        "resolving {name} with mailguard's OutboundVerdict"
    ));
}

/// v2 appends an optional `spam_score`: the reader skips it.
#[test]
fn resolves_v2_appended_field() {
    check_resolution("OutboundVerdict_v2");
}

/// v2b reorders the fields (with `spam_score` in the middle) and inserts `QUARANTINE` into
/// `Verdict` before `SPAM`: fields and symbols resolve by name; `QUARANTINE` becomes `CLEAN`.
#[test]
fn resolves_v2b_reordered_fields_and_new_symbol() {
    check_resolution("OutboundVerdict_v2b");
}

/// Whatever mailguard can resolve, bytes of a writer schema it was not given are refused with a
/// reason, never misread as one of its own.
#[test]
fn unknown_writer_schemas_are_refused() {
    let codec = Codec::default();
    let mut f = Failures::default();
    for g in evolution() {
        for (i, r) in g.v.records.iter().enumerate() {
            let bytes = unhex(&r.single_object_hex);
            if let Ok(json) = codec.avro_to_json(g.rt, &bytes) {
                f.push(format!("{}: avro_to_json read {json}", label(&g, i, r)));
            }
            if let Ok(v) = codec.decode_verdict(&bytes) {
                f.push(format!("{}: decode_verdict read {v:?}", label(&g, i, r)));
            }
        }
    }
    f.finish("bytes of an unregistered writer schema");
}
