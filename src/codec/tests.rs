use std::collections::HashMap;

use apache_avro::types::Value;
use proptest::prelude::*;

use super::*;
use crate::policy::{
    ActorRole, Alert, AlertKind, BlockRecord, BlockState, CommandKind, EventKind, EventLogEntry,
    PolicyOverrides, ScanRequest, ScanSkipReason, TenantMode, TripFacts, VerdictKind,
};

fn verdict() -> Verdict {
    Verdict {
        message_id: "m-1".into(),
        tenant_id: "t-1".into(),
        mailbox: "alice@example.com".into(),
        sent_at: 1_700_000_000_000,
        verdict: VerdictKind::Spam,
    }
}

fn command() -> Command {
    Command {
        command_id: "c-1".into(),
        mailbox: "alice@example.com".into(),
        tenant_id: "t-1".into(),
        kind: CommandKind::SupportUnblock,
        actor: "bob".into(),
        actor_role: ActorRole::Support,
        ticket: "SUP-42".into(),
        issued_at: 1_700_000_000_123,
        reason: None,
        expires_at: None,
    }
}

fn owner() -> Owner {
    Owner {
        owner_id: "u-1".into(),
        tenant_id: "t-1".into(),
        owner_name: Some("Alice".into()),
    }
}

fn devices() -> OwnerDevices {
    OwnerDevices {
        owner_id: "u-1".into(),
        tenant_id: "t-1".into(),
        device_ids: vec!["d-1".into(), "d-2".into()],
    }
}

fn tenant() -> TenantRecord {
    TenantRecord {
        tenant_id: "t-1".into(),
        settings: TenantSettings {
            mode: Default::default(),
            sync_security_enabled: true,
            endpoint_licence: false,
            overrides: PolicyOverrides {
                threshold: Some(3),
                window_ms: None,
                base_block_ms: Some(60_000),
                permanent_strike: None,
                warn_threshold: None,
            },
            shadow: Some(PolicyOverrides {
                threshold: Some(2),
                window_ms: None,
                base_block_ms: Some(1_000),
                permanent_strike: Some(3),
                warn_threshold: None,
            }),
        },
        email_licence: EmailLicence::Advanced,
    }
}

/// One record of each output type, in the shapes that differ: a timed and a permanent block, a
/// scan request, an alert with and without an owner, an incident's and a command's event.
fn effects() -> Vec<Effect> {
    [block_effects(), scan_and_alert_effects(), event_effects()].concat()
}

fn block_effects() -> Vec<Effect> {
    vec![
        Effect::Block(BlockRecord {
            mailbox: "alice@example.com".into(),
            tenant_id: "t-1".into(),
            state: BlockState::Blocked,
            strike: 2,
            blocked_at: 1_700_000_000_000,
            blocked_until: Some(1_700_007_200_000),
            incident_id: "inc-1".into(),
            evidence_message_ids: vec!["m-1".into(), "m-2".into()],
            updated_at: 1_700_000_000_500,
        }),
        Effect::Block(BlockRecord {
            mailbox: "alice@example.com".into(),
            tenant_id: "t-1".into(),
            state: BlockState::PermanentlyBlocked,
            strike: 6,
            blocked_at: 1,
            blocked_until: None,
            incident_id: "inc-6".into(),
            evidence_message_ids: vec![],
            updated_at: 2,
        }),
    ]
}

fn scan_and_alert_effects() -> Vec<Effect> {
    vec![
        Effect::Scan(ScanRequest {
            request_id: "r-1".into(),
            incident_id: "inc-1".into(),
            tenant_id: "t-1".into(),
            device_id: "d-1".into(),
            owner_id: "u-1".into(),
            mailbox: "alice@example.com".into(),
            requested_at: 5,
        }),
        Effect::Alert(Alert {
            kind: Default::default(),
            alert_id: "a-1".into(),
            incident_id: "inc-1".into(),
            tenant_id: "t-1".into(),
            mailbox: "alice@example.com".into(),
            owner_id: None,
            strike: 1,
            state: BlockState::Blocked,
            blocked_until: Some(99),
            devices_scanned: vec![],
            scan_skipped_reason: Some(ScanSkipReason::OwnerUnknown),
            summary: "blocked".into(),
        }),
        Effect::Alert(Alert {
            kind: Default::default(),
            alert_id: "a-2".into(),
            incident_id: "inc-2".into(),
            tenant_id: "t-1".into(),
            mailbox: "alice@example.com".into(),
            owner_id: Some("u-1".into()),
            strike: 6,
            state: BlockState::PermanentlyBlocked,
            blocked_until: None,
            devices_scanned: vec!["d-1".into()],
            scan_skipped_reason: None,
            summary: "permanently blocked".into(),
        }),
    ]
}

fn event_effects() -> Vec<Effect> {
    vec![
        Effect::Event(EventLogEntry {
            event_id: "e-1".into(),
            incident_id: Some("inc-1".into()),
            tenant_id: "t-1".into(),
            mailbox: "alice@example.com".into(),
            kind: EventKind::ScanSkipped,
            at: 7,
            detail: "OWNER_UNKNOWN".into(),
            reason: None,
            trip: None,
        }),
        Effect::Event(EventLogEntry {
            event_id: "e-2".into(),
            incident_id: None,
            tenant_id: "t-1".into(),
            mailbox: "alice@example.com".into(),
            kind: EventKind::CommandRejected,
            at: 8,
            detail: "role VIEWER".into(),
            reason: None,
            trip: None,
        }),
        Effect::Event(EventLogEntry {
            event_id: "e-3".into(),
            incident_id: Some("shadow-1".into()),
            tenant_id: "t-1".into(),
            mailbox: "alice@example.com".into(),
            kind: EventKind::ShadowTrip,
            at: 9,
            detail: "shadow policy, strike 2".into(),
            reason: None,
            trip: Some(TripFacts {
                strike: 2,
                first_sent_at: 1_700_000_000_000,
                blocked_at: 1_700_000_002_000,
                block_ms: Some(7_200_000),
                blocked_until: Some(1_700_007_202_000),
                evidence_message_ids: vec!["m-1".into(), "m-2".into(), "m-3".into()],
                exempt: false,
            }),
        }),
        Effect::Event(EventLogEntry {
            event_id: "e-4".into(),
            incident_id: Some("shadow-6".into()),
            tenant_id: "t-1".into(),
            mailbox: "alice@example.com".into(),
            kind: EventKind::ShadowTrip,
            at: 10,
            detail: "shadow policy, strike 6".into(),
            reason: None,
            trip: Some(TripFacts {
                strike: 6,
                first_sent_at: -5,
                blocked_at: 0,
                block_ms: None,
                blocked_until: None,
                evidence_message_ids: vec![],
                exempt: true,
            }),
        }),
    ]
}

fn confluent() -> Codec {
    Codec::new(
        RecordType::ALL
            .into_iter()
            .map(|rt| (rt, 100 + rt as u32))
            .collect(),
    )
}

fn both() -> [Codec; 2] {
    [Codec::default(), confluent()]
}

