//! Decode cost of one `OutboundVerdict` (framed, single-object), per decoder:
//!
//! - `apache_avro_value`: apache-avro `from_avro_datum` → `Value` → domain `Verdict`
//!   (`Codec::decode_verdict_generic`, incl. its strict structural check);
//! - `apache_avro_value_bare`: the same without the structural check;
//! - `apache_avro_serde`: apache-avro `from_avro_datum` → `from_value::<serde struct>` → `Verdict`;
//! - `fast_program`: the schema-compiled field program into an owned `Verdict`
//!   (`Codec::decode_verdict`: what an offending verdict costs);
//! - `fast_program_borrowed`: the same program into a borrowed `VerdictRef`
//!   (`Codec::decode_verdict_ref`: what the pipeline pays for every verdict; CLEAN stops here).
//!
//! Schema resolution (the same verdicts under other writer keys, Confluent framing):
//!
//! - `resolved_v1_borrowed`: the embedded schema under an id that is not the configured one
//!   (found in the store's lock-free hot slots, no resolution needed);
//! - `resolved_v2_borrowed` / `resolved_v2_owned`: a v2 writer schema (one more optional field
//!   at the end) resolved by its compiled program;
//! - `resolved_v2_apache_avro_value`: the same through apache-avro's resolution
//!   (`Codec::decode_verdict_generic`);
//! - `v2_program_body_borrowed`: a program compiled for v2 as *both* writer and reader, run on
//!   the bodies without header or lookup: what v2 costs with no resolution at all, so
//!   `resolved_v2_borrowed` minus this is the price of the header, the lookup and resolution.
//!
//! Other decoders, for the choice of decoder:
//!
//! - `serde_avro_fast_borrowed`: serde_avro_fast `from_single_object_slice` into a serde struct
//!   borrowing its strings (it checks the single-object fingerprint itself: a cross-check of
//!   ours);
//! - `serde_avro_fast_v2_borrowed`: the same over v2 bodies with the v2 schema (serde skips the
//!   extra field by name);
//! - `apache_avro_0_22_value_bare`: apache-avro 0.22 (the newest release)
//!   `GenericDatumReader::read_value` → `Value`, the counterpart of `apache_avro_value_bare`.
//!
//! Each iteration decodes one verdict out of 1024 pre-encoded, varied records, so criterion's
//! time per iteration is ns/verdict. Run: `cargo bench --bench avro_decode`.

use std::hint::black_box;

use apache_avro::types::Value;
use criterion::{criterion_group, criterion_main, Criterion};
use mailguard::codec::{Codec, RecordType, WriterKey};
use mailguard::policy::{Verdict, VerdictKind};

const N: usize = 1024;

/// The v2 writer schema: v1 plus an optional field at the end.
fn v2_schema_json() -> String {
    let mut j: serde_json::Value =
        serde_json::from_str(RecordType::OutboundVerdict.schema_json()).expect("json");
    j["fields"].as_array_mut().expect("fields").push(
        serde_json::json!({"name": "spam_score", "type": ["null", "double"], "default": null}),
    );
    j.to_string()
}

/// Deterministic, realistic-looking verdicts: ~45-byte message ids, uuid tenants, mixed-case
/// mailboxes, optional fields present on some. With `v2`, the v2 field (present on some).
fn values(v2: bool) -> Vec<Value> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let symbols = ["CLEAN", "SPAM", "VIRUS"];
    (0..N)
        .map(|i| {
            let r = next();
            let mailbox = if i % 4 == 0 {
                format!("User.{:04}@Tenant{}.Example.COM", r % 10_000, r % 97)
            } else {
                format!("user.{:04}@tenant{}.example.com", r % 10_000, r % 97)
            };
            let k = (r % 10) as usize;
            let verdict = if k < 7 { 0 } else { 1 + (k & 1) };
            let mut fields = vec![
                (
                    "message_id".into(),
                    Value::String(format!("<{:016x}.{:08x}@gw-{}.example.net>", r, i, r % 8)),
                ),
                (
                    "tenant_id".into(),
                    Value::String(format!("8c3a{:04x}-1f2e-4d5c-9b8a-{:012x}", r % 97, r % 97)),
                ),
                ("mailbox".into(), Value::String(mailbox)),
                (
                    "sent_at".into(),
                    Value::TimestampMillis(1_700_000_000_000 + i as i64 * 1_000),
                ),
                (
                    "verdict".into(),
                    Value::Enum(verdict as u32, symbols[verdict].into()),
                ),
                (
                    "recipient_count".into(),
                    Value::Union(1, Box::new(Value::Int((r % 20) as i32 + 1))),
                ),
                (
                    "gateway_id".into(),
                    if i % 2 == 0 {
                        Value::Union(1, Box::new(Value::String(format!("gw-{}", r % 8))))
                    } else {
                        Value::Union(0, Box::new(Value::Null))
                    },
                ),
            ];
            if v2 {
                fields.push((
                    "spam_score".into(),
                    if i % 3 == 0 {
                        Value::Union(1, Box::new(Value::Double((r % 100) as f64 / 100.0)))
                    } else {
                        Value::Union(0, Box::new(Value::Null))
                    },
                ));
            }
            Value::Record(fields)
        })
        .collect()
}

