//! The console's sessions: signing in with a bearer token creates a server-side session; the
//! browser holds only its random id in an `HttpOnly`, `SameSite=Strict` cookie, never the token.
//!
//! The store is bounded ([`MAX_SESSIONS`]): when it is full, expired sessions go first, then the
//! one idle longest. A session ends at sign-out, after [`IDLE`] without a request, or
//! [`ABSOLUTE`] after sign-in, whichever comes first. Ids are kept only as SHA-256 hashes and
//! compared through the map, and each session has its own CSRF token that every form carries.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::auth::Principal;
use crate::policy::Millis;

/// Most sessions held at once.
pub const MAX_SESSIONS: usize = 1024;
/// A session unused this long ends.
pub const IDLE: Millis = 30 * 60 * 1000;
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE: Millis = 8 * 60 * 60 * 1000;
/// The cookie's name.
pub const COOKIE: &str = "mailguard_session";

#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    csrf: String,
    created: Millis,
    last_seen: Millis,
}

impl Session {
    fn live(&self, now: Millis) -> bool {
        now - self.last_seen < IDLE && now - self.created < ABSOLUTE
    }
}

/// A signed-in caller, as a request of the console sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// Who, with role and tenant scope: what the API's checks take.
    pub principal: Principal,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
}

/// The console's sessions.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_capacity(MAX_SESSIONS)
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // A failing CSPRNG is not something to carry on from.
    openssl::rand::rand_bytes(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(id: &str) -> [u8; 32] {
    openssl::sha::sha256(id.as_bytes())
}

impl Sessions {
    /// A store of at most `max` sessions.
    pub fn with_capacity(max: usize) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Starts a session for `principal`: its id (the cookie's value) and what requests see.
    pub fn create(&self, principal: Principal, now: Millis) -> (String, SignedIn) {
        let id = random_hex();
        let s = Session {
            principal,
            csrf: random_hex(),
            created: now,
            last_seen: now,
        };
        let signed_in = SignedIn {
            principal: s.principal.clone(),
            csrf: s.csrf.clone(),
        };
        let mut map = self.map.lock().expect("sessions lock");
        if map.len() >= self.max {
            map.retain(|_, s| s.live(now));
        }
        if map.len() >= self.max {
            let oldest = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(key(&id), s);
        (id, signed_in)
    }

    /// The session of cookie value `id`, if it is live (its idle time starts again); an expired
    /// one is removed.
    pub fn get(&self, id: &str, now: Millis) -> Option<SignedIn> {
        let k = key(id);
        let mut map = self.map.lock().expect("sessions lock");
        let s = map.get_mut(&k)?;
        if !s.live(now) {
            map.remove(&k);
            return None;
        }
        s.last_seen = now;
        Some(SignedIn {
            principal: s.principal.clone(),
            csrf: s.csrf.clone(),
        })
    }

    /// Ends the session of cookie value `id` (sign-out).
    pub fn remove(&self, id: &str) {
        self.map.lock().expect("sessions lock").remove(&key(id));
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.map.lock().expect("sessions lock").len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a form's CSRF token is the session's (constant time).
pub fn csrf_ok(session: &SignedIn, given: &str) -> bool {
    given.len() == session.csrf.len()
        && openssl::memcmp::eq(given.as_bytes(), session.csrf.as_bytes())
}

/// The `Set-Cookie` value of a new session: `Secure` when the console is reached over TLS.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ABSOLUTE / 1000
    )
}

/// The `Set-Cookie` value that removes it (sign-out).
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// The session id in a `Cookie` header value.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiRole;

    fn who(name: &str) -> Principal {
        Principal {
            name: name.into(),
            role: ApiRole::Viewer,
            tenant: Some("acme".into()),
        }
    }

    #[test]
    fn a_session_is_found_by_its_id_until_it_idles_out_or_reaches_its_age() {
        let s = Sessions::default();
        let (id, first) = s.create(who("v"), 0);
        assert_eq!(id.len(), 64);
        assert_eq!(s.get(&id, IDLE - 1).as_ref(), Some(&first));
        // Used within the idle time, it lives on past it...
        assert!(s.get(&id, 2 * IDLE - 2).is_some());
        assert!(s.get("not-an-id", 1).is_none());
        // ...but never past its absolute age.
        let mut t = 2 * IDLE - 2;
        while t + IDLE / 2 < ABSOLUTE {
            t += IDLE / 2;
            assert!(s.get(&id, t).is_some(), "at {t}");
        }
        assert!(s.get(&id, ABSOLUTE).is_none());
        assert!(s.is_empty(), "an expired session is removed");
        let (id, _) = s.create(who("v"), 0);
        assert!(s.get(&id, IDLE).is_none(), "idle for IDLE: ended");
    }

    #[test]
    fn sign_out_ends_it_and_ids_and_csrf_tokens_differ() {
        let s = Sessions::default();
        let (a, sa) = s.create(who("a"), 0);
        let (b, sb) = s.create(who("b"), 0);
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert!(csrf_ok(&sa, &sa.csrf) && !csrf_ok(&sa, &sb.csrf) && !csrf_ok(&sa, ""));
        s.remove(&a);
        assert!(s.get(&a, 1).is_none());
        assert_eq!(s.get(&b, 1).unwrap().principal.name, "b");
    }

    #[test]
    fn the_store_is_bounded_and_drops_the_longest_idle_first() {
        let s = Sessions::with_capacity(3);
        let ids: Vec<String> = (0..3)
            .map(|i| s.create(who(&format!("{i}")), i).0)
            .collect();
        // 0 is used again, so 1 is now the longest idle.
        assert!(s.get(&ids[0], 10).is_some());
        let (d, _) = s.create(who("d"), 11);
        assert_eq!(s.len(), 3);
        assert!(s.get(&ids[1], 12).is_none());
        assert!(s.get(&ids[0], 12).is_some() && s.get(&ids[2], 12).is_some());
        assert!(s.get(&d, 12).is_some());
    }

    #[test]
    fn the_cookie_holds_only_the_id_with_its_attributes() {
        let c = set_cookie("abc", false);
        assert!(c.starts_with("mailguard_session=abc; Path=/ui; HttpOnly; SameSite=Strict"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(cookie_value("a=1; mailguard_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("mailguard_session="), None);
        assert_eq!(cookie_value("other=1"), None);
    }
}