fn enc_verdict(c: &Codec, v: &Verdict) -> Vec<u8> {
    let mut out = Vec::new();
    c.encode_verdict(v, &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Schemas

/// CRC-64-AVRO straight from the Avro specification, to cross-check apache-avro's Rabin.
fn crc64_avro(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let table: Vec<u64> = (0..256u64)
        .map(|i| {
            let mut fp = i;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (!(fp & 1)).wrapping_add(1));
            }
            fp
        })
        .collect();
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

#[test]
fn schemas_parse_with_docs_namespace_and_distinct_fingerprints() {
    let mut fps = std::collections::HashSet::new();
    for &rt in RecordType::all() {
        let json: serde_json::Value = serde_json::from_str(rt.schema_json()).unwrap();
        assert_eq!(json["namespace"], NAMESPACE, "{rt}");
        assert_eq!(json["name"], rt.name());
        assert!(
            json["doc"].as_str().is_some_and(|d| !d.is_empty()),
            "{rt} doc"
        );
        for f in json["fields"].as_array().unwrap() {
            assert!(
                f["doc"].as_str().is_some_and(|d| !d.is_empty()),
                "{rt}.{}",
                f["name"]
            );
            // Optional fields are ["null", T] with default null.
            if let Some(u) = f["type"].as_array() {
                assert_eq!(u[0], "null", "{rt}.{}", f["name"]);
                assert!(f["default"].is_null() && f.get("default").is_some());
            }
        }
        let Schema::Record(r) = rt.schema() else {
            panic!("{rt} not a record")
        };
        assert_eq!(r.name.namespace.as_deref(), Some(NAMESPACE));
        assert_eq!(rt.fingerprint(), crc64_avro(rt.canonical_form().as_bytes()));
        assert!(fps.insert(rt.fingerprint()), "duplicate fingerprint {rt}");
        assert_eq!(RecordType::from_fingerprint(rt.fingerprint()), Some(rt));
        assert_eq!(rt.name().parse::<RecordType>(), Ok(rt));
        assert_eq!(rt.full_name().parse::<RecordType>(), Ok(rt));
    }
    assert!("Nope".parse::<RecordType>().is_err());
    assert_eq!(RecordType::all().len(), 11);
}

/// Reference Parsing Canonical Forms and fingerprints of the eleven schemas, computed with fastavro
/// 1.13.1 (`to_parsing_canonical_form`, `fingerprint(.., "CRC-64-AVRO")`; the fingerprint as the
/// little-endian u64 of the header bytes). Java Avro 1.12.1 agrees (the spec's algorithm).
const REFERENCE: [(RecordType, &str, u64); 11] = [
    (
        RecordType::OutboundVerdict,
        r#"{"name":"mailguard.v1.OutboundVerdict","type":"record","fields":[{"name":"message_id","type":"string"},{"name":"tenant_id","type":"string"},{"name":"mailbox","type":"string"},{"name":"sent_at","type":"long"},{"name":"verdict","type":{"name":"mailguard.v1.Verdict","type":"enum","symbols":["CLEAN","SPAM","VIRUS"]}},{"name":"recipient_count","type":["null","int"]},{"name":"gateway_id","type":["null","string"]}]}"#,
        0x7c7a_939b_a345_b39a,
    ),
    (
        RecordType::MailboxOwner,
        r#"{"name":"mailguard.v1.MailboxOwner","type":"record","fields":[{"name":"mailbox","type":"string"},{"name":"tenant_id","type":"string"},{"name":"owner_id","type":"string"},{"name":"owner_name","type":["null","string"]}]}"#,
        0xbfd6_0b54_11c2_47f7,
    ),
    (
        RecordType::OwnerDevices,
        r#"{"name":"mailguard.v1.OwnerDevices","type":"record","fields":[{"name":"owner_id","type":"string"},{"name":"tenant_id","type":"string"},{"name":"device_ids","type":{"type":"array","items":"string"}}]}"#,
        0xc236_25f3_62a3_9ef1,
    ),
    (
        RecordType::TenantSettings,
        r#"{"name":"mailguard.v1.TenantSettings","type":"record","fields":[{"name":"tenant_id","type":"string"},{"name":"sync_security_enabled","type":"boolean"},{"name":"endpoint_licence","type":"boolean"},{"name":"email_licence","type":{"name":"mailguard.v1.EmailLicence","type":"enum","symbols":["STANDARD","ADVANCED","NONE"]}},{"name":"threshold","type":["null","int"]},{"name":"window_ms","type":["null","long"]},{"name":"base_block_ms","type":["null","long"]},{"name":"permanent_strike","type":["null","int"]},{"name":"mode","type":{"name":"mailguard.v1.TenantMode","type":"enum","symbols":["ENFORCE","ALERT_ONLY"]}},{"name":"warn_threshold","type":["null","int"]},{"name":"shadow","type":["null",{"name":"mailguard.v1.ShadowOverrides","type":"record","fields":[{"name":"threshold","type":["null","int"]},{"name":"window_ms","type":["null","long"]},{"name":"base_block_ms","type":["null","long"]},{"name":"permanent_strike","type":["null","int"]}]}]}]}"#,
        0x4c8b_9c56_25df_b433,
    ),
    (
        RecordType::AdminCommand,
        r#"{"name":"mailguard.v1.AdminCommand","type":"record","fields":[{"name":"command_id","type":"string"},{"name":"mailbox","type":"string"},{"name":"tenant_id","type":"string"},{"name":"kind","type":{"name":"mailguard.v1.CommandKind","type":"enum","symbols":["SUPPORT_UNBLOCK","ADMIN_UNBLOCK","RESET_STRIKES","UNKNOWN","EXEMPTION_PUT","EXEMPTION_DELETE"]}},{"name":"actor","type":"string"},{"name":"actor_role","type":{"name":"mailguard.v1.ActorRole","type":"enum","symbols":["SUPPORT","ADMIN","VIEWER"]}},{"name":"ticket","type":"string"},{"name":"issued_at","type":"long"},{"name":"reason","type":["null","string"]},{"name":"expires_at","type":["null","long"]}]}"#,
        0xb10e_0706_4b59_3371,
    ),
    (
        RecordType::MailboxBlock,
        r#"{"name":"mailguard.v1.MailboxBlock","type":"record","fields":[{"name":"mailbox","type":"string"},{"name":"tenant_id","type":"string"},{"name":"state","type":{"name":"mailguard.v1.BlockState","type":"enum","symbols":["BLOCKED","PERMANENTLY_BLOCKED","UNBLOCKED"]}},{"name":"strike","type":"int"},{"name":"blocked_at","type":"long"},{"name":"blocked_until","type":["null","long"]},{"name":"incident_id","type":"string"},{"name":"evidence_message_ids","type":{"type":"array","items":"string"}},{"name":"updated_at","type":"long"}]}"#,
        0x4d56_26a9_4b3a_72ff,
    ),
    (
        RecordType::ScanRequest,
        r#"{"name":"mailguard.v1.ScanRequest","type":"record","fields":[{"name":"request_id","type":"string"},{"name":"incident_id","type":"string"},{"name":"tenant_id","type":"string"},{"name":"device_id","type":"string"},{"name":"owner_id","type":"string"},{"name":"mailbox","type":"string"},{"name":"requested_at","type":"long"}]}"#,
        0xcf14_aaa2_c264_cee3,
    ),
    (
        RecordType::Alert,
        r#"{"name":"mailguard.v1.Alert","type":"record","fields":[{"name":"alert_id","type":"string"},{"name":"incident_id","type":"string"},{"name":"tenant_id","type":"string"},{"name":"mailbox","type":"string"},{"name":"owner_id","type":["null","string"]},{"name":"strike","type":"int"},{"name":"state","type":{"name":"mailguard.v1.BlockState","type":"enum","symbols":["BLOCKED","PERMANENTLY_BLOCKED","UNBLOCKED"]}},{"name":"blocked_until","type":["null","long"]},{"name":"devices_scanned","type":{"type":"array","items":"string"}},{"name":"scan_skipped_reason","type":["null",{"name":"mailguard.v1.ScanSkipReason","type":"enum","symbols":["SYNC_SECURITY_OFF","NO_ENDPOINT_LICENCE","OWNER_UNKNOWN","NO_DEVICES"]}]},{"name":"summary","type":"string"},{"name":"kind","type":{"name":"mailguard.v1.AlertKind","type":"enum","symbols":["BLOCK","WARNING","SIMULATED_BLOCK","EXEMPT_TRIP","INCIDENT_UPDATE"]}}]}"#,
        0x2432_5315_70b4_d57d,
    ),
    (
        RecordType::EventLogEntry,
        r#"{"name":"mailguard.v1.EventLogEntry","type":"record","fields":[{"name":"event_id","type":"string"},{"name":"incident_id","type":["null","string"]},{"name":"tenant_id","type":"string"},{"name":"mailbox","type":"string"},{"name":"kind","type":{"name":"mailguard.v1.EventKind","type":"enum","symbols":["MAILBOX_BLOCKED","MAILBOX_PERMANENTLY_BLOCKED","SCAN_REQUESTED","SCAN_SKIPPED","ALERT_SENT","MAILBOX_UNBLOCKED","SUPPORT_UNBLOCK","COMMAND_REJECTED","UNKNOWN","MAILBOX_WARNED","TRIP_SIMULATED","TRIP_EXEMPTED","EXEMPTION_ADDED","EXEMPTION_REMOVED","EXEMPTION_EXPIRED","SCAN_COMPLETED","SCAN_OVERDUE","INCIDENT_REMEDIATED","INCIDENT_NEEDS_ATTENTION","SHADOW_TRIP"]}},{"name":"at","type":"long"},{"name":"detail","type":"string"},{"name":"reason","type":["null",{"name":"mailguard.v1.RejectReason","type":"enum","symbols":["UNKNOWN_KIND","ROLE_NOT_ALLOWED","TIMED_BLOCK","NOT_BLOCKED","OTHER","INVALID_EXEMPTION","EXEMPTION_LIMIT","NOT_EXEMPT"]}]},{"name":"trip","type":["null",{"name":"mailguard.v1.TripFacts","type":"record","fields":[{"name":"strike","type":"int"},{"name":"first_sent_at","type":"long"},{"name":"blocked_at","type":"long"},{"name":"block_ms","type":["null","long"]},{"name":"blocked_until","type":["null","long"]},{"name":"evidence_message_ids","type":{"type":"array","items":"string"}},{"name":"exempt","type":"boolean"}]}]}]}"#,
        0xa555_1f62_0b4f_a1e5,
    ),
    (
        RecordType::Exemption,
        r#"{"name":"mailguard.v1.Exemption","type":"record","fields":[{"name":"tenant_id","type":"string"},{"name":"pattern","type":"string"},{"name":"reason","type":"string"},{"name":"actor","type":"string"},{"name":"actor_role","type":{"name":"mailguard.v1.ExemptionActorRole","type":"enum","symbols":["SUPPORT","ADMIN","VIEWER","UNKNOWN"]}},{"name":"command_id","type":"string"},{"name":"created_at","type":"long"},{"name":"expires_at","type":["null","long"]}]}"#,
        0xb2fe_cd1c_dfb6_b1f6,
    ),
    (
        RecordType::ScanResult,
        r#"{"name":"mailguard.v1.ScanResult","type":"record","fields":[{"name":"request_id","type":"string"},{"name":"incident_id","type":"string"},{"name":"tenant_id","type":"string"},{"name":"device_id","type":"string"},{"name":"status","type":{"name":"mailguard.v1.ScanStatus","type":"enum","symbols":["CLEAN","THREATS_REMOVED","THREATS_REMAINING","FAILED","UNKNOWN"]}},{"name":"threats","type":{"type":"array","items":"string"}},{"name":"started_at","type":"long"},{"name":"completed_at","type":"long"},{"name":"mailbox","type":["null","string"]}]}"#,
        0xeee6_b0f2_5ff3_a9b9,
    ),
];

#[test]
fn canonical_forms_and_fingerprints_match_the_reference() {
    for (rt, canonical, fp) in REFERENCE {
        assert_eq!(rt.canonical_form(), canonical, "{rt}");
        assert_eq!(rt.fingerprint(), fp, "{rt}: 0x{:016x}", rt.fingerprint());
        assert_eq!(parsing_canonical_form(rt.schema_json()).unwrap(), canonical);
        assert_eq!(schema_fingerprint(rt.schema_json()), Ok(fp));
    }
    // The header bytes of OutboundVerdict, as other implementations write them.
    let c = Codec::default();
    let b = enc_verdict(&c, &verdict());
    assert_eq!(&b[2..10], &[0x9a, 0xb3, 0x45, 0xa3, 0x9b, 0x93, 0x7a, 0x7c]);
    // apache-avro 0.21 computes another form (see codec/canonical.rs); what mailguard wrote
    // with it is still read as the embedded schema.
    let legacy = RecordType::OutboundVerdict.legacy_fingerprint();
    assert_eq!(legacy, 0xafb4_28aa_4b03_f8d4);
    let mut old = b.clone();
    old[2..10].copy_from_slice(&legacy.to_le_bytes());
    assert_eq!(c.decode_verdict(&old).unwrap(), verdict());
    assert_eq!(detect(&old), Some(RecordType::OutboundVerdict));
}

use apache_avro::Schema;

#[test]
fn timestamps_are_timestamp_millis() {
    let Schema::Record(r) = RecordType::OutboundVerdict.schema() else {
        unreachable!()
    };
    assert_eq!(
        r.fields[r.lookup["sent_at"]].schema,
        Schema::TimestampMillis
    );
}

#[test]
fn verdict_program_compiles_and_codec_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Codec>();
    VerdictProgram::compile(RecordType::OutboundVerdict.schema()).unwrap();
    // Other records lack the verdict fields: a clear start-up error, not a misread.
    assert!(VerdictProgram::compile(RecordType::MailboxOwner.schema()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Framing

#[test]
fn single_object_header() {
    let c = Codec::default();
    let b = enc_verdict(&c, &verdict());
    assert_eq!(&b[..2], &[0xC3, 0x01]);
    assert_eq!(
        &b[2..10],
        &RecordType::OutboundVerdict.fingerprint().to_le_bytes()
    );
    assert_eq!(
        c.framing(RecordType::OutboundVerdict),
        Framing::SingleObject
    );
    assert_eq!(detect(&b), Some(RecordType::OutboundVerdict));
    assert_eq!(c.detect(&b), Some(RecordType::OutboundVerdict));
    // (apache-avro's own single-object reader expects its non-standard fingerprint, so it
    // rejects these headers: see codec/canonical.rs.)
}

#[test]
fn confluent_header() {
    let c = Codec::new(HashMap::from([(RecordType::OutboundVerdict, 7)]));
    let b = enc_verdict(&c, &verdict());
    assert_eq!(&b[..5], &[0, 0, 0, 0, 7]);
    assert_eq!(
        c.framing(RecordType::OutboundVerdict),
        Framing::Confluent { schema_id: 7 }
    );
    assert_eq!(c.detect(&b), Some(RecordType::OutboundVerdict));
    assert_eq!(detect(&b), None);
    // Other types still single-object.
    assert_eq!(c.framing(RecordType::Alert), Framing::SingleObject);
    assert_eq!(c.decode_verdict(&b).unwrap(), verdict());
}

#[test]
fn decoders_accept_both_framings() {
    let so = Codec::default();
    let cf = confluent();
    // A single-object reader must be told the writer's ids (the embedded schemas here).
    let so_reading_ids = Codec::default();
    for rt in RecordType::ALL {
        so_reading_ids
            .add_writer_schema(WriterKey::SchemaId(100 + rt as u32), rt.schema_json())
            .unwrap();
    }
    let v = verdict();
    for writer in [&so, &cf] {
        let b = enc_verdict(writer, &v);
        for reader in [&so_reading_ids, &cf] {
            assert_eq!(reader.decode_verdict(&b).unwrap(), v);
            assert_eq!(reader.decode_verdict_generic(&b).unwrap(), v);
        }
    }
}

#[test]
fn bad_magic() {
    let c = Codec::default();
    let mut b = enc_verdict(&c, &verdict());
    b[0] = 0x41;
    let e = c.decode_verdict(&b).unwrap_err();
    assert_eq!(e, CodecError::BadMagic(0x41));
    assert_eq!(e.to_string(), "bad magic byte 0x41");
    assert_eq!(e.code(), "bad_magic");
    assert_eq!(
        c.decode_command(&b).unwrap_err(),
        CodecError::BadMagic(0x41)
    );
    let e = c.decode_verdict(&[0xC3, 0x02, 0, 0]).unwrap_err();
    assert_eq!(e, CodecError::BadMarker(0x02));
    assert_eq!(c.decode_verdict(&[]).unwrap_err(), CodecError::EmptyValue);
    assert_eq!(
        c.decode_verdict(&[0xC3, 0x01, 1, 2])
            .unwrap_err()
            .to_string(),
        "truncated header: 4 bytes, 10 needed"
    );
    assert!(matches!(
        c.decode_verdict(&[0, 0, 0]).unwrap_err(),
        CodecError::TruncatedHeader { needed: 5, .. }
    ));
}

#[test]
fn wrong_fingerprint() {
    let c = Codec::default();
    let mut b = enc_verdict(&c, &verdict());
    b[2] ^= 0xFF;
    let e = c.decode_verdict(&b).unwrap_err();
    assert!(matches!(e, CodecError::UnknownFingerprint { .. }), "{e}");
    assert!(
        e.to_string().starts_with("unknown schema fingerprint "),
        "{e}"
    );
    assert!(c.decode_verdict_generic(&b).is_err());

    let fp = u64::from_le_bytes(b[2..10].try_into().unwrap());
    assert_eq!(
        e.to_string(),
        format!("unknown schema fingerprint 0x{fp:016x}")
    );
    assert_eq!(e, CodecError::UnknownFingerprint { fingerprint: fp });

    // A MailboxOwner on the verdict topic.
    let mut o = Vec::new();
    c.encode_owner("a@b.c", &owner(), &mut o).unwrap();
    let e = c.decode_verdict(&o).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "wrong record type: schema fingerprint 0x{:016x} is mailguard.v1.MailboxOwner, expected OutboundVerdict",
            RecordType::MailboxOwner.fingerprint()
        )
    );
    assert_eq!(e.code(), "wrong_record_type");
}

/// An id other than the configured one is another writer schema: known ones are resolved,
/// unknown ones are an error naming the id, never read with the embedded schema.
#[test]
fn unknown_confluent_id() {
    let c = Codec::new(HashMap::from([(RecordType::OutboundVerdict, 7)]));
    let other = Codec::new(HashMap::from([(RecordType::OutboundVerdict, 8)]));
    let b = enc_verdict(&other, &verdict());
    let e = c.decode_verdict(&b).unwrap_err();
    assert_eq!(
        e,
        CodecError::UnknownSchemaId {
            id: 8,
            registry: false
        }
    );
    assert_eq!(
        e.to_string(),
        "unknown schema id 8 (no schema registry configured and not added)"
    );
    assert!(!e.is_transient());
    assert_eq!(e.code(), "unknown_schema_id");
    // Not even without a configured id.
    assert_eq!(Codec::default().decode_verdict(&b).unwrap_err(), e);
    assert!(Codec::default().decode_verdict_generic(&b).is_err());
    // Once the id is known as the embedded schema, it reads.
    c.set_schema_id(RecordType::OutboundVerdict, 8).unwrap();
    assert_eq!(c.decode_verdict(&b).unwrap(), verdict());
    // ... and is written from now on, by every clone.
    let clone = c.clone();
    assert_eq!(&enc_verdict(&clone, &verdict())[..5], &[0, 0, 0, 0, 8]);
    // An id bound to one schema cannot be rebound to another.
    assert!(c.set_schema_id(RecordType::MailboxOwner, 8).is_err());
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_every_record_type_both_framings() {
    for c in both() {
        let mut out = Vec::new();

        c.encode_verdict(&verdict(), &mut out).unwrap();
        assert_eq!(c.decode_verdict(&out).unwrap(), verdict());
        assert_eq!(c.decode_verdict_generic(&out).unwrap(), verdict());

        c.encode_command(&command(), &mut out).unwrap();
        assert_eq!(c.decode_command(&out).unwrap(), command());
        let mut other = command();
        other.kind = CommandKind::Other("ADMIN_UNBLOCK".into());
        other.actor_role = ActorRole::Viewer;
        c.encode_command(&other, &mut out).unwrap();
        assert_eq!(c.decode_command(&out).unwrap(), other);

        c.encode_owner("alice@example.com", &owner(), &mut out)
            .unwrap();
        assert_eq!(
            c.decode_owner(&out).unwrap(),
            ("alice@example.com".to_string(), owner())
        );
        let anon = Owner {
            owner_name: None,
            ..owner()
        };
        c.encode_owner("alice@example.com", &anon, &mut out)
            .unwrap();
        assert_eq!(c.decode_owner(&out).unwrap().1, anon);

        c.encode_devices(&devices(), &mut out).unwrap();
        assert_eq!(c.decode_devices(&out).unwrap(), devices());
        let none = OwnerDevices {
            device_ids: vec![],
            ..devices()
        };
        c.encode_devices(&none, &mut out).unwrap();
        assert_eq!(c.decode_devices(&out).unwrap(), none);

        c.encode_tenant(&tenant(), &mut out).unwrap();
        assert_eq!(c.decode_tenant_record(&out).unwrap(), tenant());
        assert_eq!(
            c.decode_tenant(&out).unwrap(),
            ("t-1".to_string(), tenant().settings)
        );

        for e in effects() {
            c.encode_effect(&e, &mut out).unwrap();
            assert_eq!(c.detect(&out), Some(Codec::effect_type(&e)));
            assert_eq!(c.decode_effect(&out).unwrap(), e);
        }
    }
}

#[test]
fn encoders_clear_the_buffer() {
    let c = Codec::default();
    let mut out = vec![1, 2, 3];
    c.encode_verdict(&verdict(), &mut out).unwrap();
    assert_eq!(c.decode_verdict(&out).unwrap(), verdict());
}

#[test]
fn every_verdict_kind() {
    let c = Codec::default();
    for k in [VerdictKind::Clean, VerdictKind::Spam, VerdictKind::Virus] {
        let v = Verdict {
            verdict: k,
            ..verdict()
        };
        assert_eq!(c.decode_verdict(&enc_verdict(&c, &v)).unwrap(), v);
    }
}

#[test]
fn unknown_command_kind_is_refused_on_encode() {
    let c = Codec::default();
    let cmd = Command {
        kind: CommandKind::Other("MAKE_COFFEE".into()),
        ..command()
    };
    let e = c.encode_command(&cmd, &mut Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid enum symbol \"MAKE_COFFEE\" at field kind"
    );
}

#[test]
fn borrowed_verdict_keeps_the_wire_mailbox_and_matches_keys_case_insensitively() {
    let c = Codec::default();
    for (mailbox, key, matches) in [
        ("alice@example.com", "alice@example.com", true),
        ("Alice@Example.COM", "alice@example.com", true),
        ("ÄRGER@Beispiel.DE", "ärger@beispiel.de", true),
        ("alice@example.com", "bob@example.com", false),
        ("ärger@beispiel.de", "arger@beispiel.de", false),
    ] {
        let v = Verdict {
            mailbox: mailbox.into(),
            ..verdict()
        };
        let b = enc_verdict(&c, &v);
        let r = c.decode_verdict_ref(&b).unwrap();
        assert_eq!(r.mailbox, mailbox, "as on the wire");
        let key = crate::policy::MailboxKey::new(key).unwrap();
        assert_eq!(r.is_about(&key), matches, "{mailbox} vs key {key:?}");
        assert_eq!(r.to_owned(), c.decode_verdict(&b).unwrap());
    }
}

#[test]
fn upper_case_mailbox_is_lower_cased() {
    let c = Codec::default();
    let v = Verdict {
        mailbox: "Alice.Smith@Example.COM".into(),
        ..verdict()
    };
    let b = enc_verdict(&c, &v);
    assert_eq!(
        c.decode_verdict(&b).unwrap().mailbox,
        "alice.smith@example.com"
    );
    assert_eq!(
        c.decode_verdict_generic(&b).unwrap().mailbox,
        "alice.smith@example.com"
    );
    let v = Verdict {
        mailbox: "ÄRGER@Beispiel.DE".into(),
        ..verdict()
    };
    assert_eq!(
        c.decode_verdict(&enc_verdict(&c, &v)).unwrap().mailbox,
        "ärger@beispiel.de"
    );

    let mut out = Vec::new();
    c.encode_owner("Bob@Example.com", &owner(), &mut out)
        .unwrap();
    assert_eq!(c.decode_owner(&out).unwrap().0, "bob@example.com");
    let cmd = Command {
        mailbox: "BOB@EXAMPLE.COM".into(),
        ..command()
    };
    c.encode_command(&cmd, &mut out).unwrap();
    assert_eq!(c.decode_command(&out).unwrap().mailbox, "bob@example.com");
}

#[test]
fn empty_required_fields() {
    let c = Codec::default();
    for (field, v) in [
        (
            "message_id",
            Verdict {
                message_id: String::new(),
                ..verdict()
            },
        ),
        (
            "tenant_id",
            Verdict {
                tenant_id: String::new(),
                ..verdict()
            },
        ),
        (
            "mailbox",
            Verdict {
                mailbox: String::new(),
                ..verdict()
            },
        ),
    ] {
        let b = enc_verdict(&c, &v);
        let e = c.decode_verdict(&b).unwrap_err();
        assert_eq!(e.to_string(), format!("empty {field}"));
        assert_eq!(c.decode_verdict_generic(&b).unwrap_err(), e);
    }
    let mut out = Vec::new();
    let cmd = Command {
        command_id: String::new(),
        ..command()
    };
    c.encode_command(&cmd, &mut out).unwrap();
    assert_eq!(
        c.decode_command(&out).unwrap_err().to_string(),
        "empty command_id"
    );
    c.encode_owner("", &owner(), &mut out).unwrap();
    assert_eq!(
        c.decode_owner(&out).unwrap_err().to_string(),
        "empty mailbox"
    );
    assert_eq!(CodecError::MissingKey.to_string(), "missing key");
}

#[test]
fn truncated_bodies() {
    let c = Codec::default();
    let b = enc_verdict(&c, &verdict());
    for n in 0..b.len() {
        assert!(c.decode_verdict(&b[..n]).is_err(), "prefix {n}");
        assert!(c.decode_verdict_generic(&b[..n]).is_err(), "prefix {n}");
    }
    // Cut before the last union index: bare apache-avro reads that EOF as null; we do not.
    let body = &b[10..b.len() - 1];
    let lenient =
        apache_avro::from_avro_datum(RecordType::OutboundVerdict.schema(), &mut &body[..], None);
    assert!(lenient.is_ok());
    assert_eq!(
        c.decode_verdict_generic(&b[..b.len() - 1])
            .unwrap_err()
            .to_string(),
        "truncated body at field gateway_id"
    );
    // Header (10) + 3 strings ("m-1", "t-1", "alice@example.com" = 4 + 4 + 18 bytes): cut in sent_at.
    let cut = 10 + 4 + 4 + 18 + 1;
    assert_eq!(
        c.decode_verdict(&b[..cut]).unwrap_err().to_string(),
        "truncated body at field sent_at"
    );
    // Every other record type.
    let mut out = Vec::new();
    let mut all = Vec::new();
    c.encode_command(&command(), &mut out).unwrap();
    all.push(out.clone());
    c.encode_owner("a@b.c", &owner(), &mut out).unwrap();
    all.push(out.clone());
    c.encode_devices(&devices(), &mut out).unwrap();
    all.push(out.clone());
    c.encode_tenant(&tenant(), &mut out).unwrap();
    all.push(out.clone());
    for e in effects() {
        c.encode_effect(&e, &mut out).unwrap();
        all.push(out.clone());
    }
    for b in all {
        let rt = c.detect(&b).unwrap();
        for n in 0..b.len() {
            assert!(c.decode_value(rt, &b[..n]).is_err(), "{rt} prefix {n}");
            assert!(c.avro_to_json(rt, &b[..n]).is_err());
        }
        assert!(c.decode_value(rt, &b).is_ok());
    }
}

#[test]
fn trailing_bytes() {
    let c = Codec::default();
    let mut b = enc_verdict(&c, &verdict());
    b.push(0);
    assert_eq!(
        c.decode_verdict(&b).unwrap_err(),
        CodecError::TrailingBytes(1)
    );
    assert_eq!(
        c.decode_verdict_generic(&b).unwrap_err(),
        CodecError::TrailingBytes(1)
    );
}

#[test]
fn invalid_enum_index() {
    let c = Codec::default();
    let mut b = enc_verdict(&c, &verdict());
    // The verdict enum follows sent_at; SPAM = index 1 = zig-zag 0x02. Then two null unions.
    let n = b.len();
    assert_eq!(&b[n - 3..], &[0x02, 0x00, 0x00]);
    b[n - 3] = 0x06; // index 3
    let e = c.decode_verdict(&b).unwrap_err();
    assert_eq!(e.to_string(), "invalid enum index 3 at field verdict");
    assert!(c.decode_verdict_generic(&b).is_err());
    b[n - 3] = 0x01; // index -1
    assert!(matches!(
        c.decode_verdict(&b).unwrap_err(),
        CodecError::InvalidEnumIndex { index: -1, .. }
    ));
    // Bad union branch of recipient_count.
    b[n - 3] = 0x02;
    b[n - 2] = 0x04;
    assert_eq!(
        c.decode_verdict(&b).unwrap_err().to_string(),
        "invalid union index 2 at field recipient_count"
    );
    // Invalid enum index in a generic-path record.
    let mut out = Vec::new();
    c.encode_tenant(&tenant(), &mut out).unwrap();
    // tenant_id "t-1" (4 bytes) + 2 booleans, then the email_licence enum.
    assert_eq!(out[10 + 4 + 2], 0x02);
    out[10 + 4 + 2] = 0x08;
    assert!(c.decode_tenant(&out).is_err());
}

#[test]
fn tenant_override_validation() {
    let c = Codec::default();
    let mut out = Vec::new();
    let mut t = tenant();
    t.settings.overrides.threshold = Some(0);
    c.encode_tenant(&t, &mut out).unwrap();
    assert_eq!(
        c.decode_tenant(&out).unwrap_err().to_string(),
        "invalid threshold: must be >= 1"
    );
    let mut t = tenant();
    t.settings.overrides.base_block_ms = Some(-1);
    c.encode_tenant(&t, &mut out).unwrap();
    assert!(c.decode_tenant(&out).is_err());
}

#[test]
fn optional_verdict_fields_are_skipped() {
    let c = Codec::default();
    let j = serde_json::json!({
        "message_id": "m-9", "tenant_id": "t-9", "mailbox": "X@Y.Z", "sent_at": -5,
        "verdict": "VIRUS", "recipient_count": 12, "gateway_id": "gw-7"
    });
    let mut out = Vec::new();
    c.json_to_avro(RecordType::OutboundVerdict, &j, &mut out)
        .unwrap();
    let v = c.decode_verdict(&out).unwrap();
    assert_eq!(v, c.decode_verdict_generic(&out).unwrap());
    assert_eq!(v.mailbox, "x@y.z");
    assert_eq!(v.sent_at, -5);
    assert_eq!(v.verdict, VerdictKind::Virus);
}

/// The program follows whatever the schema says: field order, extra fields of any shape,
/// nullable target fields, a longer symbol table.
#[test]
fn verdict_program_is_schema_driven() {
    let src = r#"{"type":"record","name":"OutboundVerdict","namespace":"mailguard.v2","fields":[
        {"name":"extra_map","type":{"type":"map","values":{"type":"array","items":"double"}}},
        {"name":"verdict","type":{"type":"enum","name":"V","symbols":["PHISH","VIRUS","CLEAN","SPAM"]}},
        {"name":"sent_at","type":["null","long"]},
        {"name":"fx","type":{"type":"fixed","name":"F","size":3}},
        {"name":"mailbox","type":"string"},
        {"name":"flag","type":["null","boolean","float"]},
        {"name":"tenant_id","type":"string"},
        {"name":"nested","type":{"type":"record","name":"N","fields":[{"name":"a","type":"bytes"}]}},
        {"name":"message_id","type":"string"}
    ]}"#;
    let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(src).unwrap()));
    let p = VerdictProgram::compile(schema).unwrap();
    let value = Value::Record(vec![
        (
            "extra_map".into(),
            Value::Map(HashMap::from([(
                "k".into(),
                Value::Array(vec![Value::Double(1.5), Value::Double(2.5)]),
            )])),
        ),
        ("verdict".into(), Value::Enum(0, "PHISH".into())),
        ("sent_at".into(), Value::Union(1, Box::new(Value::Long(42)))),
        ("fx".into(), Value::Fixed(3, vec![1, 2, 3])),
        ("mailbox".into(), Value::String("A@B".into())),
        ("flag".into(), Value::Union(2, Box::new(Value::Float(1.0)))),
        ("tenant_id".into(), Value::String("t".into())),
        (
            "nested".into(),
            Value::Record(vec![("a".into(), Value::Bytes(vec![9; 5]))]),
        ),
        ("message_id".into(), Value::String("m".into())),
    ]);
    let body = apache_avro::to_avro_datum(schema, value).unwrap();
    let v = p.decode(&body).unwrap();
    assert_eq!(
        v,
        Verdict {
            message_id: "m".into(),
            tenant_id: "t".into(),
            mailbox: "a@b".into(),
            sent_at: 42,
            verdict: VerdictKind::Clean, // PHISH: an unknown symbol never counts.
        }
    );
}

