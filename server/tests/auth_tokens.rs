//! Token verification: what a valid token proves, and every way a forged,
//! stale or confused token is refused.
//!
//! Tokens are signed by hand (`sign_raw`) so that each test controls the exact
//! header and claims JSON, and a refusal is always for the reason under test:
//! where the header is the point, the signature over it is valid.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use casesync_server::auth::{
    check_peer_id, mint_token, AuthConfig, AuthConfigError, AuthError, DevKeyError, DevKeys,
    Identity, Role, TokenAlgorithm, VerificationKey, Verifier, MAX_TOKEN_LEN,
};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::time::Duration;
use sync_core::ids::{DeviceId, PeerId, UserId};

const NOW: i64 = 1_750_000_000;
const ISS: &str = "https://id.casesync.test";
const AUD: &str = "casesync";

const RSA_PRIVATE: &str = include_str!("fixtures/rsa2048-test-private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa2048-test-public.pem");
const RSA_1024_PUBLIC: &str = include_str!("fixtures/rsa1024-test-public.pem");

/// An Ed25519 issuer with a fixed seed, so failures replay exactly.
struct EdIssuer {
    kid: String,
    signing: EncodingKey,
    public_pem: String,
    public_raw: [u8; 32],
}

impl EdIssuer {
    fn new(kid: &str, seed: u8) -> Self {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let private_pem = key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8 pem");
        Self {
            kid: kid.to_owned(),
            signing: EncodingKey::from_ed_pem(private_pem.as_bytes()).expect("encoding key"),
            public_pem: key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("public pem"),
            public_raw: key.verifying_key().to_bytes(),
        }
    }

    fn verification_key(&self) -> VerificationKey {
        VerificationKey::ed25519_pem(self.kid.clone(), self.public_pem.as_bytes()).expect("key")
    }

    fn header(&self) -> Value {
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid })
    }

    fn token(&self, claims: &Value) -> String {
        sign_raw(&self.header(), claims, &self.signing, Algorithm::EdDSA)
    }
}

/// Signs exactly the header and claims JSON given, whatever they say.
fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{signature}")
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

fn valid_claims() -> Value {
    json!({
        "sub": "olena",
        "device": "phone-1",
        "exp": NOW + 900,
        "iat": NOW - 5,
        "aud": AUD,
        "iss": ISS,
        "jti": "c2b1d8",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

fn ed_verifier(issuers: &[&EdIssuer]) -> Verifier {
    let keys = issuers.iter().map(|i| i.verification_key()).collect();
    Verifier::new(AuthConfig::new(TokenAlgorithm::EdDsa, ISS, AUD, keys).expect("config"))
}

fn refused(verifier: &Verifier, token: &str) -> AuthError {
    match verifier.verify(token, NOW) {
        Ok(identity) => panic!("token was accepted as {identity:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- accepted

#[test]
fn a_valid_token_proves_user_device_and_peer_id() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);

    let identity = verifier
        .verify(&issuer.token(&valid_claims()), NOW)
        .expect("valid token");

    assert_eq!(identity.user().as_str(), "olena");
    assert_eq!(identity.device().as_str(), "phone-1");
    assert_eq!(identity.peer_id().as_str(), "user:olena:phone-1");
    assert_eq!(identity.role(), Role::Relative, "role defaults to relative");
    assert_eq!(identity.expires_at(), NOW + 900);
}

#[test]
fn role_claim_is_read_and_an_unknown_role_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    for (claim, role) in [
        ("relative", Role::Relative),
        ("coordinator", Role::Coordinator),
        ("admin", Role::Admin),
    ] {
        let token = issuer.token(&with(valid_claims(), "role", json!(claim)));
        assert_eq!(verifier.verify(&token, NOW).expect(claim).role(), role);
    }
    for bad in [json!("Admin"), json!("root"), json!(1), json!(null)] {
        let token = issuer.token(&with(valid_claims(), "role", bad));
        assert_eq!(refused(&verifier, &token), AuthError::InvalidClaim("role"));
    }
}

#[test]
fn audience_may_be_an_array_that_contains_ours() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&with(valid_claims(), "aud", json!(["other", AUD])));
    assert!(verifier.verify(&token, NOW).is_ok());
}

#[test]
fn unknown_extra_claims_are_ignored() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&with(valid_claims(), "email_verified", json!(true)));
    assert!(verifier.verify(&token, NOW).is_ok());
}

