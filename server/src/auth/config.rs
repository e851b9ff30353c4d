//! What the server trusts: one algorithm, one issuer, one audience and a set of
//! verification keys, each named by its `kid`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::error::AuthConfigError;

/// Default tolerance for clock skew between the issuer, the phone and us.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Largest leeway accepted. A bigger one would quietly stretch every token's
/// lifetime, which matters because a revoked or stolen token lives until `exp`.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Longest `kid` accepted, in configuration and in token headers.
pub const MAX_KID_LEN: usize = 256;

/// The one signature algorithm the server accepts. The token's `alg` header
/// must name exactly this algorithm; it never chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenAlgorithm {
    /// Ed25519 (`EdDSA`). The default, and what development keys use.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, for identity providers that only do RSA.
    Rs256,
    /// HMAC-SHA256 with a shared secret. For development and tests only: anyone
    /// who can verify a token can also mint one.
    Hs256Development,
}

impl TokenAlgorithm {
    /// The `alg` header value, as in RFC 7518.
    pub fn jose_name(self) -> &'static str {
        match self {
            TokenAlgorithm::EdDsa => "EdDSA",
            TokenAlgorithm::Rs256 => "RS256",
            TokenAlgorithm::Hs256Development => "HS256",
        }
    }

    pub(crate) fn jsonwebtoken(self) -> Algorithm {
        match self {
            TokenAlgorithm::EdDsa => Algorithm::EdDSA,
            TokenAlgorithm::Rs256 => Algorithm::RS256,
            TokenAlgorithm::Hs256Development => Algorithm::HS256,
        }
    }

    fn family(self) -> AlgorithmFamily {
        match self {
            TokenAlgorithm::EdDsa => AlgorithmFamily::Ed,
            TokenAlgorithm::Rs256 => AlgorithmFamily::Rsa,
            TokenAlgorithm::Hs256Development => AlgorithmFamily::Hmac,
        }
    }
}

impl fmt::Display for TokenAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.jose_name())
    }
}

impl FromStr for TokenAlgorithm {
    type Err = AuthConfigError;

    /// Parses the JOSE name (`EdDSA`, `RS256`, `HS256`), as an operator writes
    /// it in configuration.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(TokenAlgorithm::EdDsa),
            "RS256" => Ok(TokenAlgorithm::Rs256),
            "HS256" => Ok(TokenAlgorithm::Hs256Development),
            _ => Err(AuthConfigError::UnknownAlgorithm),
        }
    }
}

/// One key the server verifies tokens with, named by its `kid`.
///
/// The constructors check the key material once, so a bad key is refused at
/// start-up rather than on the first token.
#[derive(Clone)]
pub struct VerificationKey {
    kid: String,
    algorithm: TokenAlgorithm,
    key: DecodingKey,
}

