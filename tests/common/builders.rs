//! Builders of test input that need nothing but the library: encoded verdicts and a directory
//! that knows nothing. Included by `tests/common` and by the benches.

use mailguard::codec::Codec;
use mailguard::policy::{Directory, Owner, TenantSettings, Verdict, VerdictKind};

/// A verdict encoded with the default codec (single-object framing, embedded schema).
pub fn verdict_bytes(
    tenant: &str,
    mailbox: &str,
    id: &str,
    sent_at: i64,
    kind: VerdictKind,
) -> Vec<u8> {
    let v = Verdict {
        message_id: id.into(),
        tenant_id: tenant.into(),
        mailbox: mailbox.into(),
        sent_at,
        verdict: kind,
    };
    let mut out = Vec::new();
    Codec::default().encode_verdict(&v, &mut out).unwrap();
    out
}

/// A directory with no owners and no devices, whose tenants have Synchronized Security and an
/// endpoint licence.
pub struct NoDirectory;

impl Directory for NoDirectory {
    fn owner(&self, _: &str) -> Option<Owner> {
        None
    }
    fn devices(&self, _: &str) -> Option<Vec<String>> {
        None
    }
    fn tenant(&self, _: &str) -> TenantSettings {
        TenantSettings {
            mode: Default::default(),
            sync_security_enabled: true,
            endpoint_licence: true,
            overrides: Default::default(),
            shadow: None,
        }
    }
}