/// The verdicts written with `schema` after `header`.
fn encode(schema: &apache_avro::Schema, values: Vec<Value>, header: &[u8]) -> Vec<Vec<u8>> {
    values
        .into_iter()
        .map(|v| {
            let mut framed = header.to_vec();
            framed.extend(apache_avro::to_avro_datum(schema, v).expect("valid verdict"));
            framed
        })
        .collect()
}

/// v1 verdicts, single-object framed (what `Codec::default` reads without lookup).
fn corpus() -> Vec<Vec<u8>> {
    let mut header = Vec::new();
    Codec::default().write_header(RecordType::OutboundVerdict, &mut header);
    encode(RecordType::OutboundVerdict.schema(), values(false), &header)
}

fn confluent_header(id: u32) -> Vec<u8> {
    let mut h = vec![0];
    h.extend_from_slice(&id.to_be_bytes());
    h
}

#[derive(serde::Deserialize)]
#[allow(clippy::upper_case_acronyms)]
enum SerdeVerdictKind {
    CLEAN,
    SPAM,
    VIRUS,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct SerdeVerdict {
    message_id: String,
    tenant_id: String,
    mailbox: String,
    sent_at: i64,
    verdict: SerdeVerdictKind,
    recipient_count: Option<i32>,
    gateway_id: Option<String>,
}

fn decode_serde(codec: &Codec, bytes: &[u8]) -> Option<Verdict> {
    let mut body = codec.body(RecordType::OutboundVerdict, bytes).ok()?;
    let v =
        apache_avro::from_avro_datum(RecordType::OutboundVerdict.schema(), &mut body, None).ok()?;
    let s: SerdeVerdict = apache_avro::from_value(&v).ok()?;
    if s.message_id.is_empty() || s.tenant_id.is_empty() || s.mailbox.is_empty() {
        return None;
    }
    Some(Verdict {
        message_id: s.message_id,
        tenant_id: s.tenant_id,
        mailbox: s.mailbox.to_lowercase(),
        sent_at: s.sent_at,
        verdict: match s.verdict {
            SerdeVerdictKind::CLEAN => VerdictKind::Clean,
            SerdeVerdictKind::SPAM => VerdictKind::Spam,
            SerdeVerdictKind::VIRUS => VerdictKind::Virus,
        },
    })
}

fn decode_bare(codec: &Codec, bytes: &[u8]) -> Option<usize> {
    let mut body = codec.body(RecordType::OutboundVerdict, bytes).ok()?;
    let v =
        apache_avro::from_avro_datum(RecordType::OutboundVerdict.schema(), &mut body, None).ok()?;
    match v {
        Value::Record(fields) => Some(fields.len()),
        _ => None,
    }
}

/// What serde_avro_fast decodes into (strings borrowed, as in `VerdictRef`).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct SafVerdict<'a> {
    message_id: &'a str,
    tenant_id: &'a str,
    mailbox: &'a str,
    sent_at: i64,
    verdict: SerdeVerdictKind,
    recipient_count: Option<i32>,
    gateway_id: Option<&'a str>,
}

fn saf_ok(v: Result<SafVerdict<'_>, serde_avro_fast::de::DeError>) -> bool {
    v.is_ok_and(|v| !v.message_id.is_empty() && !v.tenant_id.is_empty() && !v.mailbox.is_empty())
}