#[test]
fn header_typ_and_thumbprint_hints_are_accepted() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    for header in [
        json!({ "alg": "EdDSA", "kid": "k1" }),
        json!({ "alg": "EdDSA", "kid": "k1", "typ": "at+jwt" }),
        json!({ "alg": "EdDSA", "kid": "k1", "typ": "JWT", "x5t": "abc" }),
    ] {
        let token = sign_raw(&header, &valid_claims(), &issuer.signing, Algorithm::EdDSA);
        assert!(verifier.verify(&token, NOW).is_ok(), "{header}");
    }
}

// ---------------------------------------------------------------- time

#[test]
fn expired_token_is_refused_after_the_leeway() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]); // default leeway: 30 s

    let within = issuer.token(&with(valid_claims(), "exp", json!(NOW - 29)));
    assert!(
        verifier.verify(&within, NOW).is_ok(),
        "29 s late is clock skew"
    );

    let expired = issuer.token(&with(valid_claims(), "exp", json!(NOW - 30)));
    assert_eq!(refused(&verifier, &expired), AuthError::Expired);

    let long_ago = issuer.token(&with(valid_claims(), "exp", json!(0)));
    assert_eq!(refused(&verifier, &long_ago), AuthError::Expired);
}

#[test]
fn with_zero_leeway_a_token_is_valid_only_before_exp() {
    let issuer = EdIssuer::new("k1", 1);
    let config = AuthConfig::new(
        TokenAlgorithm::EdDsa,
        ISS,
        AUD,
        vec![issuer.verification_key()],
    )
    .expect("config")
    .with_leeway_secs(0)
    .expect("leeway");
    let verifier = Verifier::new(config);
    let token = issuer.token(&with(valid_claims(), "exp", json!(NOW)));
    assert_eq!(refused(&verifier, &token), AuthError::Expired);
    assert!(verifier.verify(&token, NOW - 1).is_ok());
}

#[test]
fn nbf_in_the_future_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);

    let soon = issuer.token(&with(valid_claims(), "nbf", json!(NOW + 20)));
    assert!(verifier.verify(&soon, NOW).is_ok(), "within leeway");

    let later = issuer.token(&with(valid_claims(), "nbf", json!(NOW + 31)));
    assert_eq!(refused(&verifier, &later), AuthError::NotYetValid);
}

#[test]
fn iat_in_the_future_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&with(valid_claims(), "iat", json!(NOW + 3600)));
    assert_eq!(refused(&verifier, &token), AuthError::IssuedInFuture);
}

#[test]
fn times_given_as_strings_fractions_or_null_are_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let cases = [
        ("exp", json!((NOW + 900).to_string())),
        ("exp", json!("never")),
        ("exp", json!((NOW + 900) as f64 + 0.5)),
        ("exp", json!(null)),
        ("nbf", json!((NOW - 10).to_string())),
        ("nbf", json!(null)),
        ("iat", json!("now")),
    ];
    for (claim, value) in cases {
        let token = issuer.token(&with(valid_claims(), claim, value.clone()));
        assert_eq!(
            refused(&verifier, &token),
            AuthError::InvalidClaim(match claim {
                "exp" => "exp",
                "nbf" => "nbf",
                _ => "iat",
            }),
            "{claim} = {value}"
        );
    }
}

// ---------------------------------------------------------------- aud, iss, required claims

#[test]
fn wrong_audience_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    for aud in [json!("casesync-staging"), json!(["a", "b"]), json!([])] {
        let token = issuer.token(&with(valid_claims(), "aud", aud.clone()));
        assert_eq!(
            refused(&verifier, &token),
            AuthError::WrongAudience,
            "{aud}"
        );
    }
    let token = issuer.token(&with(valid_claims(), "aud", json!(7)));
    assert_eq!(refused(&verifier, &token), AuthError::InvalidClaim("aud"));
}

#[test]
fn wrong_issuer_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&with(valid_claims(), "iss", json!("https://evil.test")));
    assert_eq!(refused(&verifier, &token), AuthError::WrongIssuer);

    // jsonwebtoken would accept an array containing the issuer; we do not.
    let token = issuer.token(&with(valid_claims(), "iss", json!([ISS])));
    assert_eq!(refused(&verifier, &token), AuthError::InvalidClaim("iss"));
}

