//! Schema resolution: records written with other (compatible or not) writer schemas. The
//! writer-side bytes are produced with apache-avro's writer (`to_avro_datum` with the writer
//! schema), independently of the decoders under test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::types::Value;
use apache_avro::Schema;
use proptest::prelude::*;
use serde_json::{json, Value as J};

use super::*;
use crate::policy::VerdictKind;

// ---------------------------------------------------------------------------------------------
// Helpers

/// The embedded schema of `rt` as JSON, with its fields.
fn fields_of(rt: RecordType) -> Vec<J> {
    let j: J = serde_json::from_str(rt.schema_json()).unwrap();
    j["fields"].as_array().unwrap().clone()
}

fn field(name: &str, ty: J) -> J {
    json!({"name": name, "type": ty})
}

fn optional(name: &str, ty: &str) -> J {
    json!({"name": name, "type": ["null", ty], "default": null})
}

/// A writer schema of `rt` (same name and namespace) with these fields.
fn schema_json(rt: RecordType, fields: &[J]) -> String {
    json!({"type": "record", "name": rt.name(), "namespace": NAMESPACE, "fields": fields})
        .to_string()
}

/// Replaces (or removes, with `None`) the field `name`.
fn with_field(mut fields: Vec<J>, name: &str, new: Option<J>) -> Vec<J> {
    let i = fields.iter().position(|f| f["name"] == name).unwrap();
    match new {
        Some(f) => fields[i] = f,
        None => {
            fields.remove(i);
        }
    }
    fields
}

/// Avro body of `fields` (in the writer's order) written with `schema`.
fn body(schema: &str, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let schema = Schema::parse_str(schema).unwrap();
    let value = Value::Record(fields.into_iter().map(|(k, v)| (k.into(), v)).collect());
    apache_avro::to_avro_datum(&schema, value).unwrap()
}

fn confluent(id: u32, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(body);
    b
}

fn single_object(fp: u64, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0xC3, 0x01];
    b.extend_from_slice(&fp.to_le_bytes());
    b.extend_from_slice(body);
    b
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

fn verdict_enum(i: u32, symbol: &str) -> Value {
    Value::Enum(i, symbol.into())
}

/// The v1 field values of the reference verdict, by name.
fn v1_values() -> Vec<(&'static str, Value)> {
    vec![
        ("message_id", s("m-1")),
        ("tenant_id", s("t-1")),
        ("mailbox", s("Alice@Example.com")),
        ("sent_at", Value::Long(1_700_000_000_000)),
        ("verdict", verdict_enum(1, "SPAM")),
        ("recipient_count", some(Value::Int(3))),
        ("gateway_id", some(s("gw-1"))),
    ]
}

fn expected() -> Verdict {
    Verdict {
        message_id: "m-1".into(),
        tenant_id: "t-1".into(),
        mailbox: "alice@example.com".into(),
        sent_at: 1_700_000_000_000,
        verdict: VerdictKind::Spam,
    }
}

/// Both verdict decoders agree and give `want`.
fn assert_verdict(c: &Codec, bytes: &[u8], want: &Verdict) {
    assert_eq!(c.decode_verdict(bytes).as_ref(), Ok(want));
    assert_eq!(
        c.decode_verdict_ref(bytes).map(|v| v.to_owned()).as_ref(),
        Ok(want)
    );
    assert_eq!(c.decode_verdict_generic(bytes).as_ref(), Ok(want));
}

/// A schema source over a map, counting calls; `fail` makes every call fail.
#[derive(Default)]
struct MapSource {
    schemas: Mutex<HashMap<u32, String>>,
    calls: AtomicUsize,
    fail: Mutex<Option<SourceError>>,
}

impl SchemaSource for MapSource {
    fn schema_by_id(&self, id: u32) -> Result<Option<String>, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(self.schemas.lock().unwrap().get(&id).cloned())
    }
}

