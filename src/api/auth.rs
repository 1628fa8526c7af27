//! Who is calling and what they may do: bearer tokens stored as SHA-256 hashes, each mapped to a
//! principal with a role and a tenant scope.
//!
//! The token itself never enters the configuration, a log line or an error message: the
//! configuration holds its hash, the request's token is hashed and compared in constant time
//! against every configured hash (so the time taken does not reveal which prefix matched).

use crate::config::{ApiRole, ApiToken};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name, as configured; it becomes `AdminCommand.actor`.
    pub name: String,
    /// Role.
    pub role: ApiRole,
    /// The tenant the caller is confined to; `None` = every tenant (SUPPORT only).
    pub tenant: Option<String>,
}

impl Principal {
    /// Whether the caller may see or act on `tenant`.
    pub fn may_access(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// Whether the role is at least `needed` (VIEWER < ADMIN < SUPPORT).
    pub fn has_role(&self, needed: ApiRole) -> bool {
        rank(self.role) >= rank(needed)
    }
}

fn rank(r: ApiRole) -> u8 {
    match r {
        ApiRole::Viewer => 0,
        ApiRole::Admin => 1,
        ApiRole::Support => 2,
    }
}

/// Why a request is not authenticated (always answered 401, without saying which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that matches no configured hash.
    Unknown,
}

struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

/// The configured callers.
pub struct Authenticator {
    entries: Vec<Entry>,
}

/// Lower-case hex SHA-256 of a token: what `[[api.tokens]] sha256` holds.
pub fn hash_token(token: &str) -> String {
    openssl::sha::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

impl Authenticator {
    /// From the validated configuration (hashes are 64 hex digits).
    pub fn new(tokens: &[ApiToken]) -> Self {
        let entries = tokens
            .iter()
            .filter_map(|t| {
                Some(Entry {
                    hash: unhex(&t.sha256)?,
                    principal: Principal {
                        name: t.principal.clone(),
                        role: t.role,
                        tenant: t.tenant.clone(),
                    },
                })
            })
            .collect();
        Authenticator { entries }
    }

    /// The caller of a request with this `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let hash = openssl::sha::sha256(token.as_bytes());
        // Every entry is compared (no early exit), each comparison in constant time.
        let mut found: Option<&Principal> = None;
        for e in &self.entries {
            if openssl::memcmp::eq(&hash, &e.hash) {
                found = Some(&e.principal);
            }
        }
        found.cloned().ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &str, role: ApiRole, tenant: Option<&str>) -> ApiToken {
        ApiToken {
            sha256: hash_token(secret),
            principal: format!("p-{secret}"),
            role,
            tenant: tenant.map(str::to_owned),
        }
    }

    #[test]
    fn hash_is_sha256_hex() {
        // sha256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_tokens_map_to_principals() {
        let auth = Authenticator::new(&[
            token("v1", ApiRole::Viewer, Some("acme")),
            token("s1", ApiRole::Support, None),
        ]);
        let p = auth.authenticate(Some("Bearer v1")).unwrap();
        assert_eq!(p.name, "p-v1");
        assert!(p.may_access("acme") && !p.may_access("globex"));
        assert!(p.has_role(ApiRole::Viewer) && !p.has_role(ApiRole::Admin));
        let s = auth.authenticate(Some("bearer  s1 ")).unwrap();
        assert!(s.may_access("anything") && s.has_role(ApiRole::Support));
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("Basic djE=")),
            Err(AuthError::Missing)
        );
        assert_eq!(auth.authenticate(Some("Bearer ")), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("Bearer v2")),
            Err(AuthError::Unknown)
        );
    }
}