#[test]
fn each_required_claim_must_be_present() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    for claim in ["sub", "device", "exp", "aud", "iss"] {
        let token = issuer.token(&without(valid_claims(), claim));
        let err = refused(&verifier, &token);
        assert_eq!(err, AuthError::MissingClaim(claim), "without {claim}");
    }
}

#[test]
fn sub_and_device_must_be_valid_identifiers() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let cases = [
        ("sub", json!("")),
        ("sub", json!("olena\n")),
        ("sub", json!(42)),
        ("device", json!("")),
        ("device", json!(["phone"])),
    ];
    for (claim, value) in cases {
        let token = issuer.token(&with(valid_claims(), claim, value.clone()));
        let expected = if claim == "sub" { "sub" } else { "device" };
        assert_eq!(
            refused(&verifier, &token),
            AuthError::InvalidClaim(expected),
            "{claim} = {value}"
        );
    }
}

#[test]
fn a_device_with_a_colon_is_refused_because_its_peer_id_would_be_ambiguous() {
    // sub "a" + device "b:c" and sub "a:b" + device "c" would both announce
    // "user:a:b:c"; the first could then pass as the second.
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&with(
        with(valid_claims(), "sub", json!("a")),
        "device",
        json!("b:c"),
    ));
    assert_eq!(
        refused(&verifier, &token),
        AuthError::InvalidClaim("device")
    );

    // A colon in the subject is fine: issuers use it, and it splits uniquely.
    let token = issuer.token(&with(valid_claims(), "sub", json!("auth0|x:y")));
    let identity = verifier.verify(&token, NOW).expect("colon in sub");
    assert_eq!(identity.peer_id().as_str(), "user:auth0|x:y:phone-1");
}

#[test]
fn a_peer_id_too_long_to_announce_is_refused() {
    // Each part fits a UserId/DeviceId, but `user:<sub>:<device>` does not
    // fit a PeerId, so the device could never join.
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let claims = with(
        with(valid_claims(), "sub", json!("u".repeat(200))),
        "device",
        json!("d".repeat(100)),
    );
    assert_eq!(
        refused(&verifier, &issuer.token(&claims)),
        AuthError::InvalidClaim("sub")
    );
}

// ---------------------------------------------------------------- algorithm confusion

#[test]
fn hs256_token_is_refused_when_eddsa_is_configured() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": "k1" });

    let secrets: [&[u8]; 3] = [
        b"a-development-secret-of-32-bytes!",
        // The classic confusion attack: HMAC keyed with the public key.
        issuer.public_pem.as_bytes(),
        &issuer.public_raw,
    ];
    for secret in secrets {
        let key = EncodingKey::from_secret(secret);
        let token = sign_raw(&header, &valid_claims(), &key, Algorithm::HS256);
        assert_eq!(refused(&verifier, &token), AuthError::AlgorithmMismatch);
    }
}

#[test]
fn alg_none_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    for alg in ["none", "None", "NONE", "eddsa"] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": "k1" });
        let unsigned = format!("{}.{}.", b64_json(&header), b64_json(&valid_claims()));
        assert_eq!(
            refused(&verifier, &unsigned),
            AuthError::AlgorithmMismatch,
            "{alg}"
        );
    }
    let no_alg = json!({ "typ": "JWT", "kid": "k1" });
    let token = format!("{}.{}.", b64_json(&no_alg), b64_json(&valid_claims()));
    assert_eq!(refused(&verifier, &token), AuthError::MalformedToken);
}

#[test]
fn a_signature_from_another_key_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let impostor = EdIssuer::new("k1", 2); // same kid, different key
    let verifier = ed_verifier(&[&issuer]);
    assert_eq!(
        refused(&verifier, &impostor.token(&valid_claims())),
        AuthError::BadSignature
    );
}

#[test]
fn a_changed_payload_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&valid_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_claims = b64_json(&with(valid_claims(), "sub", json!("mykola")));
    parts[1] = &forged_claims;
    assert_eq!(
        refused(&verifier, &parts.join(".")),
        AuthError::BadSignature
    );
}

