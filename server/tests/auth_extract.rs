//! Finding the token in a request, and the axum extractor's answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use axum::routing::get;
use axum::Router;
use casesync_server::auth::{
    extract_token, mint_token, unix_now, uri_for_logging, websocket_protocol_to_select, AuthError,
    Authenticated, DevKeys, Role, TokenSource, Verifier, WS_PROTOCOL,
};
use sync_core::ids::{DeviceId, UserId};
use tower::ServiceExt;

const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJvbGVuYSJ9.c2lnbmF0dXJl";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn uri(s: &str) -> Uri {
    s.parse().expect("uri")
}

fn extracted(h: &HeaderMap, u: &Uri) -> (String, TokenSource) {
    let found = extract_token(h, u).expect("token");
    (found.token.expose().to_owned(), found.source)
}

// ---------------------------------------------------------------- the three sources

#[test]
fn authorization_bearer_header() {
    for value in [
        format!("Bearer {TOKEN}"),
        format!("bearer {TOKEN}"),
        format!("BEARER   {TOKEN} "),
    ] {
        let h = headers(&[("authorization", &value)]);
        assert_eq!(
            extracted(&h, &uri("/sync")),
            (TOKEN.to_owned(), TokenSource::AuthorizationHeader),
            "{value}"
        );
    }
}

#[test]
fn other_authorization_schemes_are_refused() {
    for value in ["Basic b2xlbmE6cGFzcw==", "Token abc", "Bearer", "Bearer "] {
        let h = headers(&[("authorization", value)]);
        let err = extract_token(&h, &uri("/sync")).expect_err(value);
        assert!(
            matches!(
                err,
                AuthError::UnsupportedAuthScheme | AuthError::MalformedToken
            ),
            "{value}: {err:?}"
        );
    }
}

#[test]
fn websocket_subprotocol_carries_the_token_and_casesync_v1_is_selected() {
    let offered = format!("{WS_PROTOCOL}, casesync.bearer.{TOKEN}");
    let h = headers(&[("sec-websocket-protocol", &offered)]);
    assert_eq!(
        extracted(&h, &uri("/sync")),
        (TOKEN.to_owned(), TokenSource::WebSocketProtocol)
    );
    assert_eq!(websocket_protocol_to_select(&h), Some("casesync.v1"));

    // Offered on two header lines, in the other order: the same.
    let h = headers(&[
        (
            "sec-websocket-protocol",
            &format!("casesync.bearer.{TOKEN}"),
        ),
        ("sec-websocket-protocol", "casesync.v1"),
    ]);
    assert_eq!(
        extracted(&h, &uri("/sync")).1,
        TokenSource::WebSocketProtocol
    );
    assert_eq!(websocket_protocol_to_select(&h), Some("casesync.v1"));

    // Without casesync.v1 there is nothing safe to select; the bearer entry
    // is never selected.
    let h = headers(&[(
        "sec-websocket-protocol",
        &format!("casesync.bearer.{TOKEN}"),
    )]);
    assert_eq!(websocket_protocol_to_select(&h), None);
}

#[test]
fn query_parameter_is_percent_decoded() {
    let encoded = TOKEN.replace('.', "%2E");
    let u = uri(&format!("/sync?doc=abc&token={encoded}&x=1"));
    assert_eq!(
        extracted(&HeaderMap::new(), &u),
        (TOKEN.to_owned(), TokenSource::QueryParameter)
    );
}

// ---------------------------------------------------------------- none, or too many

#[test]
fn no_token_anywhere_is_missing() {
    let err = extract_token(&HeaderMap::new(), &uri("/sync?doc=abc")).expect_err("none");
    assert_eq!(err, AuthError::MissingToken);
    let h = headers(&[("sec-websocket-protocol", "casesync.v1")]);
    assert_eq!(
        extract_token(&h, &uri("/sync")).err(),
        Some(AuthError::MissingToken)
    );
}

#[test]
fn two_tokens_are_refused_wherever_they_are() {
    let bearer = format!("Bearer {TOKEN}");
    let proto = format!("casesync.v1, casesync.bearer.{TOKEN}");
    let query = format!("/sync?token={TOKEN}");
    let cases = [
        (
            headers(&[("authorization", &bearer), ("authorization", &bearer)]),
            uri("/sync"),
        ),
        (headers(&[("authorization", &bearer)]), uri(&query)),
        (
            headers(&[
                ("authorization", &bearer),
                ("sec-websocket-protocol", &proto),
            ]),
            uri("/"),
        ),
        (headers(&[("sec-websocket-protocol", &proto)]), uri(&query)),
        (
            headers(&[(
                "sec-websocket-protocol",
                &format!("casesync.bearer.{TOKEN}, casesync.bearer.other"),
            )]),
            uri("/sync"),
        ),
        (
            HeaderMap::new(),
            uri(&format!("/sync?token={TOKEN}&token=other")),
        ),
    ];
    for (i, (h, u)) in cases.iter().enumerate() {
        assert_eq!(
            extract_token(h, u).err(),
            Some(AuthError::AmbiguousToken),
            "case {i}"
        );
    }
}