impl VerificationKey {
    /// An Ed25519 public key in SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn ed25519_pem(kid: impl Into<String>, pem: &[u8]) -> Result<Self, AuthConfigError> {
        let kid = checked_kid(kid.into())?;
        let key = DecodingKey::from_ed_pem(pem).map_err(|_| {
            AuthConfigError::InvalidKey(kid.clone(), "not an Ed25519 public key PEM")
        })?;
        // jsonwebtoken slices the first 32 bytes when it verifies, and panics
        // on a shorter key, so the length is checked here, once.
        let bytes: &[u8; 32] = key
            .try_get_as_bytes()
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| AuthConfigError::InvalidKey(kid.clone(), "not 32 bytes"))?;
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| AuthConfigError::InvalidKey(kid.clone(), "not a curve point"))?;
        if verifying.is_weak() {
            return Err(AuthConfigError::InvalidKey(kid, "weak (small-order) key"));
        }
        Ok(Self {
            kid,
            algorithm: TokenAlgorithm::EdDsa,
            key,
        })
    }

    /// An RSA public key in SPKI (`BEGIN PUBLIC KEY`) or PKCS#1
    /// (`BEGIN RSA PUBLIC KEY`) PEM, of at least [`MIN_RSA_BITS`] bits.
    pub fn rsa_pem(kid: impl Into<String>, pem: &[u8]) -> Result<Self, AuthConfigError> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::traits::PublicKeyParts;

        let kid = checked_kid(kid.into())?;
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|_| AuthConfigError::InvalidKey(kid.clone(), "not an RSA public key PEM"))?;
        let der = key
            .try_get_as_bytes()
            .map_err(|_| AuthConfigError::InvalidKey(kid.clone(), "not an RSA public key"))?;
        let public = rsa::RsaPublicKey::from_pkcs1_der(der)
            .map_err(|_| AuthConfigError::InvalidKey(kid.clone(), "not an RSA public key"))?;
        let bits = public.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(AuthConfigError::RsaKeyTooSmall {
                kid,
                bits,
                min: MIN_RSA_BITS,
            });
        }
        Ok(Self {
            kid,
            algorithm: TokenAlgorithm::Rs256,
            key,
        })
    }

    /// A shared HMAC secret, for [`TokenAlgorithm::Hs256Development`] only.
    pub fn hmac_secret(kid: impl Into<String>, secret: &[u8]) -> Result<Self, AuthConfigError> {
        let kid = checked_kid(kid.into())?;
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(AuthConfigError::SecretTooShort {
                kid,
                min: MIN_HMAC_SECRET_LEN,
            });
        }
        Ok(Self {
            kid,
            algorithm: TokenAlgorithm::Hs256Development,
            key: DecodingKey::from_secret(secret),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key can verify.
    pub fn algorithm(&self) -> TokenAlgorithm {
        self.algorithm
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn checked_kid(kid: String) -> Result<String, AuthConfigError> {
    if kid.is_empty() || kid.len() > MAX_KID_LEN || kid.chars().any(char::is_control) {
        return Err(AuthConfigError::InvalidKeyId);
    }
    Ok(kid)
}

/// Everything the verifier trusts. Built once, checked once.
///
/// Rotation: configure the new key next to the old one (both verify), move
/// the issuer to the new key, and once the old key's last token has expired,
/// build a config without it. A token whose `kid` is not in the set is refused;
/// a token without a `kid` is refused even when only one key is configured, so
/// adding a second key later changes nothing for clients.
#[derive(Clone)]
pub struct AuthConfig {
    algorithm: TokenAlgorithm,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    keys: Vec<VerificationKey>,
}

impl AuthConfig {
    /// Checks that there is at least one key, that `kid`s are unique and that
    /// every key fits `algorithm`. Leeway starts at [`DEFAULT_LEEWAY_SECS`].
    pub fn new(
        algorithm: TokenAlgorithm,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        keys: Vec<VerificationKey>,
    ) -> Result<Self, AuthConfigError> {
        let issuer = issuer.into();
        let audience = audience.into();
        if issuer.is_empty() {
            return Err(AuthConfigError::EmptyIssuer);
        }
        if audience.is_empty() {
            return Err(AuthConfigError::EmptyAudience);
        }
        if keys.is_empty() {
            return Err(AuthConfigError::NoKeys);
        }
        let mut seen = HashSet::new();
        for key in &keys {
            if !seen.insert(key.kid.as_str()) {
                return Err(AuthConfigError::DuplicateKeyId(key.kid.clone()));
            }
            if key.algorithm != algorithm || key.key.family() != algorithm.family() {
                return Err(AuthConfigError::KeyAlgorithmMismatch {
                    kid: key.kid.clone(),
                    algorithm: algorithm.jose_name(),
                });
            }
        }
        Ok(Self {
            algorithm,
            issuer,
            audience,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            keys,
        })
    }

    /// Sets the clock-skew tolerance applied to `exp`, `nbf` and `iat`.
    pub fn with_leeway_secs(mut self, secs: u64) -> Result<Self, AuthConfigError> {
        if secs > MAX_LEEWAY_SECS {
            return Err(AuthConfigError::LeewayTooLarge {
                secs,
                max: MAX_LEEWAY_SECS,
            });
        }
        self.leeway_secs = secs;
        Ok(self)
    }

    pub fn algorithm(&self) -> TokenAlgorithm {
        self.algorithm
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys print through their own redacting Debug.
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("keys", &self.keys)
            .finish()
    }
}
