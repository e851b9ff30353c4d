//! Identifier newtypes. Each one checks its input once, when it is parsed, so
//! the rest of the code can trust it ("parse, don't validate").

use std::fmt;
use std::str::FromStr;

/// The URL scheme automerge-repo puts in front of a document id.
pub const URL_PREFIX: &str = "automerge:";

/// Longest peer id or storage id we accept from the network.
pub const MAX_PEER_ID_LEN: usize = 256;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("document id is not valid base58check")]
    NotBase58Check,
    #[error("document id must hold 16 bytes, found {0}")]
    WrongLength(usize),
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("identifier contains a control character")]
    ControlCharacter,
    #[error("peer id is not of the form user:<sub>:<device>")]
    NotAUserPeerId,
}

/// An automerge-repo document id: 16 random bytes, shown as bs58check.
///
/// A case is addressed by the id of its case document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// Builds an id from 16 bytes the caller drew from its own randomness
    /// (this crate draws none).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The `automerge:<id>` URL form.
    pub fn to_url(&self) -> String {
        format!("{URL_PREFIX}{self}")
    }

    /// Accepts the bare id or the `automerge:` URL (with an optional
    /// `#heads` suffix, which is ignored here).
    pub fn parse_url_or_id(s: &str) -> Result<Self, IdError> {
        let bare = s.strip_prefix(URL_PREFIX).unwrap_or(s);
        let bare = bare.split('#').next().unwrap_or(bare);
        bare.parse()
    }
}

impl FromStr for DocumentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        // 16 bytes + 4 checksum bytes is at most 28 base58 characters.
        if s.len() > 32 {
            return Err(IdError::TooLong { max: 32 });
        }
        let bytes = bs58::decode(s)
            .with_check(None)
            .into_vec()
            .map_err(|_| IdError::NotBase58Check)?;
        let arr: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| IdError::WrongLength(bytes.len()))?;
        Ok(Self(arr))
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

fn check_token(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_PEER_ID_LEN {
        return Err(IdError::TooLong {
            max: MAX_PEER_ID_LEN,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_token(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// A peer id as announced in `join`/`peer`. For devices it is
    /// `user:<sub>:<device>`; the server has its own.
    PeerId
);
string_id!(
    /// A peer's storage id: names the persistent storage behind a peer, so
    /// that sync state can be kept across connections.
    StorageId
);
string_id!(
    /// The `sub` of an authenticated user.
    UserId
);
string_id!(
    /// A device name from the token's `device` claim.
    DeviceId
);

impl PeerId {
    /// The peer id a device must announce: `user:<sub>:<device>`.
    pub fn for_device(user: &UserId, device: &DeviceId) -> Self {
        Self(format!("user:{}:{}", user.0, device.0))
    }

    /// Splits `user:<sub>:<device>`. The device part may not contain `:`;
    /// the user part may (issuers use `:` in subjects).
    pub fn user_and_device(&self) -> Result<(UserId, DeviceId), IdError> {
        let rest = self
            .0
            .strip_prefix("user:")
            .ok_or(IdError::NotAUserPeerId)?;
        let (user, device) = rest.rsplit_once(':').ok_or(IdError::NotAUserPeerId)?;
        Ok((UserId::new(user)?, DeviceId::new(device)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_id_round_trips_and_matches_automerge_repo() {
        // An id printed by automerge-repo 2.5 (`repo.create().url`).
        let id: DocumentId = "4NMNnkMhL8jXrdJ9jamS58PAVdXu".parse().expect("valid id");
        assert_eq!(id.to_string(), "4NMNnkMhL8jXrdJ9jamS58PAVdXu");
        assert_eq!(
            DocumentId::parse_url_or_id("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu").expect("url"),
            id
        );
    }

    #[test]
    fn document_id_refuses_bad_checksum_and_length() {
        assert_eq!(
            "4NMNnkMhL8jXrdJ9jamS58PAVdXv".parse::<DocumentId>(),
            Err(IdError::NotBase58Check)
        );
        let short = bs58::encode([1u8; 8]).with_check().into_string();
        assert_eq!(short.parse::<DocumentId>(), Err(IdError::WrongLength(8)));
        assert_eq!("".parse::<DocumentId>(), Err(IdError::Empty));
    }

    #[test]
    fn peer_id_splits_user_and_device() {
        let p = PeerId::for_device(
            &UserId::new("olena").expect("user"),
            &DeviceId::new("phone-1").expect("device"),
        );
        assert_eq!(p.as_str(), "user:olena:phone-1");
        let (u, d) = p.user_and_device().expect("split");
        assert_eq!((u.as_str(), d.as_str()), ("olena", "phone-1"));
        assert!(PeerId::new("server-x")
            .expect("peer")
            .user_and_device()
            .is_err());
        assert!(PeerId::new("a\nb").is_err());
    }
}