#[test]
fn empty_tokens_are_malformed() {
    let h = headers(&[("sec-websocket-protocol", "casesync.v1, casesync.bearer.")]);
    assert_eq!(
        extract_token(&h, &uri("/")).err(),
        Some(AuthError::MalformedToken)
    );
    assert_eq!(
        extract_token(&HeaderMap::new(), &uri("/sync?token=")).err(),
        Some(AuthError::MalformedToken)
    );
}

#[test]
fn uris_are_logged_without_the_token() {
    let u = uri(&format!("/sync?doc=abc&token={TOKEN}&x=1"));
    let logged = uri_for_logging(&u);
    assert_eq!(logged, "/sync?doc=abc&token=[redacted]&x=1");
    let u = uri(&format!("/sync?%74oken={TOKEN}"));
    assert!(!uri_for_logging(&u).contains(TOKEN));
    assert_eq!(uri_for_logging(&uri("/metrics")), "/metrics");
}

// ---------------------------------------------------------------- the axum extractor

struct Server {
    app: Router,
    keys: DevKeys,
    _data_dir: tempfile::TempDir,
}

fn server() -> Server {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let keys = DevKeys::load_or_create(data_dir.path()).expect("keys");
    let verifier = Arc::new(Verifier::new(keys.auth_config().expect("config")));
    let app = Router::new()
        .route(
            "/me",
            get(|auth: Authenticated| async move {
                format!("{} {:?}", auth.identity.peer_id(), auth.source)
            }),
        )
        .with_state(verifier);
    Server {
        app,
        keys,
        _data_dir: data_dir,
    }
}

fn token_for(keys: &DevKeys, now: i64) -> String {
    let user = UserId::new("olena").expect("user");
    let device = DeviceId::new("phone-1").expect("device");
    mint_token(
        keys,
        &user,
        &device,
        Role::Relative,
        Duration::from_secs(600),
        now,
    )
    .expect("mint")
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("utf8"),
    )
}

#[tokio::test]
async fn extractor_yields_the_identity_for_each_source() {
    let s = server();
    let token = token_for(&s.keys, unix_now());
    let requests = [
        Request::get("/me").header(AUTHORIZATION, format!("Bearer {token}")),
        Request::get("/me").header(
            SEC_WEBSOCKET_PROTOCOL,
            format!("casesync.v1, casesync.bearer.{token}"),
        ),
        Request::get(format!("/me?token={token}")),
    ];
    let sources = ["AuthorizationHeader", "WebSocketProtocol", "QueryParameter"];
    for (request, source) in requests.into_iter().zip(sources) {
        let (status, _, body) = call(&s.app, request.body(Body::empty()).expect("req")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("user:olena:phone-1 {source}"));
    }
}

#[tokio::test]
async fn extractor_answers_401_with_a_safe_json_error() {
    let s = server();
    let expired = token_for(&s.keys, unix_now() - 3600);
    let valid = token_for(&s.keys, unix_now());
    let forged = format!("{}AAAA", &valid[..valid.len() - 4]);

    let cases = [
        (Request::get("/me"), "authentication required", "Bearer"),
        (
            Request::get("/me").header(AUTHORIZATION, format!("Bearer {expired}")),
            "token expired",
            "Bearer error=\"invalid_token\"",
        ),
        (
            Request::get("/me").header(AUTHORIZATION, format!("Bearer {forged}")),
            "invalid token",
            "Bearer error=\"invalid_token\"",
        ),
        (
            Request::get(format!("/me?token={valid}"))
                .header(AUTHORIZATION, format!("Bearer {valid}")),
            "send exactly one bearer token",
            "Bearer error=\"invalid_token\"",
        ),
    ];
    for (request, message, challenge) in cases {
        let (status, headers, body) = call(&s.app, request.body(Body::empty()).expect("req")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers.get(WWW_AUTHENTICATE).expect("challenge"), challenge);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
        assert_eq!(
            json,
            serde_json::json!({ "error": { "code": "unauthorized", "message": message } })
        );
        for t in [&expired, &valid, &forged] {
            assert!(!body.contains(t.as_str()), "token echoed in {body}");
        }
    }
}