fn with_source(schemas: &[(u32, String)]) -> (Codec, Arc<MapSource>) {
    let src = Arc::new(MapSource::default());
    src.schemas.lock().unwrap().extend(schemas.iter().cloned());
    let c = Codec::new(HashMap::from([(RecordType::OutboundVerdict, 1)]));
    c.set_schema_source(src.clone());
    (c, src)
}

const RT: RecordType = RecordType::OutboundVerdict;

// ---------------------------------------------------------------------------------------------
// The verdict hot path (and the generic path beside it)

#[test]
fn v2_with_an_extra_optional_field_at_the_end_decodes_under_a_new_id() {
    let mut fields = fields_of(RT);
    fields.push(optional("spam_score", "double"));
    let v2 = schema_json(RT, &fields);
    let (c, src) = with_source(&[(2, v2.clone())]);
    let mut values = v1_values();
    values.push(("spam_score", some(Value::Double(0.97))));
    let b = confluent(2, &body(&v2, values));
    assert_verdict(&c, &b, &expected());
    // The generic value has the reader's shape: no spam_score.
    let v = c.decode_value(RT, &b).unwrap();
    let Value::Record(f) = v else { panic!() };
    assert_eq!(f.len(), 7);
    // Compiled once: one source call for many records.
    for _ in 0..10 {
        c.decode_verdict_ref(&b).unwrap();
    }
    assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.detect(&b), Some(RT));
    // Codec::body refuses to hand out a body the embedded schema would misread.
    let e = c.body(RT, &b).unwrap_err();
    assert!(matches!(e, CodecError::IncompatibleSchema { .. }), "{e}");
}

#[test]
fn reordered_writer_fields_are_read_by_name() {
    let mut fields = fields_of(RT);
    fields.reverse();
    let w = schema_json(RT, &fields);
    let c = Codec::default();
    let fp = schema_fingerprint(&w).unwrap();
    assert_ne!(fp, RT.fingerprint());
    assert_eq!(c.add_writer_schema(WriterKey::Fingerprint(fp), &w), Ok(RT));
    let mut values = v1_values();
    values.reverse();
    let b = single_object(fp, &body(&w, values));
    assert_verdict(&c, &b, &expected());
}

#[test]
fn removed_optional_fields_take_the_reader_default() {
    let fields = with_field(fields_of(RT), "recipient_count", None);
    let fields = with_field(fields, "gateway_id", None);
    let w = schema_json(RT, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(5), &w).unwrap();
    let b = confluent(5, &body(&w, v1_values()[..5].to_vec()));
    assert_verdict(&c, &b, &expected());
    let j = c.avro_to_json(RT, &b).unwrap();
    assert_eq!(j["recipient_count"], J::Null);
    assert_eq!(j["gateway_id"], J::Null);
}

#[test]
fn unknown_enum_symbol_reads_as_the_reader_default() {
    let enum_ty = json!({"type": "enum", "name": "Verdict",
        "symbols": ["QUARANTINE", "CLEAN", "SPAM", "VIRUS"], "default": "CLEAN"});
    let fields = with_field(fields_of(RT), "verdict", Some(field("verdict", enum_ty)));
    let w = schema_json(RT, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(6), &w).unwrap();
    let mut values = v1_values();
    values[4].1 = verdict_enum(0, "QUARANTINE");
    let b = confluent(6, &body(&w, values.clone()));
    let want = Verdict {
        verdict: VerdictKind::Clean,
        ..expected()
    };
    assert_verdict(&c, &b, &want);
    // Known symbols keep their meaning although their index moved.
    values[4].1 = verdict_enum(3, "VIRUS");
    let b = confluent(6, &body(&w, values));
    let want = Verdict {
        verdict: VerdictKind::Virus,
        ..expected()
    };
    assert_verdict(&c, &b, &want);
}

#[test]
fn int_sent_at_is_promoted_to_long() {
    let fields = with_field(
        fields_of(RT),
        "sent_at",
        Some(field("sent_at", json!("int"))),
    );
    let w = schema_json(RT, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(7), &w).unwrap();
    let mut values = v1_values();
    values[3].1 = Value::Int(-42);
    let b = confluent(7, &body(&w, values));
    let want = Verdict {
        sent_at: -42,
        ..expected()
    };
    assert_verdict(&c, &b, &want);
}

