//! Crafts tokens against one server's development key, each wrong in
//! exactly one way where a valid signature is needed.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use casesync_tests::TestServer;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub fn unix_now() -> i64 {
    casesync_tests::now_ms() / 1000
}

/// Crafts tokens against one server's development key.
pub struct Forge {
    pub key: SigningKey,
    pub kid: String,
}

impl Forge {
    pub fn new(server: &TestServer, minted: &str) -> Self {
        let pem = std::fs::read_to_string(server.data_dir().join("keys/dev-ed25519.pem")).unwrap();
        let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
        let kid = jsonwebtoken::decode_header(minted).unwrap().kid.unwrap();
        Self { key, kid }
    }

    /// Claims casesync accepts, for `olena` on `phone`.
    pub fn claims(&self) -> Value {
        self.claims_for("olena", "phone")
    }

    /// Claims casesync accepts, for `sub` on `device`, as a relative.
    pub fn claims_for(&self, sub: &str, device: &str) -> Value {
        let now = unix_now();
        json!({
            "sub": sub,
            "device": device,
            "role": "relative",
            "iat": now,
            "exp": now + 3600,
            "aud": "casesync",
            "iss": "casesync-dev",
        })
    }

    pub fn sign_with(&self, key: &SigningKey, claims: &Value) -> String {
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.key, claims)
    }

    /// Signs good claims with the server's key under a header that
    /// `adjust` changed.
    pub fn sign_header(&self, adjust: impl FnOnce(&mut Header)) -> String {
        let pem = self.key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        adjust(&mut header);
        jsonwebtoken::encode(
            &header,
            &self.claims(),
            &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    pub fn without(&self, key: &str) -> String {
        let mut claims = self.claims();
        claims.as_object_mut().unwrap().remove(key);
        self.sign(&claims)
    }

    pub fn with(&self, key: &str, value: Value) -> String {
        let mut claims = self.claims();
        claims[key] = value;
        self.sign(&claims)
    }
}

/// A compact JWS with the given header and claims, unsigned.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}
