//! The claims casesync reads from a token, and the identity they prove.

use serde::{Deserialize, Serialize};
use sync_core::ids::{DeviceId, PeerId, UserId};

/// What a user may do. Comes from the token's `role` claim; absent means
/// [`Role::Relative`]. An unknown value refuses the token rather than falling
/// back, so a typo at the issuer never silently grants or drops a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A member of specific cases.
    #[default]
    Relative,
    /// Sees and reviews the cases assigned to them.
    Coordinator,
    /// Sees everything; every access is audited.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Relative => "relative",
            Role::Coordinator => "coordinator",
            Role::Admin => "admin",
        }
    }
}

/// The `aud` claim: RFC 7519 allows one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

/// The JWT claims casesync issues and reads. This is a wire type: the field
/// names are the claim names. Unknown claims are ignored, so identity
/// providers may add their own.
///
/// Required: `sub`, `device`, `exp`, `aud`, `iss`. Times are integer seconds
/// since the Unix epoch; a string or fractional time refuses the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user (`UserId`).
    pub sub: String,
    /// The device (`DeviceId`). May not contain `:`, so that
    /// `user:<sub>:<device>` names exactly one (user, device) pair.
    pub device: String,
    #[serde(default)]
    pub role: Role,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    pub aud: Audience,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Who a verified token says the caller is.
///
/// Only [`Verifier::verify`](super::Verifier::verify) builds one, so holding an
/// `Identity` means a token was checked. `peer_id` is always
/// `user:<user>:<device>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    user: UserId,
    device: DeviceId,
    peer_id: PeerId,
    role: Role,
    expires_at: i64,
}

impl Identity {
    pub(crate) fn new(user: UserId, device: DeviceId, role: Role, expires_at: i64) -> Self {
        let peer_id = PeerId::for_device(&user, &device);
        Self {
            user,
            device,
            peer_id,
            role,
            expires_at,
        }
    }

    pub fn user(&self) -> &UserId {
        &self.user
    }

    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The peer id this device must announce: `user:<sub>:<device>`.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The token's `exp`, in seconds since the Unix epoch. A live socket must
    /// be closed once this passes.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}