#[test]
fn a_stripped_signature_is_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&valid_claims());
    let (unsigned, _signature) = token.rsplit_once('.').expect("three parts");

    assert_eq!(
        refused(&verifier, &format!("{unsigned}.")),
        AuthError::BadSignature
    );
    assert_eq!(refused(&verifier, unsigned), AuthError::MalformedToken);
}

#[test]
fn malformed_and_oversized_tokens_are_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let token = issuer.token(&valid_claims());
    for bad in [
        String::new(),
        "...".to_owned(),
        "a.b".to_owned(),
        format!("{token}.extra"),
        format!("{token} "),
        format!("Bearer {token}"),
        token.replace('.', "+"),
        "eyJhbGciOiJFZERTQSJ9.!!!.sig".to_owned(),
    ] {
        let err = refused(&verifier, &bad);
        assert_eq!(err, AuthError::MalformedToken, "{bad:?}");
    }
    let huge = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(
        refused(&verifier, &huge),
        AuthError::TokenTooLarge { max: MAX_TOKEN_LEN }
    );
}

// ---------------------------------------------------------------- kid and header parameters

#[test]
fn unknown_and_missing_kid_are_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let claims = valid_claims();

    let unknown = json!({ "alg": "EdDSA", "kid": "k9" });
    let token = sign_raw(&unknown, &claims, &issuer.signing, Algorithm::EdDSA);
    assert_eq!(refused(&verifier, &token), AuthError::UnknownKeyId);

    // Strict even with a single configured key: no kid, no key.
    let missing = json!({ "alg": "EdDSA" });
    let token = sign_raw(&missing, &claims, &issuer.signing, Algorithm::EdDSA);
    assert_eq!(refused(&verifier, &token), AuthError::MissingKeyId);

    let not_a_string = json!({ "alg": "EdDSA", "kid": 1 });
    let token = sign_raw(&not_a_string, &claims, &issuer.signing, Algorithm::EdDSA);
    assert_eq!(refused(&verifier, &token), AuthError::UnknownKeyId);
}

#[test]
fn headers_that_point_at_keys_are_refused_even_when_the_signature_is_valid() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let attacker_jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
    let cases = [
        ("jku", json!("https://evil.test/jwks.json")),
        ("x5u", json!("https://evil.test/cert.pem")),
        ("jwk", attacker_jwk),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
    ];
    for (param, value) in cases {
        let mut header = issuer.header();
        header[param] = value;
        let token = sign_raw(&header, &valid_claims(), &issuer.signing, Algorithm::EdDSA);
        assert_eq!(
            refused(&verifier, &token),
            AuthError::ForbiddenHeaderParameter(param),
            "{param}"
        );
    }
}

#[test]
fn unexpected_header_parameters_and_types_are_refused() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);

    let mut header = issuer.header();
    header["zip"] = json!("DEF");
    let token = sign_raw(&header, &valid_claims(), &issuer.signing, Algorithm::EdDSA);
    assert_eq!(
        refused(&verifier, &token),
        AuthError::UnexpectedHeaderParameter
    );

    for typ in [json!("JWE"), json!("dpop+jwt"), json!(1)] {
        let mut header = issuer.header();
        header["typ"] = typ;
        let token = sign_raw(&header, &valid_claims(), &issuer.signing, Algorithm::EdDSA);
        assert_eq!(refused(&verifier, &token), AuthError::UnsupportedTokenType);
    }
}

// ---------------------------------------------------------------- RS256 and HS256

fn rs256_verifier() -> Verifier {
    let key = VerificationKey::rsa_pem("rsa-1", RSA_PUBLIC.as_bytes()).expect("rsa key");
    Verifier::new(AuthConfig::new(TokenAlgorithm::Rs256, ISS, AUD, vec![key]).expect("config"))
}

#[test]
fn rs256_token_verifies_against_the_configured_rsa_key() {
    let verifier = rs256_verifier();
    let signing = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa private");
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": "rsa-1" });
    let token = sign_raw(&header, &valid_claims(), &signing, Algorithm::RS256);

    let identity = verifier.verify(&token, NOW).expect("rs256");
    assert_eq!(identity.peer_id().as_str(), "user:olena:phone-1");

    // The same key with another RSA algorithm is still the wrong algorithm.
    let ps = json!({ "alg": "PS256", "kid": "rsa-1" });
    let token = sign_raw(&ps, &valid_claims(), &signing, Algorithm::PS256);
    assert_eq!(refused(&verifier, &token), AuthError::AlgorithmMismatch);
}

