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
//! Each iteration decodes one verdict out of 1024 pre-encoded, varied records, so criterion's
//! time per iteration is ns/verdict. Run: `cargo bench --bench avro_decode`.

use std::hint::black_box;

use apache_avro::types::Value;
use criterion::{criterion_group, criterion_main, Criterion};
use mailguard::codec::{Codec, RecordType};
use mailguard::policy::{Verdict, VerdictKind};

const N: usize = 1024;

/// Deterministic, realistic-looking verdicts: ~45-byte message ids, uuid tenants, mixed-case
/// mailboxes, optional fields present on some.
fn corpus() -> Vec<Vec<u8>> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let symbols = ["CLEAN", "SPAM", "VIRUS"];
    let schema = RecordType::OutboundVerdict.schema();
    let codec = Codec::default();
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
            let value = Value::Record(vec![
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
            ]);
            let body = apache_avro::to_avro_datum(schema, value).expect("valid verdict");
            let mut framed = Vec::new();
            codec.write_header(RecordType::OutboundVerdict, &mut framed);
            framed.extend_from_slice(&body);
            framed
        })
        .collect()
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

fn bench(c: &mut Criterion) {
    let codec = Codec::default();
    let msgs = corpus();
    // The decoders agree on the whole corpus.
    for m in &msgs {
        let fast = codec.decode_verdict(m).expect("fast decodes");
        assert_eq!(
            codec.decode_verdict_ref(m).map(|v| v.to_owned()),
            Ok(fast.clone())
        );
        assert_eq!(Ok(&fast), codec.decode_verdict_generic(m).as_ref());
        assert_eq!(Some(&fast), decode_serde(&codec, m).as_ref());
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
