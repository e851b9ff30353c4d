//! How fast the history API answers on a large case (issue 6): a case with
//! 20,000 changes from 8 devices that edit offline and deliver in rounds,
//! merged through the document actor and stored in a real SQLite change
//! log; then the first page of the change list, the case at a point, and
//! diffs, each timed through the router (no network), warm and cold.
//!
//! Run it in release mode (the figures in BENCHMARKS.md come from this):
//!
//! ```text
//! cargo run --release -p casesync-server --example history_bench
//! ```
//!
//! `HISTORY_BENCH_CHANGES` and `HISTORY_BENCH_DEVICES` change the size.
//! Nothing is asserted: this prints figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use automerge::{ActorId, Automerge, ReadDoc};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use casesync_server::auth::{mint_token, DevKeys, Role};
use casesync_server::docs::Provenance;
use casesync_server::{app, AppState, Config};
use serde_json::Value;
use sync_core::ids::{DeviceId, DocumentId, UserId};
use sync_core::model::{
    self, Collection, DisappearanceField, Edit, Field, FieldValue, ItemField, ItemId, ItemRef,
    MilitaryField, PersonField, TimelineField,
};
use tower::ServiceExt;

/// A small seeded PRNG (xorshift64*), so runs are repeatable.
#[derive(Debug)]
struct StdRng(u64);

