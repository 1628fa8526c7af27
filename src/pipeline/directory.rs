//! The policy core's view of the directory and tenant tables ([`crate::policy::Directory`]),
//! backed by the local table cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tracing::warn;

use crate::codec::Codec;
use crate::policy::{Directory, Owner, TenantSettings};
use crate::store::{Store, Table};

/// Tenant settings in memory: there are few tenants and every offending verdict asks for its
/// tenant's policy, so these are not worth a RocksDB read each time.
pub type TenantMap = Arc<RwLock<HashMap<String, TenantSettings>>>;

/// Directory lookups over the local table cache.
#[derive(Clone)]
pub struct TableDirectory {
    store: Store,
    codec: Codec,
    tenants: TenantMap,
    defaults: TenantSettings,
}

impl TableDirectory {
    /// A directory over `store`, with `defaults` for tenants the table does not know.
    pub fn new(store: Store, codec: Codec, tenants: TenantMap, defaults: TenantSettings) -> Self {
        TableDirectory {
            store,
            codec,
            tenants,
            defaults,
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
}