// ---------------------------------------------------------------------------------------------
// JSON

#[test]
fn json_round_trips_every_record_type() {
    let c = Codec::default();
    let samples = [
        (
            RecordType::OutboundVerdict,
            serde_json::json!({"message_id":"m","tenant_id":"t","mailbox":"a@b.c","sent_at":1700000000000i64,
                "verdict":"SPAM","recipient_count":null,"gateway_id":"gw"}),
        ),
        (
            RecordType::MailboxOwner,
            serde_json::json!({"mailbox":"a@b.c","tenant_id":"t","owner_id":"u","owner_name":null}),
        ),
        (
            RecordType::OwnerDevices,
            serde_json::json!({"owner_id":"u","tenant_id":"t","device_ids":["d1","d2"]}),
        ),
        (
            RecordType::TenantSettings,
            serde_json::json!({"tenant_id":"t","sync_security_enabled":true,"endpoint_licence":true,
                "email_licence":"NONE","threshold":4,"window_ms":null,"base_block_ms":1000,"permanent_strike":null,
                "mode":"ALERT_ONLY","warn_threshold":0,"shadow":null}),
        ),
        (
            RecordType::TenantSettings,
            serde_json::json!({"tenant_id":"t","sync_security_enabled":true,"endpoint_licence":true,
                "email_licence":"NONE","threshold":null,"window_ms":null,"base_block_ms":null,"permanent_strike":null,
                "mode":"ENFORCE","warn_threshold":null,
                "shadow":{"threshold":3,"window_ms":null,"base_block_ms":60000,"permanent_strike":null}}),
        ),
        (
            RecordType::AdminCommand,
            serde_json::json!({"command_id":"c","mailbox":"a@b.c","tenant_id":"t","kind":"SUPPORT_UNBLOCK",
                "actor":"bob","actor_role":"SUPPORT","ticket":"T-1","issued_at":5,"reason":null,
                "expires_at":null}),
        ),
        (
            RecordType::AdminCommand,
            serde_json::json!({"command_id":"c","mailbox":"*@b.c","tenant_id":"t","kind":"EXEMPTION_PUT",
                "actor":"bob","actor_role":"ADMIN","ticket":"","issued_at":5,"reason":"newsletter",
                "expires_at":3600005}),
        ),
        (
            RecordType::Exemption,
            serde_json::json!({"tenant_id":"t","pattern":"*@b.c","reason":"newsletter","actor":"bob",
                "actor_role":"ADMIN","command_id":"c","created_at":6,"expires_at":null}),
        ),
        (
            RecordType::MailboxBlock,
            serde_json::json!({"mailbox":"a@b.c","tenant_id":"t","state":"BLOCKED","strike":1,"blocked_at":1,
                "blocked_until":3600001,"incident_id":"i","evidence_message_ids":["m1","m2"],"updated_at":2}),
        ),
        (
            RecordType::ScanRequest,
            serde_json::json!({"request_id":"r","incident_id":"i","tenant_id":"t","device_id":"d","owner_id":"u",
                "mailbox":"a@b.c","requested_at":3}),
        ),
        (
            RecordType::Alert,
            serde_json::json!({"alert_id":"a","incident_id":"i","tenant_id":"t","mailbox":"a@b.c","owner_id":null,
                "strike":6,"state":"PERMANENTLY_BLOCKED","blocked_until":null,"devices_scanned":[],
                "scan_skipped_reason":"OWNER_UNKNOWN","summary":"s","kind":"SIMULATED_BLOCK"}),
        ),
        (
            RecordType::EventLogEntry,
            serde_json::json!({"event_id":"e","incident_id":null,"tenant_id":"t","mailbox":"a@b.c",
                "kind":"COMMAND_REJECTED","at":9,"detail":"d","reason":"TIMED_BLOCK","trip":null}),
        ),
        (
            RecordType::EventLogEntry,
            serde_json::json!({"event_id":"e","incident_id":"i","tenant_id":"t","mailbox":"a@b.c",
                "kind":"SHADOW_TRIP","at":9,"detail":"d","reason":null,
                "trip":{"strike":1,"first_sent_at":1,"blocked_at":3,"block_ms":3600000,"blocked_until":3600009,
                    "evidence_message_ids":["m1","m2","m3"],"exempt":false}}),
        ),
        (
            RecordType::EventLogEntry,
            serde_json::json!({"event_id":"e","incident_id":"i","tenant_id":"t","mailbox":"a@b.c",
                "kind":"TRIP_SIMULATED","at":9,"detail":"d","reason":null,"trip":null}),
        ),
    ];
    for c in [c, confluent()] {
        for (rt, j) in &samples {
            let mut out = Vec::new();
            c.json_to_avro(*rt, j, &mut out).unwrap();
            assert_eq!(c.detect(&out), Some(*rt));
            assert_eq!(&c.avro_to_json(*rt, &out).unwrap(), j, "{rt}");
        }
    }
}