#[test]
fn bytes_are_promoted_to_string_and_unions_resolve_per_branch() {
    // message_id as bytes; recipient_count ["null","int","long"] would not fit the reader's
    // ["null","int"], but ["int","null"] (another order) does; gateway_id as a plain string.
    let fields = with_field(
        fields_of(RT),
        "message_id",
        Some(field("message_id", json!("bytes"))),
    );
    let fields = with_field(
        fields,
        "recipient_count",
        Some(json!({"name": "recipient_count", "type": ["int", "null"], "default": 0})),
    );
    let fields = with_field(
        fields,
        "gateway_id",
        Some(field("gateway_id", json!("string"))),
    );
    let w = schema_json(RT, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(8), &w).unwrap();
    let mut values = v1_values();
    values[0].1 = Value::Bytes(b"m-1".to_vec());
    values[5].1 = Value::Union(1, Box::new(Value::Null));
    values[6].1 = s("gw-1");
    let b = confluent(8, &body(&w, values));
    assert_verdict(&c, &b, &expected());
    let j = c.avro_to_json(RT, &b).unwrap();
    assert_eq!(j["gateway_id"], "gw-1");
    assert_eq!(j["recipient_count"], J::Null);
}

#[test]
fn incompatible_writers_are_errors_naming_the_id_and_field() {
    let sent_at_string = with_field(
        fields_of(RT),
        "sent_at",
        Some(field("sent_at", json!("string"))),
    );
    let no_message_id = with_field(fields_of(RT), "message_id", None);
    let nullable_message_id = with_field(
        fields_of(RT),
        "message_id",
        Some(optional("message_id", "string")),
    );
    let long_count = with_field(
        fields_of(RT),
        "recipient_count",
        Some(optional("recipient_count", "long")),
    );
    let (c, src) = with_source(&[
        (999, schema_json(RT, &sent_at_string)),
        (998, schema_json(RT, &no_message_id)),
        (997, schema_json(RT, &nullable_message_id)),
        (996, schema_json(RT, &long_count)),
    ]);
    let cases = [
        (999, "schema id 999 is incompatible with mailguard.v1.OutboundVerdict: field 'sent_at': writer string cannot be read as long (timestamp-millis)"),
        (998, "schema id 998 is incompatible with mailguard.v1.OutboundVerdict: field 'message_id' is missing in the writer and has no default in the reader"),
        (997, "schema id 997 is incompatible with mailguard.v1.OutboundVerdict: field 'message_id': writer null cannot be read as string"),
        (996, "schema id 996 is incompatible with mailguard.v1.OutboundVerdict: field 'recipient_count': writer long matches no branch of reader union [null, int]"),
    ];
    for (id, msg) in cases {
        // The body does not matter: the header alone decides.
        let b = confluent(id, &[0; 8]);
        for _ in 0..3 {
            let e = c.decode_verdict(&b).unwrap_err();
            assert_eq!(e.to_string(), msg);
            assert_eq!(e.code(), "incompatible_schema");
            assert!(!e.is_transient());
            let e = c.decode_verdict_generic(&b).unwrap_err();
            assert_eq!(e.to_string(), msg);
        }
    }
    // Each compile error is cached: one source call per id.
    assert_eq!(src.calls.load(Ordering::SeqCst), cases.len());
    // add_writer_schema reports the same.
    let e = Codec::default()
        .add_writer_schema(WriterKey::SchemaId(999), &schema_json(RT, &sent_at_string))
        .unwrap_err();
    assert_eq!(e.to_string(), cases[0].1);
}

