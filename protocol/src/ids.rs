//! Identifiers that end up inside NATS subjects.
//!
//! Host and workload ids are spliced into subjects such as `entente.telemetry.<host>.<workload>`,
//! so a `.`, a wildcard (`*`, `>`) or whitespace in one would silently change which messages a
//! subscriber sees. They are therefore validated once, when they are made or decoded, and the rest
//! of the code can splice them without a second thought: 1 to 64 ASCII letters, digits, `-` or `_`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong { len: usize },
    #[error("id {id:?} contains {ch:?}; only ASCII letters, digits, '-' and '_' are allowed")]
    BadCharacter { id: String, ch: char },
}

/// Checks that `s` is safe as one token of a NATS subject.
pub fn validate_token(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: s.len() });
    }
    if let Some(ch) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(IdError::BadCharacter { id: s.chars().take(MAX_ID_LEN).collect(), ch });
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Shared, not copied, when cloned: an id is cloned into every message that names it
        /// (a forecast of 32 workloads names them in 992 interference entries).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_token(&s)?;
                Ok($name(s.into()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// On the wire an id is its string.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id!(
    /// A host (one agent) in the cluster.
    HostId
);
token_id!(
    /// A workload on a host; unique within its host.
    WorkloadId
);
token_id!(
    /// A tenant: the owner that cluster-wide quotas apply to.
    TenantId
);

/// A negotiation round, numbered from 1 by the arbiter cluster; never reused.
pub type RoundId = u64;

/// A replica of the arbiter cluster (a Raft node id).
pub type NodeId = u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_subject_safe_tokens() {
        for ok in ["web-1", "redis_cache", "A", &"x".repeat(MAX_ID_LEN)] {
            assert!(HostId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_would_change_a_subject() {
        assert_eq!(HostId::new(""), Err(IdError::Empty));
        assert!(matches!(HostId::new("x".repeat(MAX_ID_LEN + 1)), Err(IdError::TooLong { .. })));
        for bad in ["a.b", "*", ">", "a b", "tab\t", "é", "a/b"] {
            assert!(matches!(WorkloadId::new(bad), Err(IdError::BadCharacter { .. })), "{bad}");
        }
    }
}