impl StdRng {
    fn seed_from_u64(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `range` (start inclusive, end exclusive).
    fn below(&mut self, start: usize, end: usize) -> usize {
        start + (self.next() % (end - start).max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Changes each device makes offline before it delivers them.
const BATCH: usize = 25;
/// Runs of each warm query.
const RUNS: usize = 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const REGISTERS: [Field; 6] = [
    Field::Person(PersonField::GivenName),
    Field::Person(PersonField::FamilyName),
    Field::Military(MilitaryField::Unit),
    Field::Military(MilitaryField::Rank),
    Field::Military(MilitaryField::CallSign),
    Field::Disappearance(DisappearanceField::Place),
];
const WORDS: [&str; 12] = [
    "near", "Izium", "Bakhmut", "the", "brigade", "radio", "last", "call", "seen", "field",
    "March", "comrade",
];

/// One random edit of the kinds relatives make.
fn random_edit(rng: &mut StdRng, doc: &Automerge, device: usize, items: &mut Vec<String>) -> Edit {
    let word = |rng: &mut StdRng| WORDS[rng.below(0, WORDS.len())];
    let roll = rng.below(0, 100);
    if roll < 40 {
        let field = REGISTERS[rng.below(0, REGISTERS.len())];
        Edit::SetField {
            field,
            value: FieldValue::Str(format!("{} {}", word(rng), rng.below(0, 1000))),
        }
    } else if roll < 80 {
        let field = Field::Disappearance(DisappearanceField::Circumstances);
        let len = doc
            .get(automerge::ROOT, "disappearance")
            .ok()
            .flatten()
            .and_then(|(_, section)| doc.get(&section, "circumstances").ok().flatten())
            .map_or(0, |(_, text)| doc.length(&text));
        let pos = rng.below(0, len + 1);
        let delete = if len > pos + 5 && rng.chance(30) {
            rng.below(1, 5)
        } else {
            0
        };
        Edit::SpliceText {
            field,
            pos,
            delete,
            insert: format!("{} {} ", word(rng), word(rng)),
        }
    } else if roll < 90 || items.is_empty() {
        let id = format!("d{device}i{}", items.len());
        items.push(id.clone());
        Edit::AddItem {
            item: ItemRef::new(Collection::Timeline, ItemId::new(id).unwrap()),
            values: vec![(
                ItemField::Timeline(TimelineField::Title),
                FieldValue::Str(word(rng).to_owned()),
            )],
        }
    } else {
        let id = items[rng.below(0, items.len())].clone();
        Edit::SetItemField {
            item: ItemRef::new(Collection::Timeline, ItemId::new(id).unwrap()),
            field: ItemField::Timeline(TimelineField::Place),
            value: FieldValue::Str(word(rng).to_owned()),
        }
    }
}

struct Bench {
    router: axum::Router,
    token: String,
    /// `HISTORY_BENCH_ONLY`: time only the queries whose name contains it
    /// (for a profiler), and skip the rest.
    only: Option<String>,
    /// Warm runs of each query (`HISTORY_BENCH_RUNS`, [`RUNS`] by default).
    runs: usize,
}

impl Bench {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, usize) {
        let (status, bytes) = self.call_raw(method, path, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            bytes.len(),
        )
    }

    /// The status and the whole body, unparsed: what the timings measure
    /// (parsing a megabyte of JSON is the client's time, not the server's).
    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, axum::body::Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes)
    }

    /// The first run, then the median and the slowest of [`RUNS`] more.
    async fn time(&self, what: &str, path: &str) -> Value {
        if self
            .only
            .as_ref()
            .is_some_and(|only| !what.contains(only.as_str()))
        {
            return Value::Null;
        }
        let start = Instant::now();
        let (status, bytes) = self.call_raw("GET", path, None).await;
        let first = start.elapsed();
        let len = bytes.len();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        let mut runs = Vec::new();
        for _ in 0..self.runs {
            let start = Instant::now();
            let (status, _) = self.call_raw("GET", path, None).await;
            runs.push(start.elapsed());
            assert_eq!(status, StatusCode::OK);
        }
        runs.sort();
        println!(
            "{what:<44} first {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  ({} KiB)",
            ms(first),
            ms(runs[runs.len() / 2]),
            ms(runs[runs.len() - 1]),
            len / 1024
        );
        body
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Creates the case through the API, then has `devices` phones edit it
/// offline in turns and deliver, `total` changes in all; each delivery is
/// merged by the document actor with that phone's provenance. Returns the
/// case's URL once the log holds every change.
async fn build_case(state: &AppState, bench: &Bench, total: usize, devices: usize) -> String {
    let (status, created, _) = bench
        .call("POST", "/api/cases", Some(serde_json::json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let url = created["id"].as_str().unwrap().to_owned();
    let case = DocumentId::parse_url_or_id(&url).unwrap();
    let base = format!("/api/cases/{url}");
    let build = Instant::now();
    let mut spent = [Duration::ZERO; 4];
    let server_copy = state.inner.docs.read(case).await.unwrap();
    // Every change delivered so far, in order; each phone applies the ones
    // after its cursor, so catching up never walks the whole history.
    let mut delivered_all: Vec<automerge::Change> = server_copy.get_changes(&[]);
    let mut cursors = vec![delivered_all.len(); devices];
    let mut phones: Vec<Automerge> = (0..devices)
        .map(|i| {
            let mut actor = [0u8; 16];
            actor[0] = i as u8 + 1;
            server_copy.fork().with_actor(ActorId::from(actor))
        })
        .collect();
    let mut items: Vec<Vec<String>> = vec![Vec::new(); devices];
    let mut rng = StdRng::seed_from_u64(6);
    let mut made = delivered_all.len();
    let mut clock_ms = 1_700_000_000_000i64;
    while made < total {
        for (i, phone) in phones.iter_mut().enumerate() {
            if made >= total {
                break;
            }
            // Catch up with what the others delivered, then edit offline.
            let t = Instant::now();
            phone
                .apply_changes(delivered_all[cursors[i]..].to_vec())
                .unwrap();
            cursors[i] = delivered_all.len();
            spent[0] += t.elapsed();
            let t = Instant::now();
            let mut hashes = Vec::new();
            for _ in 0..BATCH.min(total - made) {
                clock_ms += 1_000;
                let edit = random_edit(&mut rng, phone, i, &mut items[i]);
                if let Some(h) =
                    model::apply_edit(phone, &edit, &format!("relative{i}"), clock_ms).unwrap()
                {
                    hashes.push(h);
                    made += 1;
                }
            }
            spent[1] += t.elapsed();
            let t = Instant::now();
            let changes: Vec<automerge::Change> = hashes
                .iter()
                .map(|h| phone.get_change_by_hash(h).unwrap())
                .collect();
            spent[2] += t.elapsed();
            let t = Instant::now();
            let provenance = Provenance {
                user: format!("relative{i}"),
                device: "phone".to_owned(),
            };
            let delivery = changes
                .iter()
                .map(|c| {
                    (
                        c.raw_bytes().to_vec(),
                        provenance.clone(),
                        clock_ms + 3_600_000,
                    )
                })
                .collect();
            state
                .inner
                .docs
                .merge(case, delivery)
                .await
                .unwrap()
                .unwrap();
            delivered_all.extend(changes);
            cursors[i] = delivered_all.len();
            spent[3] += t.elapsed();
        }
    }
    // Wait until the log holds every change.
    loop {
        let (_, page, _) = bench
            .call("GET", &format!("{base}/history?doc=case&limit=1"), None)
            .await;
        if page["total"].as_u64().unwrap_or(0) as usize >= made {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text_len = model::read_case(&phones[0])
        .ok()
        .and_then(|c| c.disappearance.circumstances)
        .map_or(0, |t| t.chars().count());
    println!(
        "built a case with {made} changes from {devices} devices in {:.1} s \
         (catching up {:.1} s, editing {:.1} s, taking changes {:.1} s, server merge {:.1} s; \
         circumstances: {text_len} characters, {} timeline items)",
        build.elapsed().as_secs_f64(),
        spent[0].as_secs_f64(),
        spent[1].as_secs_f64(),
        spent[2].as_secs_f64(),
        spent[3].as_secs_f64(),
        items.iter().map(Vec::len).sum::<usize>(),
    );
    url
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = env("HISTORY_BENCH_CHANGES", 20_000);
    let devices = env("HISTORY_BENCH_DEVICES", 8);
    // HISTORY_BENCH_DIR keeps the data directory, and a second run reuses
    // the case instead of building it again.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = std::env::var_os("HISTORY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("data"));
    let config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), data_dir.clone());
    let state = AppState::open(config).await.unwrap();
    let keys = DevKeys::load_or_create(&data_dir).unwrap();
    let now = casesync_server::auth::unix_now();
    let token = mint_token(
        &keys,
        &UserId::new("bench-admin").unwrap(),
        &DeviceId::new("laptop").unwrap(),
        Role::Admin,
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let bench = Bench {
        router: app(state.clone()),
        token,
        only: std::env::var("HISTORY_BENCH_ONLY").ok(),
        runs: env("HISTORY_BENCH_RUNS", RUNS).max(1),
    };

    let marker = data_dir.join("bench-case-url");
    let url = match std::fs::read_to_string(&marker) {
        Ok(url) => {
            println!("reusing the case in {}", data_dir.display());
            url
        }
        Err(_) => {
            let url = build_case(&state, &bench, total, devices).await;
            std::fs::write(&marker, &url).unwrap();
            url
        }
    };
    let base = format!("/api/cases/{url}");
    let (_, page, _) = bench
        .call("GET", &format!("{base}/history?doc=case&limit=1"), None)
        .await;
    let made = page["total"].as_u64().unwrap() as usize;

    // Positions in the log to look at.
    let newest = bench
        .time(
            "change list, first page (50, newest first)",
            &format!("{base}/history?order=desc"),
        )
        .await;
    bench
        .time(
            "change list, first page (50, oldest first)",
            &format!("{base}/history"),
        )
        .await;
    let hash_at = |position: usize| {
        let b = &bench;
        let base = base.clone();
        async move {
            let after = position.saturating_sub(1);
            let (_, page, _) = b
                .call(
                    "GET",
                    &format!("{base}/history?doc=case&limit=1&after={after}"),
                    None,
                )
                .await;
            page["changes"][0]["hash"].as_str().unwrap().to_owned()
        }
    };
    // Log positions are global; the case's are 1..=made plus the
    // coordination document's one or two.
    let middle = hash_at(made / 2).await;
    let early = hash_at(made / 10).await;
    let near = hash_at(made / 2 + 100).await;
    assert!(newest.is_null() || newest["changes"].as_array().is_some_and(|c| c.len() == 50));
    bench
        .time(
            "case at a change (middle, server view)",
            &format!("{base}/at/{middle}"),
        )
        .await;
    bench
        .time(
            "case at a change (middle, author view)",
            &format!("{base}/at/{middle}?view=author"),
        )
        .await;
    bench
        .time(
            "diff, 100 changes apart (middle)",
            &format!("{base}/diff?from={middle}&to={near}"),
        )
        .await;
    bench
        .time(
            "diff, 10% to 50% of the history",
            &format!("{base}/diff?from={early}&to={middle}"),
        )
        .await;
    bench
        .time("diff, middle to now", &format!("{base}/diff?from={middle}"))
        .await;
    bench.time("conflicts", &format!("{base}/conflicts")).await;
    bench
        .time(
            "blame of the circumstances",
            &format!("{base}/blame?path=disappearance.circumstances"),
        )
        .await;

    if bench.only.is_some() {
        return;
    }
    // Where the time goes: the pieces of those requests, one by one.
    {
        let case = DocumentId::parse_url_or_id(&url).unwrap();
        let step = |what: &str, t: Instant| println!("  {what:<42} {:>7.1} ms", ms(t.elapsed()));
        let t = Instant::now();
        let doc = state.inner.docs.read(case).await.unwrap();
        step("Docs::read (a copy of the document)", t);
        let h = |s: &str| s.parse::<automerge::ChangeHash>().unwrap();
        let (mid, near) = (h(&middle), h(&near));
        let t = Instant::now();
        let snapshot = sync_core::history::Snapshot::read(&doc, Some(&[mid])).unwrap();
        step("history::Snapshot::read at a change", t);
        let t = Instant::now();
        let _ = snapshot.to_json();
        step("  its JSON", t);
        let t = Instant::now();
        let _ = snapshot.conflicts(&doc);
        step("  its conflicts", t);
        let t = Instant::now();
        let _ = sync_core::view::to_json(&doc, Some(&[mid]));
        step("view::to_json at a change (for comparison)", t);
        let t = Instant::now();
        let _ = model::conflicts_at(&doc, &[mid]);
        step("model::conflicts_at a change", t);
        let t = Instant::now();
        let _ = model::conflicts(&doc);
        step("model::conflicts now", t);
        let t = Instant::now();
        let _ = sync_core::history::difference(&doc, &[mid], &[near]);
        step("history::difference (100 apart)", t);
        let t = Instant::now();
        let _ = doc.diff(&[mid], &[near]);
        step("  automerge's diff alone", t);
        let t = Instant::now();
        let spans =
            sync_core::history::blame(&doc, None, &["disappearance", "circumstances"]).unwrap();
        step(
            &format!(
                "history::blame of the circumstances ({} spans)",
                spans.len()
            ),
            t,
        );
        let t = Instant::now();
        for s in spans.iter().take(1000) {
            if let Some(h) = s.change {
                let _ = doc.get_change_meta_by_hash(&h);
            }
        }
        step("  1000 change metadata lookups", t);
        let t = Instant::now();
        let n = doc.get_changes_meta(&[]).len();
        step(&format!("  all change metadata at once ({n})"), t);
        let early = h(&early);
        let t = Instant::now();
        let _ = doc.diff(&[early], &[mid]);
        step("automerge's diff, 10% to 50%", t);
        let t = Instant::now();
        let _ = sync_core::history::difference(&doc, &[early], &[mid]);
        step("history::difference, 10% to 50%", t);
        let now = doc.get_heads();
        let t = Instant::now();
        let patches = sync_core::history::diff_patches(&doc, &[mid], &now).unwrap();
        step(
            &format!(
                "automerge's diff, middle to now ({} patches)",
                patches.len()
            ),
            t,
        );
        let t = Instant::now();
        let before = sync_core::history::PointReading::read(&doc, &[mid]).unwrap();
        step("  history::PointReading::read, middle", t);
        let t = Instant::now();
        let after = sync_core::history::PointReading::read(&doc, &now).unwrap();
        step("  history::PointReading::read, now", t);
        let t = Instant::now();
        let d =
            sync_core::history::difference_with(&doc, &[mid], &now, patches, Some((before, after)))
                .unwrap();
        step(&format!("  the readable lines ({})", d.lines.len()), t);
        let t = Instant::now();
        let mut out = Vec::new();
        sync_core::history::write_patches_json(&d.patches, &mut out);
        step(
            &format!("  the patches as JSON ({} KiB)", out.len() / 1024),
            t,
        );
        let t = Instant::now();
        let _ = sync_core::history::difference(&doc, &[mid], &now);
        step("history::difference, middle to now", t);
    }

    // Cold: the document unloaded, the first request loads it from storage.
    let restart = Instant::now();
    state.begin_shutdown();
    drop(bench);
    let store = state.inner.store.clone();
    drop(state);
    store.shutdown().await.unwrap();
    let config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), data_dir.clone());
    let state = AppState::open(config).await.unwrap();
    let token = mint_token(
        &keys,
        &UserId::new("bench-admin").unwrap(),
        &DeviceId::new("laptop").unwrap(),
        Role::Admin,
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let bench = Bench {
        router: app(state.clone()),
        token,
        only: None,
        runs: RUNS,
    };
    println!("restarted in {:.1} ms", ms(restart.elapsed()));
    bench
        .time(
            "after a restart: change list, first page",
            &format!("{base}/history?order=desc"),
        )
        .await;
}