#[test]
fn rs256_config_refuses_hs256_keyed_with_the_rsa_public_key() {
    let verifier = rs256_verifier();
    let key = EncodingKey::from_secret(RSA_PUBLIC.as_bytes());
    let header = json!({ "alg": "HS256", "kid": "rsa-1" });
    let token = sign_raw(&header, &valid_claims(), &key, Algorithm::HS256);
    assert_eq!(refused(&verifier, &token), AuthError::AlgorithmMismatch);

    let eddsa = EdIssuer::new("rsa-1", 1).token(&valid_claims());
    assert_eq!(refused(&verifier, &eddsa), AuthError::AlgorithmMismatch);
}

#[test]
fn hs256_development_config_verifies_with_its_secret() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let key = VerificationKey::hmac_secret("dev", secret).expect("secret");
    let config = AuthConfig::new(TokenAlgorithm::Hs256Development, ISS, AUD, vec![key]);
    let verifier = Verifier::new(config.expect("config"));

    let header = json!({ "alg": "HS256", "kid": "dev" });
    let good = sign_raw(
        &header,
        &valid_claims(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    );
    assert!(verifier.verify(&good, NOW).is_ok());

    let other = EncodingKey::from_secret(b"another-secret-another-secret-xx");
    let bad = sign_raw(&header, &valid_claims(), &other, Algorithm::HS256);
    assert_eq!(refused(&verifier, &bad), AuthError::BadSignature);
}

// ---------------------------------------------------------------- rotation

#[test]
fn during_rotation_both_keys_verify_and_a_removed_key_stops_verifying() {
    let old = EdIssuer::new("2025-01", 1);
    let new = EdIssuer::new("2025-02", 2);

    // Step 1: the operator adds the new key next to the old one.
    let both = ed_verifier(&[&old, &new]);
    let from_old = old.token(&valid_claims());
    let from_new = new.token(&valid_claims());
    assert!(both.verify(&from_old, NOW).is_ok());
    assert!(both.verify(&from_new, NOW).is_ok());

    // A token naming one kid but signed by the other key fails.
    let mixed = sign_raw(
        &old.header(),
        &valid_claims(),
        &new.signing,
        Algorithm::EdDSA,
    );
    assert_eq!(refused(&both, &mixed), AuthError::BadSignature);

    // Step 2: once old tokens have expired, the old key is removed.
    let only_new = ed_verifier(&[&new]);
    assert_eq!(refused(&only_new, &from_old), AuthError::UnknownKeyId);
    assert!(only_new.verify(&from_new, NOW).is_ok());
}

// ---------------------------------------------------------------- configuration

#[test]
fn bad_configurations_are_refused() {
    let a = EdIssuer::new("k1", 1);
    let b = EdIssuer::new("k1", 2);

    let dup = AuthConfig::new(
        TokenAlgorithm::EdDsa,
        ISS,
        AUD,
        vec![a.verification_key(), b.verification_key()],
    );
    assert_eq!(
        dup.err(),
        Some(AuthConfigError::DuplicateKeyId("k1".into()))
    );

    let none = AuthConfig::new(TokenAlgorithm::EdDsa, ISS, AUD, vec![]);
    assert_eq!(none.err(), Some(AuthConfigError::NoKeys));

    let mismatch = AuthConfig::new(TokenAlgorithm::Rs256, ISS, AUD, vec![a.verification_key()]);
    assert!(matches!(
        mismatch,
        Err(AuthConfigError::KeyAlgorithmMismatch { .. })
    ));

    let empty_iss = AuthConfig::new(TokenAlgorithm::EdDsa, "", AUD, vec![a.verification_key()]);
    assert_eq!(empty_iss.err(), Some(AuthConfigError::EmptyIssuer));

    let leeway = AuthConfig::new(TokenAlgorithm::EdDsa, ISS, AUD, vec![a.verification_key()])
        .expect("config")
        .with_leeway_secs(3600);
    assert!(matches!(
        leeway,
        Err(AuthConfigError::LeewayTooLarge { .. })
    ));

    assert!(matches!(
        VerificationKey::hmac_secret("dev", b"short"),
        Err(AuthConfigError::SecretTooShort { .. })
    ));
    assert!(matches!(
        VerificationKey::rsa_pem("small", RSA_1024_PUBLIC.as_bytes()),
        Err(AuthConfigError::RsaKeyTooSmall { bits: 1024, .. })
    ));
    assert!(matches!(
        VerificationKey::ed25519_pem("rsa-as-ed", RSA_PUBLIC.as_bytes()),
        Err(AuthConfigError::InvalidKey(..))
    ));
    assert!(matches!(
        VerificationKey::ed25519_pem("", a.public_pem.as_bytes()),
        Err(AuthConfigError::InvalidKeyId)
    ));
    assert_eq!(
        "none".parse::<TokenAlgorithm>(),
        Err(AuthConfigError::UnknownAlgorithm)
    );
    assert_eq!("EdDSA".parse::<TokenAlgorithm>(), Ok(TokenAlgorithm::EdDsa));
}