#[test]
fn json_missing_optional_fields_default_to_null() {
    let c = Codec::default();
    let j = serde_json::json!({"message_id":"m","tenant_id":"t","mailbox":"a@b.c","sent_at":1,"verdict":"CLEAN"});
    let mut out = Vec::new();
    c.json_to_avro(RecordType::OutboundVerdict, &j, &mut out)
        .unwrap();
    let back = c.avro_to_json(RecordType::OutboundVerdict, &out).unwrap();
    assert_eq!(back["recipient_count"], serde_json::Value::Null);
    assert_eq!(back["gateway_id"], serde_json::Value::Null);
    assert_eq!(back["sent_at"], 1);
    let j = serde_json::json!({"owner_id":"u","tenant_id":"t"});
    c.json_to_avro(RecordType::OwnerDevices, &j, &mut out)
        .unwrap();
    assert!(c.decode_devices(&out).unwrap().device_ids.is_empty());
}

#[test]
fn json_errors() {
    let c = Codec::default();
    let mut out = Vec::new();
    let base = serde_json::json!({"message_id":"m","tenant_id":"t","mailbox":"a@b.c","sent_at":1,"verdict":"CLEAN"});
    let with = |k: &str, v: serde_json::Value| {
        let mut j = base.clone();
        j[k] = v;
        j
    };
    let rt = RecordType::OutboundVerdict;
    let e = c
        .json_to_avro(rt, &with("verdict", "MAYBE".into()), &mut out)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid enum symbol \"MAYBE\" at field verdict"
    );
    let e = c
        .json_to_avro(rt, &with("sent_at", "yesterday".into()), &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("sent_at: expected integer"), "{e}");
    let e = c
        .json_to_avro(rt, &with("bogus", 1.into()), &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("unknown field \"bogus\""), "{e}");
    let e = c
        .json_to_avro(rt, &with("message_id", "".into()), &mut out)
        .unwrap_err();
    assert_eq!(e.to_string(), "empty message_id");
    assert!(out.is_empty());
    let mut j = base.clone();
    j.as_object_mut().unwrap().remove("sent_at");
    let e = c.json_to_avro(rt, &j, &mut out).unwrap_err();
    assert_eq!(e.to_string(), "json: sent_at: missing field");
    let e = c
        .json_to_avro(rt, &with("recipient_count", 1e12.into()), &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("recipient_count"), "{e}");
    // Avro bytes of another type.
    c.json_to_avro(rt, &base, &mut out).unwrap();
    assert!(c.avro_to_json(RecordType::Alert, &out).is_err());
}