#[test]
fn unknown_id_source_not_found_and_transient_failure() {
    let (c, src) = with_source(&[]);
    let b = confluent(999, &[0; 8]);
    let e = c.decode_verdict(&b).unwrap_err();
    assert_eq!(e.to_string(), "unknown schema id 999 (not in the registry)");
    assert_eq!(
        e,
        CodecError::UnknownSchemaId {
            id: 999,
            registry: true
        }
    );
    assert!(!e.is_transient());
    // "Not found" is cached.
    c.decode_verdict(&b).unwrap_err();
    assert_eq!(src.calls.load(Ordering::SeqCst), 1);

    // A transient failure is distinct, and not cached: the retry asks again.
    *src.fail.lock().unwrap() = Some(SourceError::transient("connection refused"));
    let b = confluent(555, &[0; 8]);
    let e = c.decode_verdict(&b).unwrap_err();
    assert!(e.is_transient());
    assert_eq!(
        e.to_string(),
        "schema id 555: schema registry lookup failed: connection refused"
    );
    assert_eq!(e.code(), "schema_source");
    c.decode_verdict(&b).unwrap_err();
    assert_eq!(src.calls.load(Ordering::SeqCst), 3);
    // When the registry is back, the record decodes.
    *src.fail.lock().unwrap() = None;
    let mut fields = fields_of(RT);
    fields.push(optional("x", "string"));
    let v2 = schema_json(RT, &fields);
    src.schemas.lock().unwrap().insert(555, v2.clone());
    let mut values = v1_values();
    values.push(("x", null()));
    assert_verdict(&c, &confluent(555, &body(&v2, values)), &expected());
    // A permanent failure is not transient.
    *src.fail.lock().unwrap() = Some(SourceError::permanent("401 unauthorized"));
    let e = c.decode_verdict(&confluent(554, &[0; 8])).unwrap_err();
    assert!(!e.is_transient());
    // The embedded schema's configured id never reaches the source.
    let mut out = Vec::new();
    c.encode_verdict(&expected(), &mut out).unwrap();
    assert_eq!(&out[..5], &[0, 0, 0, 0, 1]);
    assert_eq!(c.decode_verdict(&out).unwrap(), expected());
}

#[test]
fn writer_schema_of_another_record_type() {
    let c = Codec::default();
    assert_eq!(
        c.add_writer_schema(
            WriterKey::SchemaId(5),
            RecordType::MailboxOwner.schema_json()
        ),
        Ok(RecordType::MailboxOwner)
    );
    let e = c.decode_verdict(&confluent(5, &[0; 8])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "wrong record type: schema id 5 is mailguard.v1.MailboxOwner, expected OutboundVerdict"
    );
    // Not a mailguard record at all.
    let foreign = r#"{"type":"record","name":"Foo","namespace":"com.acme","fields":[]}"#;
    let e = c
        .add_writer_schema(WriterKey::SchemaId(6), foreign)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "schema id 6: invalid writer schema: com.acme.Foo is not a mailguard record"
    );
    let e = c.decode_verdict(&confluent(6, &[0; 8])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "wrong record type: schema id 6 is com.acme.Foo, expected OutboundVerdict"
    );
    // Another namespace is another record.
    let other_ns = RT.schema_json().replace("mailguard.v1", "mailguard.v2");
    assert!(c
        .add_writer_schema(WriterKey::SchemaId(7), &other_ns)
        .is_err());
    // Not JSON; a key bound to another schema.
    assert!(c
        .add_writer_schema(WriterKey::SchemaId(8), "{")
        .unwrap_err()
        .to_string()
        .starts_with("schema id 8: invalid writer schema: "));
    let e = c
        .add_writer_schema(WriterKey::SchemaId(5), RT.schema_json())
        .unwrap_err();
    assert!(e.to_string().contains("already bound"), "{e}");
    // The same schema again is fine.
    c.add_writer_schema(
        WriterKey::SchemaId(5),
        RecordType::MailboxOwner.schema_json(),
    )
    .unwrap();
}

