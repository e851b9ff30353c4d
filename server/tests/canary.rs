//! Canary: a token never reaches the logs or the disk.
//!
//! The real `casesync serve` runs with its most verbose log (trace). A valid token and a
//! well-formed but forged one carrying a known canary string are used every
//! way a client can send a token (the `Authorization` header, `?token=` on
//! `/sync` and `/sync/http`, the `Sec-WebSocket-Protocol` entry) and in
//! requests that fail in different ways. After a graceful stop, neither
//! token, nor any part of them that is secret or unique, appears in the
//! server's output or in any file of its data directory.

// Tests unwrap: any unexpected error should stop the test right there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Bounds every wait here; a passing run is far below it.
const WAIT: Duration = Duration::from_secs(30);
/// The line `casesync serve` prints once it listens.
const LISTENING: &str = "casesync listening on http://";
/// Written literally into the forged token's signature (base64url letters
/// only, so the token stays well-formed).
const CANARY: &str = "CasesyncCanaryQ7x9Zk2PwLm";
/// The forged token's `sub`, which only shows if someone logs the claims of
/// a token that failed verification.
const CANARY_SUB: &str = "canary-sub-4f81c2";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_casesync")
}

struct Server {
    child: Child,
    addr: SocketAddr,
    stdout_task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path) -> Server {
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env_remove("CASESYNC_LISTEN")
        .env_remove("CASESYNC_DATA_DIR")
        .env_remove("CASESYNC_CONFIG")
        .env_remove("CASESYNC_APP_DIR")
        // The most verbose log there is (the server's filter is
        // CASESYNC_LOG; RUST_LOG too, should that ever be read).
        .env("CASESYNC_LOG", "trace")
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout_log = tokio::fs::File::create(dir.join("stdout.log"))
        .await
        .unwrap();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout_log
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            if let Some(rest) = line.strip_prefix(LISTENING) {
                return rest.trim().parse::<SocketAddr>().unwrap();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server listens in time");
    // Keep copying stdout until the process ends.
    let stdout_task = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = stdout_log.write_all(format!("{line}\n").as_bytes()).await;
        }
        let _ = stdout_log.flush().await;
    });
    Server {
        child,
        addr,
        stdout_task,
    }
}

/// A graceful stop: SIGTERM, and the process exits by itself.
async fn stop(mut server: Server) {
    let pid = server.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
    let exit = tokio::time::timeout(WAIT, server.child.wait())
        .await
        .expect("the server stops in time after SIGTERM")
        .unwrap();
    assert!(exit.success(), "the server exited with {exit}");
    tokio::time::timeout(WAIT, server.stdout_task)
        .await
        .expect("stdout ends")
        .unwrap();
}