fn bench(c: &mut Criterion) {
    let codec = Codec::default();
    let msgs = corpus();
    // Other writer keys: v1 under id 2 (not configured), v2 under id 3.
    let v2_json = v2_schema_json();
    let v2_schema = apache_avro::Schema::parse_str(&v2_json).expect("v2 parses");
    codec
        .add_writer_schema(
            WriterKey::SchemaId(2),
            RecordType::OutboundVerdict.schema_json(),
        )
        .expect("v1 under id 2");
    codec
        .add_writer_schema(WriterKey::SchemaId(3), &v2_json)
        .expect("v2 resolves");
    let v1_id2 = encode(
        RecordType::OutboundVerdict.schema(),
        values(false),
        &confluent_header(2),
    );
    let v2_id3 = encode(&v2_schema, values(true), &confluent_header(3));
    let saf_v1: serde_avro_fast::Schema = RecordType::OutboundVerdict
        .schema_json()
        .parse()
        .expect("serde_avro_fast parses v1");
    let saf_v2: serde_avro_fast::Schema = v2_json.parse().expect("serde_avro_fast parses v2");
    let new_schema = apache_avro_new::Schema::parse_str(RecordType::OutboundVerdict.schema_json())
        .expect("apache-avro 0.22 parses v1");
    // 0.22's replacement of `from_avro_datum`, built once (it keeps the resolved names).
    let new_reader = apache_avro_new::reader::datum::GenericDatumReader::builder(&new_schema)
        .build()
        .expect("apache-avro 0.22 reader");
    // The decoders agree on the whole corpus.
    for m in &msgs {
        let fast = codec.decode_verdict(m).expect("fast decodes");
        assert_eq!(
            codec.decode_verdict_ref(m).map(|v| v.to_owned()),
            Ok(fast.clone())
        );
        assert_eq!(Ok(&fast), codec.decode_verdict_generic(m).as_ref());
        assert_eq!(Some(&fast), decode_serde(&codec, m).as_ref());
        // serde_avro_fast accepts our single-object header (its fingerprint is the spec's).
        assert!(saf_ok(serde_avro_fast::from_single_object_slice(
            m, &saf_v1
        )));
    }
    for ((m, v1), v2) in msgs.iter().zip(&v1_id2).zip(&v2_id3) {
        let want = codec.decode_verdict_ref(m).expect("v1");
        assert_eq!(codec.decode_verdict_ref(v1), Ok(want));
        assert_eq!(codec.decode_verdict_ref(v2), Ok(want));
        assert_eq!(codec.decode_verdict_generic(v2), Ok(want.to_owned()));
        assert!(saf_ok(serde_avro_fast::from_datum_slice(&v2[5..], &saf_v2)));
    }

    let mut g = c.benchmark_group("decode_verdict");
    let mut i = 0usize;
    g.bench_function("apache_avro_value", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(codec.decode_verdict_generic(black_box(&msgs[i])))
        })
    });
    g.bench_function("apache_avro_value_bare", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(decode_bare(&codec, black_box(&msgs[i])))
        })
    });
    g.bench_function("apache_avro_serde", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(decode_serde(&codec, black_box(&msgs[i])))
        })
    });
    g.bench_function("fast_program", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(codec.decode_verdict(black_box(&msgs[i])))
        })
    });
    g.bench_function("fast_program_borrowed", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(codec.decode_verdict_ref(black_box(&msgs[i])).is_ok())
        })
    });
    g.bench_function("resolved_v1_borrowed", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(codec.decode_verdict_ref(black_box(&v1_id2[i])).is_ok())
        })
    });
    g.bench_function("resolved_v2_borrowed", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(codec.decode_verdict_ref(black_box(&v2_id3[i])).is_ok())
        })
    });
    let v2_program = mailguard::codec::VerdictProgram::compile(&v2_schema).expect("v2 program");
    g.bench_function("v2_program_body_borrowed", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(v2_program.decode_ref(&black_box(&v2_id3[i])[5..]).is_ok())
        })
    });
    g.bench_function("resolved_v2_owned", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(codec.decode_verdict(black_box(&v2_id3[i])))
        })
    });
    g.bench_function("resolved_v2_apache_avro_value", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(codec.decode_verdict_generic(black_box(&v2_id3[i])))
        })
    });
    g.bench_function("serde_avro_fast_borrowed", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(saf_ok(serde_avro_fast::from_single_object_slice(
                black_box(&msgs[i]),
                &saf_v1,
            )))
        })
    });
    g.bench_function("serde_avro_fast_v2_borrowed", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(saf_ok(serde_avro_fast::from_datum_slice(
                &black_box(&v2_id3[i])[5..],
                &saf_v2,
            )))
        })
    });
    g.bench_function("apache_avro_0_22_value_bare", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            let mut body = &black_box(&msgs[i])[10..];
            black_box(
                new_reader
                    .read_value(&mut body)
                    .map(|v| matches!(v, apache_avro_new::types::Value::Record(_))),
            )
            .is_ok()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
