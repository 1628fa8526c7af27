//! The policy core's view of the directory and tenant tables ([`crate::policy::Directory`]),
//! backed by the local table cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tracing::warn;

use crate::codec::Codec;
use crate::policy::{Directory, Exemption, Owner, TenantSettings};
use crate::store::{Store, Table};

/// Tenant settings in memory: there are few tenants and every offending verdict asks for its
/// tenant's policy, so these are not worth a RocksDB read each time.
pub type TenantMap = Arc<RwLock<HashMap<String, TenantSettings>>>;

/// The exemptions table in memory (`mailguard.exemptions`, by record key `tenant/pattern`), with
/// a count per tenant. At most `limits.max_exemptions_per_tenant` per tenant: the pipeline rejects
/// a command over the bound, and [`Exemptions::upsert`] refuses a record over it.
#[derive(Debug, Default)]
pub struct Exemptions {
    by_key: HashMap<String, Exemption>,
    per_tenant: HashMap<String, usize>,
}

/// A table record that would put its tenant over `limits.max_exemptions_per_tenant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBound;

impl Exemptions {
    /// Stores `e` under its record key; a new key of a tenant holding `max` already is refused.
    pub fn upsert(&mut self, key: &str, e: Exemption, max: usize) -> Result<(), OverBound> {
        if !self.by_key.contains_key(key) {
            let n = self.per_tenant.entry(e.tenant_id.clone()).or_default();
            if *n >= max {
                return Err(OverBound);
            }
            *n += 1;
        }
        self.by_key.insert(key.to_owned(), e);
        Ok(())
    }

    /// Removes the record key's exemption (a tombstone).
    pub fn remove(&mut self, key: &str) {
        let Some(e) = self.by_key.remove(key) else {
            return;
        };
        if let Some(n) = self.per_tenant.get_mut(&e.tenant_id) {
            *n -= 1;
            if *n == 0 {
                self.per_tenant.remove(&e.tenant_id);
            }
        }
    }

    /// The exemption of `tenant_id` under `pattern`.
    pub fn get(&self, tenant_id: &str, pattern: &str) -> Option<&Exemption> {
        self.by_key.get(&Exemption::table_key(tenant_id, pattern))
    }

    /// How many the tenant holds.
    pub fn count(&self, tenant_id: &str) -> usize {
        self.per_tenant.get(tenant_id).copied().unwrap_or(0)
    }
}

/// The exemptions table, shared by the loader (writer) and the processor (reader).
pub type ExemptionMap = Arc<RwLock<Exemptions>>;

/// Directory lookups over the local table cache.
#[derive(Clone)]
pub struct TableDirectory {
    store: Store,
    codec: Codec,
    tenants: TenantMap,
    defaults: TenantSettings,
    exemptions: ExemptionMap,
    max_exemptions: usize,
}

impl TableDirectory {
    /// A directory over `store`, with `defaults` for tenants the table does not know.
    pub fn new(store: Store, codec: Codec, tenants: TenantMap, defaults: TenantSettings) -> Self {
        TableDirectory {
            store,
            codec,
            tenants,
            defaults,
            exemptions: ExemptionMap::default(),
            max_exemptions: usize::MAX,
        }
    }

    /// The same directory, answering exemptions from `exemptions` with the bound `max` per
    /// tenant.
    pub fn with_exemptions(self, exemptions: ExemptionMap, max: usize) -> Self {
        TableDirectory {
            exemptions,
            max_exemptions: max,
            ..self
        }
    }
}

impl Directory for TableDirectory {
    fn owner(&self, mailbox: &str) -> Option<Owner> {
        let bytes = match self.store.get_table(Table::Owners, mailbox) {
            Ok(b) => b?,
            Err(e) => {
                // Treated as unknown: the block still happens; the alert says OWNER_UNKNOWN.
                warn!(error = %e, "owner lookup failed");
                return None;
            }
        };
        self.codec.decode_owner(&bytes).ok().map(|(_, owner)| owner)
    }

    fn devices(&self, owner_id: &str) -> Option<Vec<String>> {
        let bytes = match self.store.get_table(Table::Devices, owner_id) {
            Ok(b) => b?,
            Err(e) => {
                warn!(error = %e, "devices lookup failed");
                return None;
            }
        };
        self.codec.decode_devices(&bytes).ok().map(|d| d.device_ids)
    }

    fn tenant(&self, tenant_id: &str) -> TenantSettings {
        self.tenants
            .read()
            .expect("tenant map lock not poisoned")
            .get(tenant_id)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    fn exemption(&self, tenant_id: &str, pattern: &str) -> Option<Exemption> {
        self.exemptions
            .read()
            .expect("exemption map lock not poisoned")
            .get(tenant_id, pattern)
            .cloned()
    }

    fn exemptions_full(&self, tenant_id: &str) -> bool {
        self.exemptions
            .read()
            .expect("exemption map lock not poisoned")
            .count(tenant_id)
            >= self.max_exemptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ActorRole;

    fn ex(tenant: &str, pattern: &str) -> Exemption {
        Exemption {
            tenant_id: tenant.into(),
            pattern: pattern.into(),
            reason: "r".into(),
            actor: "a".into(),
            actor_role: ActorRole::Admin,
            command_id: "c".into(),
            created_at: 0,
            expires_at: None,
        }
    }

    #[test]
    fn the_exemption_table_is_bounded_per_tenant_and_counts_each_key_once() {
        let mut m = Exemptions::default();
        m.upsert("t/a@x", ex("t", "a@x"), 2).unwrap();
        m.upsert("t/a@x", ex("t", "a@x"), 2).unwrap();
        assert_eq!(m.count("t"), 1, "a redelivered upsert counts once");
        m.upsert("t/*@x", ex("t", "*@x"), 2).unwrap();
        assert_eq!(m.upsert("t/b@x", ex("t", "b@x"), 2), Err(OverBound));
        m.upsert("u/b@x", ex("u", "b@x"), 2).unwrap();
        assert_eq!(m.get("t", "*@x").map(|e| e.pattern.as_str()), Some("*@x"));
        assert_eq!(m.get("u", "*@x"), None);
        m.remove("t/a@x");
        m.remove("t/a@x");
        assert_eq!(m.count("t"), 1);
        m.upsert("t/b@x", ex("t", "b@x"), 2).unwrap();
        m.remove("t/b@x");
        m.remove("t/*@x");
        assert_eq!(m.count("t"), 0);
        assert!(!m.per_tenant.contains_key("t"), "no empty entries are kept");
    }
}