// ---------------------------------------------------------------------------------------------
// Property tests: the fast decoder agrees with apache-avro, and never panics.

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9@._-]{1,40}",
        any::<String>(),
    ]
}

prop_compose! {
    fn arb_verdict_value()(
        message_id in arb_string(),
        tenant_id in arb_string(),
        mailbox in arb_string(),
        sent_at in any::<i64>(),
        verdict in 0u32..3,
        recipient_count in proptest::option::of(any::<i32>()),
        gateway_id in proptest::option::of(arb_string()),
    ) -> Value {
        let symbols = ["CLEAN", "SPAM", "VIRUS"];
        Value::Record(vec![
            ("message_id".into(), Value::String(message_id)),
            ("tenant_id".into(), Value::String(tenant_id)),
            ("mailbox".into(), Value::String(mailbox)),
            ("sent_at".into(), Value::TimestampMillis(sent_at)),
            ("verdict".into(), Value::Enum(verdict, symbols[verdict as usize].into())),
            ("recipient_count".into(), match recipient_count {
                Some(n) => Value::Union(1, Box::new(Value::Int(n))),
                None => Value::Union(0, Box::new(Value::Null)),
            }),
            ("gateway_id".into(), match gateway_id {
                Some(s) => Value::Union(1, Box::new(Value::String(s))),
                None => Value::Union(0, Box::new(Value::Null)),
            }),
        ])
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 10);
    Codec::default().write_header(RecordType::OutboundVerdict, &mut b);
    b.extend_from_slice(body);
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_agrees_with_apache_avro(value in arb_verdict_value()) {
        let body = apache_avro::to_avro_datum(RecordType::OutboundVerdict.schema(), value).unwrap();
        let c = Codec::default();
        let b = frame(&body);
        prop_assert_eq!(c.decode_verdict(&b), c.decode_verdict_generic(&b));
        // Every strict prefix is an error, never a panic.
        for n in 0..b.len() {
            prop_assert!(c.decode_verdict(&b[..n]).is_err());
        }
    }

    #[test]
    fn mutated_bytes_never_panic_and_never_disagree(
        value in arb_verdict_value(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = apache_avro::to_avro_datum(RecordType::OutboundVerdict.schema(), value).unwrap();
        if !body.is_empty() {
            let i = pos.index(body.len());
            body[i] = byte;
        }
        let c = Codec::default();
        let b = frame(&body);
        let fast = c.decode_verdict(&b);
        if let Ok(v) = fast {
            prop_assert_eq!(Ok(v), c.decode_verdict_generic(&b));
        }
    }

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64), raw in proptest::collection::vec(any::<u8>(), 0..24)) {
        let c = Codec::default();
        let b = frame(&body);
        let _ = c.decode_verdict(&b);
        let _ = c.decode_verdict(&raw);
        let _ = detect(&raw);
        for rt in RecordType::ALL {
            let mut b = Vec::new();
            c.write_header(rt, &mut b);
            b.extend_from_slice(&body);
            let _ = c.avro_to_json(rt, &b);
        }
        let _ = c.decode_command(&raw);
        let _ = c.decode_effect(&raw);
    }

    #[test]
    fn verdict_round_trip(
        message_id in "[a-z0-9-]{1,30}",
        tenant_id in "[a-z0-9-]{1,12}",
        mailbox in "[A-Za-z0-9.]{1,20}@[A-Za-z]{1,10}\\.[A-Za-z]{2,4}",
        sent_at in any::<i64>(),
        k in 0usize..3,
    ) {
        let kinds = [VerdictKind::Clean, VerdictKind::Spam, VerdictKind::Virus];
        let v = Verdict { message_id, tenant_id, mailbox, sent_at, verdict: kinds[k] };
        for c in both() {
            let b = enc_verdict(&c, &v);
            let got = c.decode_verdict(&b).unwrap();
            prop_assert_eq!(&got.mailbox, &v.mailbox.to_lowercase());
            prop_assert_eq!(got.sent_at, v.sent_at);
            prop_assert_eq!(got.verdict, v.verdict);
            prop_assert_eq!(&got.message_id, &v.message_id);
        }
    }
}

