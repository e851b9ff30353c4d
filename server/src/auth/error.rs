//! Why a request or a token was refused.
//!
//! No variant carries text taken from a token, a header or a key, so an
//! `AuthError` can be logged and printed with `{:?}` or `{}` without leaking a
//! credential. Claim names are `&'static str` for the same reason.

/// Why a token, or the identity it proves, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    // -- finding the token in the request --
    #[error("no bearer token in the request")]
    MissingToken,
    #[error("more than one bearer token in the request")]
    AmbiguousToken,
    #[error("the Authorization header does not use the Bearer scheme")]
    UnsupportedAuthScheme,

    // -- shape of the token --
    #[error("token is longer than {max} bytes")]
    TokenTooLarge { max: usize },
    #[error("token is not a well-formed compact JWS")]
    MalformedToken,

    // -- the JOSE header --
    #[error("token algorithm is not the configured algorithm")]
    AlgorithmMismatch,
    #[error("token header carries `{0}`, which this server never follows or accepts")]
    ForbiddenHeaderParameter(&'static str),
    #[error("token header carries a parameter this server does not accept")]
    UnexpectedHeaderParameter,
    #[error("token `typ` is not JWT")]
    UnsupportedTokenType,
    #[error("token header has no `kid`")]
    MissingKeyId,
    #[error("token `kid` names no configured key")]
    UnknownKeyId,

    // -- the signature --
    #[error("token signature does not verify")]
    BadSignature,

    // -- the claims --
    #[error("token is missing the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token claim `{0}` has the wrong type or an invalid value")]
    InvalidClaim(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error("token was issued in the future (`iat`)")]
    IssuedInFuture,
    #[error("token audience is not this server")]
    WrongAudience,
    #[error("token issuer is not the configured issuer")]
    WrongIssuer,

    // -- after verification --
    #[error("announced peer id does not match the authenticated user and device")]
    PeerIdMismatch,
    #[error("the token's device was revoked")]
    DeviceRevoked,
}

impl AuthError {
    /// The message a client may see. It distinguishes only what a honest
    /// client can act on (log in again, fix its clock, send one token), so the
    /// endpoint is no oracle for which check a forged token failed.
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "authentication required",
            AuthError::AmbiguousToken => "send exactly one bearer token",
            AuthError::UnsupportedAuthScheme => "use the Bearer authentication scheme",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid | AuthError::IssuedInFuture => {
                "token not valid yet; check the device clock"
            }
            AuthError::PeerIdMismatch => "peer id does not match the token",
            AuthError::DeviceRevoked => "this device was revoked; sign in again on a new device",
            AuthError::TokenTooLarge { .. }
            | AuthError::MalformedToken
            | AuthError::AlgorithmMismatch
            | AuthError::ForbiddenHeaderParameter(_)
            | AuthError::UnexpectedHeaderParameter
            | AuthError::UnsupportedTokenType
            | AuthError::MissingKeyId
            | AuthError::UnknownKeyId
            | AuthError::BadSignature
            | AuthError::MissingClaim(_)
            | AuthError::InvalidClaim(_)
            | AuthError::WrongAudience
            | AuthError::WrongIssuer => "invalid token",
        }
    }
}

/// Why an [`AuthConfig`](super::AuthConfig) or one of its keys was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("no verification key is configured")]
    NoKeys,
    #[error("key id is empty, too long or contains control characters")]
    InvalidKeyId,
    #[error("key id `{0}` is configured twice")]
    DuplicateKeyId(String),
    #[error("key `{kid}` does not fit the configured algorithm {algorithm}")]
    KeyAlgorithmMismatch {
        kid: String,
        algorithm: &'static str,
    },
    #[error("key `{0}` could not be read: {1}")]
    InvalidKey(String, &'static str),
    #[error("HMAC secret for key `{kid}` is shorter than {min} bytes")]
    SecretTooShort { kid: String, min: usize },
    #[error("RSA key `{kid}` has {bits} bits; at least {min} are required")]
    RsaKeyTooSmall {
        kid: String,
        bits: usize,
        min: usize,
    },
    #[error("issuer must not be empty")]
    EmptyIssuer,
    #[error("audience must not be empty")]
    EmptyAudience,
    #[error("leeway of {secs} s is more than the allowed {max} s")]
    LeewayTooLarge { secs: u64, max: u64 },
    #[error("unknown algorithm; expected EdDSA, RS256 or HS256")]
    UnknownAlgorithm,
}
