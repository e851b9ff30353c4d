//! Configured keys (issue 4, "Tokens and keys"): the `[auth]` section of
//! the config file sets the algorithm, issuer, audience and the keys by
//! `kid`; several keys verify at once so they can be rotated; a key taken
//! out stops verifying; and `casesync token` mints only when the
//! configuration trusts the development key.

mod support;

use std::path::Path;

use casesync_server::config::{AuthFileConfig, KeyFileConfig};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::TestServer;

const RSA_PRIVATE: &str = include_str!("fixtures/rsa2048-test-private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa2048-test-public.pem");
const ISSUER: &str = "https://id.example.org";

fn claims(user: &str) -> serde_json::Value {
    let now = casesync_server::auth::unix_now();
    json!({
        "sub": user, "device": "phone", "iat": now, "exp": now + 600,
        "aud": "casesync", "iss": ISSUER,
    })
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, user: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims(user), key).expect("sign")
}

fn ed_key(seed: u8, dir: &Path, kid: &str) -> (EncodingKey, KeyFileConfig) {
    let signing = SigningKey::from_bytes(&[seed; 32]);
    let private = signing.to_pkcs8_pem(LineEnding::LF).expect("pem");
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let path = dir.join(format!("{kid}.pem"));
    std::fs::write(&path, public).expect("write key");
    (
        EncodingKey::from_ed_pem(private.as_bytes()).expect("key"),
        KeyFileConfig {
            kid: kid.to_owned(),
            pem_file: Some(path),
            secret_file: None,
        },
    )
}

fn auth(algorithm: &str, keys: Vec<KeyFileConfig>, trust_dev_key: bool) -> AuthFileConfig {
    AuthFileConfig {
        algorithm: algorithm.to_owned(),
        issuer: ISSUER.to_owned(),
        audience: "casesync".to_owned(),
        leeway_secs: Some(5),
        trust_dev_key,
        keys,
    }
}

async fn status(server: &TestServer, token: &str) -> u16 {
    server.http("GET", "/api/cases", token, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_keys_verify_rotate_and_retire() {
    let keys_dir = tempfile::tempdir().expect("tmp");
    let (old_key, old_cfg) = ed_key(1, keys_dir.path(), "2026-10");
    let (new_key, new_cfg) = ed_key(2, keys_dir.path(), "2026-11");

    // Step 1: during the rotation both keys verify; the development key is
    // not trusted, and a token under an unknown kid is refused.
    let both = auth("EdDSA", vec![old_cfg.clone(), new_cfg.clone()], false);
    let mut server = TestServer::start_with(|c| c.auth = Some(both)).await;
    assert_eq!(
        status(
            &server,
            &sign(Algorithm::EdDSA, "2026-10", &old_key, "olena")
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &server,
            &sign(Algorithm::EdDSA, "2026-11", &new_key, "olena")
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &server,
            &sign(Algorithm::EdDSA, "2026-12", &new_key, "olena")
        )
        .await,
        401
    );
    assert_eq!(status(&server, &server.token("olena", "phone")).await, 401);
    server.shutdown().await;

    // Step 2: the old key is retired: its tokens stop verifying.
    let mut server =
        TestServer::start_with(|c| c.auth = Some(auth("EdDSA", vec![new_cfg], false))).await;
    assert_eq!(
        status(
            &server,
            &sign(Algorithm::EdDSA, "2026-10", &old_key, "olena")
        )
        .await,
        401
    );
    assert_eq!(
        status(
            &server,
            &sign(Algorithm::EdDSA, "2026-11", &new_key, "olena")
        )
        .await,
        200
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_identity_provider_can_be_configured() {
    let keys_dir = tempfile::tempdir().expect("tmp");
    let path = keys_dir.path().join("idp.pem");
    std::fs::write(&path, RSA_PUBLIC).expect("write");
    let config = auth(
        "RS256",
        vec![KeyFileConfig {
            kid: "idp-1".into(),
            pem_file: Some(path),
            secret_file: None,
        }],
        false,
    );
    let mut server = TestServer::start_with(|c| c.auth = Some(config)).await;
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa");
    assert_eq!(
        status(&server, &sign(Algorithm::RS256, "idp-1", &rsa, "olena")).await,
        200
    );
    // HS256 keyed with the RSA public key: refused.
    let confused = sign(
        Algorithm::HS256,
        "idp-1",
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        "olena",
    );
    assert_eq!(status(&server, &confused).await, 401);
    server.shutdown().await;
}

#[test]
fn casesync_token_mints_only_for_a_configuration_that_trusts_the_dev_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let run = |config: &str| {
        let file = dir.path().join("casesync.toml");
        std::fs::write(&file, config).expect("write config");
        std::process::Command::new(env!("CARGO_BIN_EXE_casesync"))
            .args(["token", "--user", "olena", "--device", "phone"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&file)
            .env_remove("CASESYNC_CONFIG")
            .env_remove("CASESYNC_DATA_DIR")
            .output()
            .expect("run casesync token")
    };
    let refused = run(&format!(
        "[auth]\nalgorithm = \"RS256\"\nissuer = \"{ISSUER}\"\naudience = \"casesync\"\n"
    ));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not trust"));
    let minted = run(&format!(
        "[auth]\nalgorithm = \"EdDSA\"\nissuer = \"{ISSUER}\"\naudience = \"casesync\"\ntrust_dev_key = true\n"
    ));
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    let payload = token.split('.').nth(1).expect("a JWT");
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(claims["iss"], ISSUER, "minted for the configured issuer");
}