/// Avro's zig-zag varint of `v`.
fn zigzag(v: i64) -> Vec<u8> {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
    out
}

/// An `OwnerDevices` framed by `c` with the given raw `device_ids` encoding.
fn devices_with_array(c: &Codec, array: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let empty = OwnerDevices {
        device_ids: vec![],
        ..devices()
    };
    c.encode_devices(&empty, &mut out).unwrap();
    assert_eq!(out.pop(), Some(0), "an empty array ends the record");
    out.extend_from_slice(array);
    out
}

#[test]
fn a_negative_block_count_is_walked_not_trusted() {
    for c in both() {
        // The issue's record: count −536 870 912, size 0. It once asked for 30 GB and aborted.
        let bomb = [zigzag(-536_870_912), zigzag(0), vec![0]].concat();
        let e = c
            .decode_devices(&devices_with_array(&c, &bomb))
            .unwrap_err();
        assert!(matches!(e, CodecError::Truncated { .. }), "{e}");
        // A size that does not match its items is rejected, whichever way it is off.
        for size in [1, 3] {
            let block = [zigzag(-1), zigzag(size), vec![2, b'd'], vec![0]].concat();
            let e = c
                .decode_devices(&devices_with_array(&c, &block))
                .unwrap_err();
            assert!(matches!(e, CodecError::InvalidLength { .. }), "{e}");
        }
        // A correct negative-count block decodes.
        let block = [zigzag(-2), zigzag(4), vec![2, b'a', 2, b'b'], vec![0]].concat();
        let d = c.decode_devices(&devices_with_array(&c, &block)).unwrap();
        assert_eq!(d.device_ids, ["a", "b"]);
        // A huge positive count runs out of input after the bytes there are.
        let big = [zigzag(i64::MAX), vec![2, b'a'], vec![0]].concat();
        let e = c.decode_devices(&devices_with_array(&c, &big)).unwrap_err();
        assert!(matches!(e, CodecError::Truncated { .. }), "{e}");
    }
}

