//! Token verification.
//!
//! The checks run in this order, and each step trusts only what the previous
//! steps established:
//!
//! 1. size cap and compact-JWS shape (three base64url segments);
//! 2. our own strict parse of the JOSE header: `alg` must be the configured
//!    algorithm, `kid` must name a configured key, and `jku`, `x5u`, `jwk`,
//!    `x5c` and `crit` refuse the token (we never fetch or accept keys named by
//!    the token itself);
//! 3. jsonwebtoken checks the signature with that one key, and its own `aud`,
//!    `iss` and algorithm checks run as a second line of defence;
//! 4. our strict claim checks against the caller's `now`: presence, JSON types
//!    (integer times only), `exp`/`nbf`/`iat` with leeway, `aud`, `iss`, and
//!    valid `sub` and `device` identifiers.
//!
//! jsonwebtoken's own `exp`/`nbf` checks are off because they read the system
//! clock; ours take `now` as a parameter so tests (and the socket expiry timer)
//! decide the time.

use std::collections::{HashMap, HashSet};
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use sync_core::ids::{DeviceId, PeerId, UserId};

use super::claims::{Claims, Identity};
use super::config::{AuthConfig, MAX_KID_LEN};
use super::error::AuthError;

/// Longest token accepted, in bytes. Real access tokens are well under 2 KiB;
/// the cap bounds the work a stranger can make us do before the signature.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Header parameters that name or carry a key. Following them would let the
/// token choose its own verification key, so a token carrying any of them is
/// refused outright. `crit` is refused because we implement no extension.
const FORBIDDEN_HEADER_PARAMS: [&str; 5] = ["jku", "x5u", "jwk", "x5c", "crit"];

/// Header parameters we accept. `x5t` and `x5t#S256` are thumbprints some
/// identity providers add next to `kid`; they are hints we ignore.
const ALLOWED_HEADER_PARAMS: [&str; 5] = ["alg", "kid", "typ", "x5t", "x5t#S256"];