#[test]
fn truncated_and_trailing_bodies_of_a_resolved_writer() {
    let mut fields = fields_of(RT);
    fields.push(optional("extra", "string"));
    let w = schema_json(RT, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(9), &w).unwrap();
    let mut values = v1_values();
    values.push(("extra", some(s("x"))));
    let b = confluent(9, &body(&w, values));
    for n in 5..b.len() {
        assert!(c.decode_verdict(&b[..n]).is_err(), "prefix {n}");
        assert!(c.decode_verdict_generic(&b[..n]).is_err(), "prefix {n}");
    }
    let e = c.decode_verdict_generic(&b[..b.len() - 2]).unwrap_err();
    assert_eq!(e.to_string(), "truncated body at field extra");
    let mut long = b.clone();
    long.push(0);
    assert_eq!(
        c.decode_verdict(&long).unwrap_err(),
        CodecError::TrailingBytes(1)
    );
    assert_eq!(
        c.decode_verdict_generic(&long).unwrap_err(),
        CodecError::TrailingBytes(1)
    );
}

#[test]
fn writer_schemas_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut fields = fields_of(RT);
    fields.insert(2, optional("client_ip", "string"));
    let w = schema_json(RT, &fields);
    std::fs::write(dir.path().join("OutboundVerdict-v2.avsc"), &w).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a schema").unwrap();
    let c = Codec::default();
    let loaded = c.load_writer_schemas(dir.path()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].1, RT);
    let mut values = v1_values();
    values.insert(2, ("client_ip", some(s("10.0.0.1"))));
    let fp = schema_fingerprint(&w).unwrap();
    assert_verdict(&c, &single_object(fp, &body(&w, values)), &expected());
    // A bad file is named.
    std::fs::write(dir.path().join("broken.avsc"), "{").unwrap();
    let e = Codec::default()
        .load_writer_schemas(dir.path())
        .unwrap_err();
    assert!(e.to_string().contains("broken.avsc"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Generic records (apache-avro's resolution behind our compatibility check)

#[test]
fn generic_records_resolve_added_removed_reordered_promoted_fields() {
    // MailboxOwner: owner_name removed, an extra nested field, tenant_id as bytes, reordered.
    let rt = RecordType::MailboxOwner;
    let w = schema_json(
        rt,
        &[
            field("owner_id", json!("string")),
            field(
                "meta",
                json!({"type": "map", "values": {"type": "record", "name": "Meta",
                    "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}]}}),
            ),
            field("tenant_id", json!("bytes")),
            field("mailbox", json!("string")),
        ],
    );
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(20), &w).unwrap();
    let meta = Value::Map(HashMap::from([(
        "k".to_string(),
        Value::Record(vec![("tags".into(), Value::Array(vec![s("a"), s("b")]))]),
    )]));
    let b = confluent(
        20,
        &body(
            &w,
            vec![
                ("owner_id", s("u-1")),
                ("meta", meta),
                ("tenant_id", Value::Bytes(b"t-1".to_vec())),
                ("mailbox", s("Bob@Example.com")),
            ],
        ),
    );
    let (mailbox, owner) = c.decode_owner(&b).unwrap();
    assert_eq!(mailbox, "bob@example.com");
    assert_eq!(owner.owner_id, "u-1");
    assert_eq!(owner.tenant_id, "t-1");
    assert_eq!(owner.owner_name, None);
}

#[test]
fn generic_records_resolve_promoted_unions_and_fields_added_since() {
    // TenantSettings: window_ms written as ["null","int"] (promoted), threshold as int
    // (writer non-union, reader ["null","int"]), permanent_strike removed, and neither mode nor
    // warn_threshold (a producer built before issue 21): the tenant reads as ENFORCE.
    let rt = RecordType::TenantSettings;
    let fields = with_field(
        fields_of(rt),
        "window_ms",
        Some(optional("window_ms", "int")),
    );
    let fields = with_field(fields, "threshold", Some(field("threshold", json!("int"))));
    let fields = with_field(fields, "permanent_strike", None);
    let fields = with_field(fields, "mode", None);
    let fields = with_field(fields, "warn_threshold", None);
    let fields = with_field(fields, "shadow", None);
    let w = schema_json(rt, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(21), &w).unwrap();
    let b = confluent(
        21,
        &body(
            &w,
            vec![
                ("tenant_id", s("t-1")),
                ("sync_security_enabled", Value::Boolean(true)),
                ("endpoint_licence", Value::Boolean(false)),
                ("email_licence", verdict_enum(1, "ADVANCED")),
                ("threshold", Value::Int(7)),
                ("window_ms", some(Value::Int(60_000))),
                ("base_block_ms", null()),
            ],
        ),
    );
    let t = c.decode_tenant_record(&b).unwrap();
    assert_eq!(t.tenant_id, "t-1");
    assert_eq!(t.settings.overrides.threshold, Some(7));
    assert_eq!(t.settings.overrides.window_ms, Some(60_000));
    assert_eq!(t.settings.overrides.permanent_strike, None);
    assert_eq!(t.settings.overrides.warn_threshold, None);
    assert_eq!(t.settings.mode, crate::policy::TenantMode::Enforce);
    assert_eq!(t.settings.shadow, None);
}

#[test]
fn generic_records_resolve_array_items_promoted() {
    // OwnerDevices: device_ids items as bytes (promoted inside the array).
    let rt = RecordType::OwnerDevices;
    let fields = with_field(
        fields_of(rt),
        "device_ids",
        Some(field(
            "device_ids",
            json!({"type": "array", "items": "bytes"}),
        )),
    );
    let w = schema_json(rt, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(22), &w).unwrap();
    let b = confluent(
        22,
        &body(
            &w,
            vec![
                ("owner_id", s("u-1")),
                ("tenant_id", s("t-1")),
                (
                    "device_ids",
                    Value::Array(vec![
                        Value::Bytes(b"d1".to_vec()),
                        Value::Bytes(b"d2".to_vec()),
                    ]),
                ),
            ],
        ),
    );
    assert_eq!(c.decode_devices(&b).unwrap().device_ids, ["d1", "d2"]);
}

#[test]
fn generic_enums_use_the_reader_default_or_fail() {
    let rt = RecordType::AdminCommand;
    let kind = json!({"type": "enum", "name": "CommandKind",
        "symbols": ["SUPPORT_UNBLOCK", "ADMIN_UNBLOCK", "RESET_STRIKES", "UNKNOWN", "PURGE"]});
    let role = json!({"type": "enum", "name": "ActorRole", "symbols": ["SUPPORT", "ADMIN", "VIEWER", "OWNER"]});
    let fields = with_field(fields_of(rt), "kind", Some(field("kind", kind)));
    let fields = with_field(fields, "actor_role", Some(field("actor_role", role)));
    let w = schema_json(rt, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(30), &w).unwrap();
    let values = |kind: Value, role: Value| {
        vec![
            ("command_id", s("c-1")),
            ("mailbox", s("a@b.c")),
            ("tenant_id", s("t-1")),
            ("kind", kind),
            ("actor", s("joe")),
            ("actor_role", role),
            ("ticket", s("T-1")),
            ("issued_at", Value::Long(5)),
            ("reason", Value::Union(0, Box::new(Value::Null))),
            ("expires_at", Value::Union(0, Box::new(Value::Null))),
        ]
    };
    // PURGE is unknown to the reader: its enum default UNKNOWN.
    let b = confluent(
        30,
        &body(
            &w,
            values(verdict_enum(4, "PURGE"), verdict_enum(0, "SUPPORT")),
        ),
    );
    let cmd = c.decode_command(&b).unwrap();
    assert_eq!(
        cmd.kind,
        crate::policy::CommandKind::Other("UNKNOWN".into())
    );
    // OWNER is unknown to ActorRole, which has no default: an error, not a misread.
    let b = confluent(
        30,
        &body(
            &w,
            values(verdict_enum(0, "SUPPORT_UNBLOCK"), verdict_enum(3, "OWNER")),
        ),
    );
    let e = c.decode_command(&b).unwrap_err();
    assert_eq!(e.code(), "avro", "{e}");
}

#[test]
fn verdict_enum_without_reader_default_fails_on_unknown_symbols_only() {
    // A reader whose enum has no default (not mailguard's): compile the program directly.
    let reader_json = RT.schema_json().replace(r#", "default": "CLEAN""#, "");
    assert_ne!(reader_json, RT.schema_json());
    let reader = Schema::parse_str(&reader_json).unwrap();
    let enum_ty = json!({"type": "enum", "name": "Verdict", "symbols": ["CLEAN", "SPAM", "VIRUS", "QUARANTINE"]});
    let w = schema_json(
        RT,
        &with_field(fields_of(RT), "verdict", Some(field("verdict", enum_ty))),
    );
    let writer = Schema::parse_str(&w).unwrap();
    let p = VerdictProgram::resolve(&writer, &reader).unwrap();
    let mut values = v1_values();
    assert_eq!(
        p.decode(&body(&w, values.clone())).unwrap().verdict,
        VerdictKind::Spam
    );
    values[4].1 = verdict_enum(3, "QUARANTINE");
    let e = p.decode(&body(&w, values)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid verdict: writer symbol QUARANTINE is not in the reader's enum, which has no default"
    );
}

#[test]
fn reader_defaults_fill_verdict_slots_the_writer_lacks() {
    // A reader that gives sent_at a default, reading a writer without it.
    let reader_json = RT.schema_json().replace(
        r#""logicalType": "timestamp-millis"}, "doc""#,
        r#""logicalType": "timestamp-millis"}, "default": 77, "doc""#,
    );
    let reader = Schema::parse_str(&reader_json).unwrap();
    let w = schema_json(RT, &with_field(fields_of(RT), "sent_at", None));
    let writer = Schema::parse_str(&w).unwrap();
    let p = VerdictProgram::resolve(&writer, &reader).unwrap();
    let mut values = v1_values();
    values.remove(3);
    assert_eq!(p.decode(&body(&w, values)).unwrap().sent_at, 77);
    // The embedded reader has no such default: incompatible.
    assert!(VerdictProgram::resolve(&writer, RT.schema())
        .unwrap_err()
        .to_string()
        .contains("'sent_at' is missing"));
}

#[test]
fn named_type_references_in_writer_schemas() {
    // The writer reuses its enum type by name for an extra field.
    let mut fields = fields_of(RT);
    fields.push(json!({"name": "previous", "type": ["null", "Verdict"], "default": null}));
    let w = schema_json(RT, &fields);
    let c = Codec::default();
    c.add_writer_schema(WriterKey::SchemaId(40), &w).unwrap();
    let mut values = v1_values();
    values.push(("previous", some(verdict_enum(2, "VIRUS"))));
    assert_verdict(&c, &confluent(40, &body(&w, values)), &expected());
}

// ---------------------------------------------------------------------------------------------
// Property: any permuted/extended/promoted writer gives what the v1 encoding gives.

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9@._-]{1,40}",
        any::<String>(),
    ]
}

/// An extra writer-only field: its schema and a value.
fn extra(kind: u8, n: i64) -> (J, Value) {
    match kind % 6 {
        0 => (json!(["null", "string"]), some(s(&n.to_string()))),
        1 => (json!("int"), Value::Int(n as i32)),
        2 => (
            json!({"type": "array", "items": "long"}),
            Value::Array(vec![Value::Long(n); 3]),
        ),
        3 => (
            json!({"type": "map", "values": ["null", "double"]}),
            Value::Map(HashMap::from([("k".into(), some(Value::Double(n as f64)))])),
        ),
        4 => (
            json!({"type": "fixed", "name": format!("F{n}"), "size": 4}),
            Value::Fixed(4, vec![1, 2, 3, 4]),
        ),
        _ => (
            json!({"type": "record", "name": format!("R{n}"), "fields": [{"name": "a", "type": "boolean"}, {"name": "b", "type": "bytes"}]}),
            Value::Record(vec![
                ("a".into(), Value::Boolean(true)),
                ("b".into(), Value::Bytes(vec![0; 3])),
            ]),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_compatible_writer_decodes_like_v1(
        message_id in arb_string(),
        tenant_id in arb_string(),
        mailbox in arb_string(),
        sent_at in any::<i32>(),
        int_sent_at in any::<bool>(),
        bytes_ids in any::<bool>(),
        verdict in 0usize..4,
        symbols in Just(vec!["CLEAN", "SPAM", "VIRUS", "QUARANTINE"]).prop_shuffle(),
        recipient_count in proptest::option::of(any::<i32>()),
        gateway_id in proptest::option::of(arb_string()),
        drop_optional in any::<bool>(),
        order in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
        extras in proptest::collection::vec((0usize..8, any::<u8>()), 0..4),
    ) {
        // The v1 encoding (embedded schema) of the same record; QUARANTINE is CLEAN there.
        let v1_symbols = ["CLEAN", "SPAM", "VIRUS"];
        let sym = symbols[verdict];
        let v1_index = v1_symbols.iter().position(|s| *s == sym).unwrap_or(0);
        let opt_int = |o: Option<i32>| o.map_or(null(), |n| some(Value::Int(n)));
        let opt_str = |o: &Option<String>| o.as_ref().map_or(null(), |v| some(s(v)));
        let v1 = Value::Record(vec![
            ("message_id".into(), s(&message_id)),
            ("tenant_id".into(), s(&tenant_id)),
            ("mailbox".into(), s(&mailbox)),
            ("sent_at".into(), Value::TimestampMillis(i64::from(sent_at))),
            ("verdict".into(), verdict_enum(v1_index as u32, v1_symbols[v1_index])),
            ("recipient_count".into(), opt_int(recipient_count)),
            ("gateway_id".into(), opt_str(&gateway_id)),
        ]);
        let c = Codec::default();
        let mut want = Vec::new();
        c.write_header(RT, &mut want);
        want.extend(apache_avro::to_avro_datum(RT.schema(), v1).unwrap());

        // The writer: fields permuted, some promoted, optional ones maybe dropped, extras.
        let id_ty = if bytes_ids { json!("bytes") } else { json!("string") };
        let id_val = |v: &str| if bytes_ids { Value::Bytes(v.as_bytes().to_vec()) } else { s(v) };
        let all: Vec<(J, Value)> = vec![
            (field("message_id", id_ty.clone()), id_val(&message_id)),
            (field("tenant_id", id_ty.clone()), id_val(&tenant_id)),
            (field("mailbox", json!("string")), s(&mailbox)),
            if int_sent_at {
                (field("sent_at", json!("int")), Value::Int(sent_at))
            } else {
                (field("sent_at", json!("long")), Value::Long(i64::from(sent_at)))
            },
            (
                field("verdict", json!({"type": "enum", "name": "Verdict", "symbols": symbols, "default": "CLEAN"})),
                verdict_enum(verdict as u32, sym),
            ),
            (optional("recipient_count", "int"), opt_int(recipient_count)),
            (optional("gateway_id", "string"), opt_str(&gateway_id)),
        ];
        let mut fields: Vec<(J, Value)> = order
            .iter()
            .filter(|&&i| !(drop_optional && i >= 5))
            .map(|&i| all[i].clone())
            .collect();
        for (n, (pos, kind)) in extras.iter().enumerate() {
            let (ty, v) = extra(*kind, n as i64);
            let at = (*pos).min(fields.len());
            fields.insert(at, (field(&format!("extra_{n}"), ty), v));
        }
        let w = schema_json(RT, &fields.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
        let names: Vec<String> = fields.iter().map(|(f, _)| f["name"].as_str().unwrap().to_string()).collect();
        let values = names.iter().map(|n| n.as_str()).zip(fields.iter().map(|(_, v)| v.clone())).collect();
        let b = confluent(77, &body(&w, values));
        c.add_writer_schema(WriterKey::SchemaId(77), &w).unwrap();

        let expect = c.decode_verdict(&want);
        prop_assert_eq!(c.decode_verdict(&b), expect.clone());
        prop_assert_eq!(c.decode_verdict_generic(&b), expect.clone());
        prop_assert_eq!(c.decode_verdict_generic(&want), expect);
    }
}