#[test]
fn zero_size_array_items_are_capped_per_body_not_per_block() {
    // Found while writing the fuzz target `resolve`, which reproduces it
    // (fuzz/regressions/resolve/zero-size-items-per-body): a writer schema with an array of
    // nulls, and blocks of 1024 nulls, 2 bytes each. The cap was per block, so 4 KB of
    // blocks made apache-avro reserve 117 MB for the values.
    let schema = r#"{"type":"record","name":"OwnerDevices","namespace":"mailguard.v1","fields":[
        {"name":"owner_id","type":"string"},{"name":"tenant_id","type":"string"},
        {"name":"device_ids","type":{"type":"array","items":"string"}},
        {"name":"nulls","type":{"type":"array","items":"null"}}]}"#;
    let fp = schema_fingerprint(schema).unwrap();
    let c = Codec::default();
    c.add_writer_schema(WriterKey::Fingerprint(fp), schema)
        .unwrap();
    let value = |blocks: &[i64]| {
        let mut v = [SINGLE_OBJECT_MAGIC.to_vec(), fp.to_le_bytes().to_vec()].concat();
        v.extend_from_slice(&[2, b'o', 2, b't', 0]);
        for &n in blocks {
            v.extend(zigzag(n));
        }
        v.push(0);
        v
    };
    // Up to the cap, in any number of blocks: read (and the writer-only field skipped).
    let d = c.decode_devices(&value(&[256; 4])).unwrap();
    assert_eq!(d.owner_id, "o");
    // One more, whether in one block or spread over many, is refused before apache-avro runs.
    for blocks in [vec![1025], vec![256, 256, 256, 256, 1], vec![1024; 2000]] {
        let e = c.decode_devices(&value(&blocks)).unwrap_err();
        assert!(matches!(e, CodecError::InvalidLength { .. }), "{e}");
    }
}