// ---------------------------------------------------------------- peer id

#[test]
fn the_announced_peer_id_must_match_the_token() {
    let issuer = EdIssuer::new("k1", 1);
    let verifier = ed_verifier(&[&issuer]);
    let identity: Identity = verifier
        .verify(&issuer.token(&valid_claims()), NOW)
        .expect("valid");

    let own = PeerId::new("user:olena:phone-1").expect("peer");
    assert_eq!(check_peer_id(&identity, &own), Ok(()));

    for other in [
        "user:olena:phone-2",
        "user:mykola:phone-1",
        "user:olena:phone-1 ",
        "server-1",
    ] {
        let other = PeerId::new(other).expect("peer");
        assert_eq!(
            check_peer_id(&identity, &other),
            Err(AuthError::PeerIdMismatch),
            "{other:?}"
        );
    }
}

// ---------------------------------------------------------------- development keys

#[test]
fn dev_keys_are_created_once_with_private_permissions_and_mint_verifiable_tokens() {
    let data_dir = tempfile::tempdir().expect("tempdir");

    // Step 1: first start creates the key.
    let keys = DevKeys::load_or_create(data_dir.path()).expect("create");
    let key_file = data_dir.path().join("keys").join("dev-ed25519.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&key_file), 0o600);
        assert_eq!(mode(&data_dir.path().join("keys")), 0o700);
    }
    let leftovers: Vec<_> = std::fs::read_dir(data_dir.path().join("keys"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("dev-ed25519.pem")]);

    // Step 2: `casesync token` mints a token; the server verifies it.
    let user = UserId::new("olena").expect("user");
    let device = DeviceId::new("phone-1").expect("device");
    let ttl = Duration::from_secs(3600);
    let token = mint_token(&keys, &user, &device, Role::Coordinator, ttl, NOW).expect("mint");
    let verifier = Verifier::new(keys.auth_config().expect("config"));
    let identity = verifier.verify(&token, NOW + 60).expect("verify");
    assert_eq!(identity.role(), Role::Coordinator);
    assert_eq!(identity.expires_at(), NOW + 3600);
    assert_eq!(verifier.config().issuer(), "casesync-dev");
    assert_eq!(verifier.config().audience(), "casesync");
    assert_eq!(
        verifier.verify(&token, NOW + 3600 + 30).err(),
        Some(AuthError::Expired)
    );

    // Step 3: a restart loads the same key, so old tokens still verify.
    let again = DevKeys::load_or_create(data_dir.path()).expect("load");
    assert_eq!(again.kid(), keys.kid());
    let verifier = Verifier::new(again.auth_config().expect("config"));
    assert!(verifier.verify(&token, NOW + 60).is_ok());
}

#[test]
fn minting_refuses_ambiguous_devices_and_silly_lifetimes() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let keys = DevKeys::load_or_create(data_dir.path()).expect("create");
    let user = UserId::new("olena").expect("user");
    let phone = DeviceId::new("phone-1").expect("device");
    let colon = DeviceId::new("phone:1").expect("device");

    assert!(mint_token(
        &keys,
        &user,
        &colon,
        Role::Relative,
        Duration::from_secs(60),
        NOW
    )
    .is_err());
    assert!(mint_token(&keys, &user, &phone, Role::Relative, Duration::ZERO, NOW).is_err());
    let year = Duration::from_secs(365 * 24 * 3600);
    assert!(mint_token(&keys, &user, &phone, Role::Relative, year, NOW).is_err());
}