/// Verifies tokens against one [`AuthConfig`]. Cheap to share behind an `Arc`;
/// it holds no lock and no clock.
#[derive(Clone)]
pub struct Verifier {
    config: AuthConfig,
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl Verifier {
    pub fn new(config: AuthConfig) -> Self {
        if config.algorithm() == super::TokenAlgorithm::Hs256Development {
            tracing::warn!("token verification uses HS256 with a shared secret; development only");
        }
        let keys = config
            .keys()
            .iter()
            .map(|k| (k.kid().to_owned(), k.decoding_key().clone()))
            .collect();

        let mut validation = Validation::new(config.algorithm().jsonwebtoken());
        // Presence and types of all claims are checked by us, after the
        // signature: jsonwebtoken reports a claim of the wrong type as
        // "missing", which would hide a malformed `exp` or `aud`.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.validate_aud = true;
        validation.set_audience(&[config.audience()]);
        validation.set_issuer(&[config.issuer()]);

        Self {
            config,
            keys,
            validation,
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Verifies `token` at time `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        let header_b64 = check_shape(token)?;
        let key = self.check_header(header_b64)?;

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(map_jsonwebtoken_error)?;
        let claims = self.check_claims(data.claims, now)?;

        let user = UserId::new(claims.sub).map_err(|_| AuthError::InvalidClaim("sub"))?;
        let device = DeviceId::new(claims.device).map_err(|_| AuthError::InvalidClaim("device"))?;
        let identity = Identity::new(user, device, claims.role, claims.exp);
        // The peer id must be one a client can announce (PeerId::for_device
        // skips the length check), and must split back into exactly this user
        // and device, or two identities could announce the same peer id.
        if PeerId::new(identity.peer_id().as_str()).is_err() {
            return Err(AuthError::InvalidClaim("sub"));
        }
        match identity.peer_id().user_and_device() {
            Ok((u, d)) if &u == identity.user() && &d == identity.device() => Ok(identity),
            _ => Err(AuthError::InvalidClaim("device")),
        }
    }

    /// Returns the configured key the header's `kid` names, after every
    /// header check has passed.
    fn check_header(&self, header_b64: &str) -> Result<&DecodingKey, AuthError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| AuthError::MalformedToken)?;
        let header: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|_| AuthError::MalformedToken)?;

        match header.get("alg") {
            Some(Value::String(alg)) if alg == self.config.algorithm().jose_name() => {}
            // Includes "none" and every algorithm of another family.
            Some(Value::String(_)) => return Err(AuthError::AlgorithmMismatch),
            _ => return Err(AuthError::MalformedToken),
        }
        for name in header.keys() {
            if let Some(forbidden) = FORBIDDEN_HEADER_PARAMS.iter().find(|f| **f == name) {
                return Err(AuthError::ForbiddenHeaderParameter(forbidden));
            }
            if !ALLOWED_HEADER_PARAMS.contains(&name.as_str()) {
                return Err(AuthError::UnexpectedHeaderParameter);
            }
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(typ)) if is_jwt_type(typ) => {}
            Some(_) => return Err(AuthError::UnsupportedTokenType),
        }
        match header.get("kid") {
            None => Err(AuthError::MissingKeyId),
            Some(Value::String(kid)) if kid.len() <= MAX_KID_LEN => {
                self.keys.get(kid.as_str()).ok_or(AuthError::UnknownKeyId)
            }
            Some(_) => Err(AuthError::UnknownKeyId),
        }
    }

    /// Checks the claims of a token whose signature has verified.
    fn check_claims(&self, claims: Map<String, Value>, now: i64) -> Result<Claims, AuthError> {
        for name in ["sub", "device", "exp", "aud", "iss"] {
            if !claims.contains_key(name) {
                return Err(AuthError::MissingClaim(name));
            }
        }
        let exp = integer_time(&claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
        let nbf = integer_time(&claims, "nbf")?;
        let iat = integer_time(&claims, "iat")?;
        for name in ["sub", "device", "iss"] {
            if !matches!(claims.get(name), Some(Value::String(_))) {
                return Err(AuthError::InvalidClaim(name));
            }
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(_)) => true,
            Some(Value::Array(all)) => all.iter().all(Value::is_string),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::InvalidClaim("aud"));
        }
        if let Some(role) = claims.get("role") {
            if !matches!(role.as_str(), Some("relative" | "coordinator" | "admin")) {
                return Err(AuthError::InvalidClaim("role"));
            }
        }
        if let Some(jti) = claims.get("jti") {
            if !jti.is_string() {
                return Err(AuthError::InvalidClaim("jti"));
            }
        }

        let leeway = i64::try_from(self.config.leeway_secs()).unwrap_or(i64::MAX);
        // RFC 7519: the token is valid only *before* exp.
        if now >= exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(AuthError::IssuedInFuture);
        }

        let claims: Claims = serde_json::from_value(Value::Object(claims))
            .map_err(|_| AuthError::InvalidClaim("claims"))?;
        if !claims.aud.contains(self.config.audience()) {
            return Err(AuthError::WrongAudience);
        }
        if claims.iss != self.config.issuer() {
            return Err(AuthError::WrongIssuer);
        }
        Ok(claims)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's keys print redacted; the decoding-key table is a copy.
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Refuses anything that is not three base64url segments of bounded length,
/// and returns the header segment.
fn check_shape(token: &str) -> Result<&str, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TokenTooLarge { max: MAX_TOKEN_LEN });
    }
    let well_formed_chars = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !well_formed_chars {
        return Err(AuthError::MalformedToken);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(_signature), None)
            if !header.is_empty() && !payload.is_empty() =>
        {
            Ok(header)
        }
        _ => Err(AuthError::MalformedToken),
    }
}

/// `JWT` or `at+jwt` (RFC 9068), with or without `application/`, any case.
fn is_jwt_type(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    matches!(typ, "jwt" | "at+jwt")
}

/// Reads a NumericDate claim. Absent is `None`; anything but a JSON integer
/// (a string, a fraction, `null`) refuses the token.
fn integer_time(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(AuthError::InvalidClaim(name)),
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

fn map_jsonwebtoken_error(err: jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmMismatch,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(name) => AuthError::MissingClaim(match name.as_str() {
            "sub" => "sub",
            "iss" => "iss",
            "aud" => "aud",
            "exp" => "exp",
            "nbf" => "nbf",
            _ => "claim",
        }),
        ErrorKind::InvalidClaimFormat(_) => AuthError::InvalidClaim("claims"),
        // Base64, JSON, UTF-8, shape, and key or provider failures. Key
        // problems were ruled out when the config was built, so what is left
        // is a token we cannot parse.
        _ => AuthError::MalformedToken,
    }
}