/// An event written by a mailguard of before `EventLogEntry.reason` (single-object, its schema's
/// own fingerprint) is read by this one with no registry: `reason` takes its default.
#[test]
fn earlier_versions_of_our_own_schemas_are_read() {
    let v1 = schema::HISTORY[0];
    let writer = apache_avro::Schema::parse_str(v1).unwrap();
    let value = Value::Record(vec![
        ("event_id".into(), Value::String("ev-old".into())),
        ("incident_id".into(), Value::Union(0, Box::new(Value::Null))),
        ("tenant_id".into(), Value::String("acme".into())),
        ("mailbox".into(), Value::String("alice@example.com".into())),
        ("kind".into(), Value::Enum(7, "COMMAND_REJECTED".into())),
        ("at".into(), Value::Long(5)),
        ("detail".into(), Value::String("rejected: old text".into())),
    ]);
    let mut bytes = vec![0xC3, 0x01];
    let fp = canonical::fingerprint(v1).unwrap();
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&writer, value).unwrap());
    assert_ne!(
        fp,
        RecordType::EventLogEntry.fingerprint(),
        "the schema did change"
    );
    let Effect::Event(e) = Codec::default().decode_effect(&bytes).unwrap() else {
        panic!("not an event")
    };
    assert_eq!(e.event_id, "ev-old");
    assert_eq!(e.kind, EventKind::CommandRejected);
    assert_eq!(e.reason, None);
}

/// An alert and a tenant record written before issue 21 (single-object, the schemas of
/// `schemas/history`) are read with no registry: the alert is a `BLOCK`, the tenant `ENFORCE`
/// with the default warning threshold.
#[test]
fn alerts_and_tenants_of_before_kind_and_mode_are_read() {
    let single_object = |json: &str, value: Value| {
        let writer = apache_avro::Schema::parse_str(json).unwrap();
        let fp = canonical::fingerprint(json).unwrap();
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&fp.to_le_bytes());
        bytes.extend(apache_avro::to_avro_datum(&writer, value).unwrap());
        bytes
    };
    let alert_v1 = include_str!("../../schemas/history/Alert.v1.avsc");
    let tenant_v1 = include_str!("../../schemas/history/TenantSettings.v1.avsc");
    assert!(schema::HISTORY.contains(&alert_v1) && schema::HISTORY.contains(&tenant_v1));
    let null = || Value::Union(0, Box::new(Value::Null));
    let alert = single_object(
        alert_v1,
        Value::Record(vec![
            ("alert_id".into(), Value::String("al".into())),
            ("incident_id".into(), Value::String("inc".into())),
            ("tenant_id".into(), Value::String("acme".into())),
            ("mailbox".into(), Value::String("a@b.c".into())),
            ("owner_id".into(), null()),
            ("strike".into(), Value::Int(1)),
            ("state".into(), Value::Enum(0, "BLOCKED".into())),
            ("blocked_until".into(), null()),
            ("devices_scanned".into(), Value::Array(vec![])),
            ("scan_skipped_reason".into(), null()),
            ("summary".into(), Value::String("old".into())),
        ]),
    );
    let Effect::Alert(a) = Codec::default().decode_effect(&alert).unwrap() else {
        panic!("not an alert")
    };
    assert_eq!((a.alert_id.as_str(), a.kind), ("al", AlertKind::Block));
    let tenant = single_object(
        tenant_v1,
        Value::Record(vec![
            ("tenant_id".into(), Value::String("acme".into())),
            ("sync_security_enabled".into(), Value::Boolean(true)),
            ("endpoint_licence".into(), Value::Boolean(false)),
            ("email_licence".into(), Value::Enum(0, "STANDARD".into())),
            ("threshold".into(), null()),
            ("window_ms".into(), null()),
            ("base_block_ms".into(), null()),
            ("permanent_strike".into(), null()),
        ]),
    );
    let t = Codec::default().decode_tenant_record(&tenant).unwrap();
    assert_eq!(t.settings.mode, TenantMode::Enforce);
    assert_eq!(t.settings.overrides.warn_threshold, None);
    assert!(!t.settings.endpoint_licence);
}