async fn mint(data_dir: &Path) -> String {
    let out = Command::new(bin())
        .args([
            "token",
            "--user",
            "alice",
            "--device",
            "phone",
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("CASESYNC_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    token
}

/// A well-formed token that fails verification: the valid token's header
/// (so it gets as far as the signature check), claims of our own, and a
/// signature that spells the canary.
fn forge(valid: &str) -> String {
    let header = valid.split('.').next().unwrap();
    let claims = serde_json::json!({
        "sub": CANARY_SUB,
        "device": "phone",
        "exp": casesync_server::auth::unix_now() + 3600,
        "aud": casesync_server::auth::DEV_AUDIENCE,
        "iss": casesync_server::auth::DEV_ISSUER,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    // 86 base64url characters are 64 bytes (an Ed25519 signature); 'A'
    // fills with zero bits, so the encoding stays canonical.
    let signature = format!("{CANARY}{}", "A".repeat(86 - CANARY.len()));
    assert!(URL_SAFE_NO_PAD.decode(&signature).is_ok());
    format!("{header}.{payload}.{signature}")
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Opens `/sync` with `request`, then sends `frame`, and reads until the
/// server closes (or the socket ends).
async fn socket_session(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    frame: Message,
) {
    let (mut ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("upgrade in time")
        .expect("upgraded");
    assert_eq!(response.status(), 101);
    ws.send(frame).await.unwrap();
    let _ = tokio::time::timeout(WAIT, async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The upgrade is refused with 401.
async fn socket_refused(request: tokio_tungstenite::tungstenite::handshake::client::Request) {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("answer in time")
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("expected 401, got an upgrade"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs_or_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let data_dir = dir.path().join("data");
    let valid = mint(&data_dir).await;
    let forged = forge(&valid);
    assert!(forged.contains(CANARY));
    let base = format!("http://{}", server.addr);
    let ws_base = format!("ws://{}/sync", server.addr);
    let http = reqwest::Client::new();

    let status = |r: reqwest::Response| r.status().as_u16();
    let get = |path: &str, auth: Option<String>| {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        req.send()
    };
    let bearer = |t: &str| Some(format!("Bearer {t}"));

    // The HTTP API: the header works; `?token=` is refused on the API.
    assert_eq!(
        status(get("/api/cases", bearer(&valid)).await.unwrap()),
        200
    );
    assert_eq!(
        status(get("/api/cases", bearer(&forged)).await.unwrap()),
        401
    );
    let created = http
        .post(format!("{base}/api/cases"))
        .header("Authorization", format!("Bearer {valid}"))
        .body(r#"{"values":{"person.family_name":"Ivanenko"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(status(created), 201);
    for t in [&valid, &forged] {
        assert_eq!(
            status(get(&format!("/api/cases?token={t}"), None).await.unwrap()),
            401
        );
    }
    // Failures of every shape, with a token inside.
    let too_long = valid.repeat(9000 / valid.len() + 1);
    for auth in [
        format!("Bearer {valid}.extra"),
        format!("Bearer {forged}.extra"),
        format!("Basic {valid}"),
        format!("Bearer {too_long}"),
        format!("Bearer {valid} {forged}"),
    ] {
        assert_eq!(status(get("/api/cases", Some(auth)).await.unwrap()), 401);
    }
    assert_eq!(
        status(
            get(&format!("/api/cases?token={valid}"), bearer(&valid))
                .await
                .unwrap()
        ),
        401,
        "two tokens"
    );
    assert_eq!(
        status(
            get(
                "/api/cases/automerge:2j9knpCkz6p4sDcApNK8vbH3PDwD",
                bearer(&valid)
            )
            .await
            .unwrap()
        ),
        404
    );
    assert_eq!(
        status(
            get(&format!("/no-such-route?token={valid}"), bearer(&forged))
                .await
                .unwrap()
        ),
        404
    );

    // `/sync` with `?token=`: the valid one opens a socket (then a text
    // frame carrying the forged token closes it); the forged one is 401.
    socket_session(
        format!("{ws_base}?token={valid}")
            .into_client_request()
            .unwrap(),
        Message::Text(forged.clone().into()),
    )
    .await;
    socket_refused(
        format!("{ws_base}?token={forged}")
            .into_client_request()
            .unwrap(),
    )
    .await;
    // `/sync` with the token in `Sec-WebSocket-Protocol`, as browsers send it;
    // then a binary frame that is not CBOR.
    let with_protocol = |t: &str| {
        let mut req = ws_base.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&format!("casesync.v1, casesync.bearer.{t}")).unwrap(),
        );
        req
    };
    socket_session(
        with_protocol(&valid),
        Message::Binary(format!("{CANARY}{forged}").into_bytes().into()),
    )
    .await;
    socket_refused(with_protocol(&forged)).await;

    // `/sync/http` with `?token=` and with the header; one frame that is
    // not CBOR.
    let frame = {
        let bytes = format!("{CANARY}{valid}").into_bytes();
        let mut body = u32::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        body.extend_from_slice(&bytes);
        body
    };
    for (query, auth, expected) in [
        (Some(&valid), None, 200),
        (Some(&forged), None, 401),
        (None, bearer(&valid), 200),
        (None, bearer(&forged), 401),
    ] {
        let url = match query {
            Some(t) => format!("{base}/sync/http?token={t}"),
            None => format!("{base}/sync/http"),
        };
        let mut req = http.post(url).body(frame.clone());
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        assert_eq!(status(req.send().await.unwrap()), expected);
    }

    stop(server).await;

    // What must never show: each whole token, the parts of them that are
    // unique to them (claims and signatures), and the canaries.
    let part = |t: &str, i: usize| t.split('.').nth(i).unwrap().to_owned();
    let needles = [
        ("the valid token", valid.clone()),
        ("the valid token's claims", part(&valid, 1)),
        ("the valid token's signature", part(&valid, 2)),
        ("the forged token", forged.clone()),
        ("the forged token's claims", part(&forged, 1)),
        ("the canary", CANARY.to_owned()),
        ("the forged token's sub", CANARY_SUB.to_owned()),
    ];
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    let stdout = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    // The log really was at trace level, and really saw the failures.
    assert!(
        stderr.contains("TRACE"),
        "no trace lines in the log:\n{stderr}"
    );
    assert!(
        stderr.contains("DEBUG"),
        "no debug lines in the log:\n{stderr}"
    );
    assert!(stderr.contains("authentication refused"), "{stderr}");
    assert!(stdout.contains(LISTENING), "{stdout}");
    let mut checked = vec![dir.path().join("stderr.log"), dir.path().join("stdout.log")];
    let data_files = files(&data_dir);
    assert!(
        data_files.iter().any(|f| f.ends_with("casesync.db")),
        "{data_files:?}"
    );
    checked.extend(data_files);
    for file in &checked {
        let bytes = std::fs::read(file).unwrap();
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{what} appears in {}",
                file.display()
            );
        }
    }
}
