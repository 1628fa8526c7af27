//! The one place a mailbox address is normalised.
//!
//! A mailbox is its address lower-cased with Unicode's rules (ASCII's when the address is ASCII,
//! the common case, without a second pass). The codec normalises the `mailbox` of every record it
//! decodes, the processor and the tables accept only keys that are normalised already, and the CLI
//! keys what it produces with [`Mailbox::new`]: so one mailbox has one spelling everywhere, and so
//! one partition and one state.

use std::fmt;
use std::ops::Deref;

/// A normalised mailbox address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox(String);

/// Why a record key is not usable as a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("empty mailbox key")]
    Empty,
    /// The key is not normalised. It decided the record's partition, and another spelling of the
    /// same mailbox lands on another partition, with another state: such a record is not counted.
    #[error(
        "key `{key}` is not a normalised mailbox: producers must key by `{normalised}` (lower-cased), \
         or the same mailbox lands on two partitions"
    )]
    NotNormalised {
        /// The key as it came.
        key: String,
        /// What it must be.
        normalised: String,
    },
}

impl Mailbox {
    /// Normalises any spelling of an address.
    pub fn new(raw: &str) -> Mailbox {
        Mailbox(if raw.is_ascii() {
            raw.to_ascii_lowercase()
        } else {
            raw.to_lowercase()
        })
    }

    /// A record key, which must be normalised already (see [`KeyError::NotNormalised`]).
    pub fn from_key(key: &str) -> Result<Mailbox, KeyError> {
        MailboxKey::new(key).map(|k| Mailbox(k.0.to_string()))
    }

    /// Whether `raw` (a record body's `mailbox`, any spelling) names this mailbox.
    pub fn matches(&self, raw: &str) -> bool {
        MailboxKey(&self.0).matches(raw)
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalised address, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A record key checked to be a normalised mailbox, borrowed: the processor's hot path checks
/// every key without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxKey<'a>(&'a str);

impl<'a> MailboxKey<'a> {
    /// Checks `key` (see [`KeyError`]). ASCII keys, the common case, allocate nothing.
    pub fn new(key: &'a str) -> Result<MailboxKey<'a>, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        let normalised = if key.is_ascii() {
            !key.bytes().any(|b| b.is_ascii_uppercase())
        } else {
            key.to_lowercase() == key
        };
        if normalised {
            Ok(MailboxKey(key))
        } else {
            Err(KeyError::NotNormalised {
                key: key.to_string(),
                normalised: Mailbox::new(key).0,
            })
        }
    }

    /// Whether `raw` (a record body's `mailbox`, any spelling) names this mailbox. ASCII
    /// addresses allocate nothing.
    pub fn matches(&self, raw: &str) -> bool {
        if raw.is_ascii() {
            self.0.eq_ignore_ascii_case(raw)
        } else {
            Mailbox::new(raw).0 == self.0
        }
    }

    /// The key.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl Deref for Mailbox {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Mailbox {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_ascii_and_unicode() {
        assert_eq!(
            Mailbox::new("Mixed-Case@Example.COM").as_str(),
            "mixed-case@example.com"
        );
        assert_eq!(Mailbox::new("ÖDÖN@Bücher.DE").as_str(), "ödön@bücher.de");
    }

    #[test]
    fn a_key_must_be_normalised_already() {
        assert_eq!(Mailbox::from_key("a@b.c").unwrap(), Mailbox::new("a@b.c"));
        assert_eq!(Mailbox::from_key(""), Err(KeyError::Empty));
        let e = Mailbox::from_key("Mixed-Case@b.c").unwrap_err();
        assert_eq!(
            e,
            KeyError::NotNormalised {
                key: "Mixed-Case@b.c".into(),
                normalised: "mixed-case@b.c".into()
            }
        );
        assert!(e.to_string().contains("`mixed-case@b.c`"), "{e}");
        assert!(Mailbox::from_key("Ödön@b.c").is_err());
    }

    #[test]
    fn a_body_matches_in_any_spelling() {
        let m = Mailbox::from_key("ödön@b.c").unwrap();
        assert!(m.matches("ödön@b.c"));
        assert!(m.matches("ÖDÖN@B.C"));
        assert!(!m.matches("odon@b.c"));
        let m = Mailbox::from_key("a@b.c").unwrap();
        assert!(m.matches("A@B.C"));
        assert!(!m.matches("a@b.cc"));
    }

    proptest! {
        /// Normalising is idempotent, a normalised key is accepted as it is, and every spelling
        /// that normalises to it matches it.
        #[test]
        fn normalising_is_idempotent(raw in "\\PC{1,24}") {
            let m = Mailbox::new(&raw);
            let again = Mailbox::new(m.as_str());
            prop_assert_eq!(again.as_str(), m.as_str());
            if !m.is_empty() {
                prop_assert_eq!(Mailbox::from_key(m.as_str()).unwrap(), m.clone());
            }
            prop_assert!(m.matches(&raw));
        }
    }
}