#[cfg(unix)]
#[test]
fn a_dev_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let data_dir = tempfile::tempdir().expect("tempdir");
    DevKeys::load_or_create(data_dir.path()).expect("create");
    let key_file = data_dir.path().join("keys").join("dev-ed25519.pem");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let err = DevKeys::load_or_create(data_dir.path()).expect_err("must refuse");
    assert!(
        matches!(err, DevKeyError::InsecurePermissions { mode: 0o644, .. }),
        "{err}"
    );
}

#[test]
fn a_corrupt_dev_key_file_is_refused() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    DevKeys::load_or_create(data_dir.path()).expect("create");
    let key_file = data_dir.path().join("keys").join("dev-ed25519.pem");
    std::fs::write(&key_file, "not a key").expect("write");
    let err = DevKeys::load_or_create(data_dir.path()).expect_err("must refuse");
    assert!(matches!(err, DevKeyError::InvalidKeyFile { .. }), "{err}");
}

// ---------------------------------------------------------------- canary

/// Every auth type and error that ever sees a token or key, printed with
/// `{:?}` and `{}`, must not contain the token, its signature, or key bytes.
#[test]
fn canary_tokens_and_keys_never_appear_in_debug_or_display() {
    use casesync_server::auth::{extract_token, AuthRejection, BearerToken};

    let data_dir = tempfile::tempdir().expect("tempdir");
    let dev = DevKeys::load_or_create(data_dir.path()).expect("create");
    let private_pem = std::fs::read_to_string(data_dir.path().join("keys").join("dev-ed25519.pem"))
        .expect("read");
    let private_body: String = private_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let user = UserId::new("olena").expect("user");
    let device = DeviceId::new("phone-1").expect("device");
    let token = mint_token(
        &dev,
        &user,
        &device,
        Role::Admin,
        Duration::from_secs(600),
        NOW,
    )
    .expect("mint");
    let signature = token.rsplit('.').next().expect("signature").to_owned();

    let secret = b"canary-secret-canary-secret-canary!";
    let hmac = VerificationKey::hmac_secret("dev", secret).expect("hmac");
    let hmac_config = AuthConfig::new(
        TokenAlgorithm::Hs256Development,
        ISS,
        AUD,
        vec![hmac.clone()],
    )
    .expect("cfg");

    let verifier = Verifier::new(dev.auth_config().expect("config"));
    let identity = verifier.verify(&token, NOW).expect("verify");

    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    let uri: axum::http::Uri = "/sync".parse().expect("uri");
    let extracted = extract_token(&headers, &uri).expect("extract");

    let mut printed = vec![
        format!("{:?}", BearerToken::new(token.clone())),
        format!("{extracted:?}"),
        format!("{identity:?}"),
        format!("{verifier:?}"),
        format!("{:?}", verifier.config()),
        format!("{dev:?}"),
        format!("{hmac:?}"),
        format!("{hmac_config:?}"),
        format!("{:?}", Verifier::new(hmac_config.clone())),
    ];
    // Every refusal of a variant of this token, printed every way.
    let expired_at = NOW + 10_000;
    let tampered = format!("{}x", &token[..token.len() - 1]);
    for bad in [
        token.clone(),
        tampered,
        format!("{token}.x"),
        token.replace('.', "+"),
    ] {
        for now in [NOW, expired_at] {
            if let Err(err) = verifier.verify(&bad, now) {
                printed.push(format!("{err:?}"));
                printed.push(err.to_string());
                printed.push(format!("{:?}", AuthRejection(err)));
            }
        }
    }
    assert!(printed.len() > 12, "the refusals were exercised");

    let secret_text = String::from_utf8_lossy(secret).into_owned();
    for text in &printed {
        for needle in [&token, &signature, &private_body, &secret_text] {
            assert!(!text.contains(needle.as_str()), "leaked into: {text}");
        }
        assert!(
            !text.contains(&token[..40]),
            "token prefix leaked into: {text}"
        );
    }
}
