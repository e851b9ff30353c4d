//! Liveness of sync sockets: a device that vanishes without closing is
//! dropped after `idle_timeout` of silence, even while its case is busy and
//! the server has much to send it, and a device that answers the server's
//! pings stays connected however long it has nothing to say.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::distr::{Alphanumeric, SampleString};
use rand::SeedableRng;
use support::{EngineDevice, TestServer};
use sync_core::ids::DocumentId;
use sync_core::model::{Edit, Field, FieldValue, MilitaryField};

// Short, so the tests are quick, but with room for a loaded CI machine:
// a device that answers has 15 pings' time to be heard.
const PING_EVERY: Duration = Duration::from_millis(200);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

async fn quick_pings() -> TestServer {
    quick_pings_paced(casesync_server::docs::DocsConfig::default().reply_wait).await
}

/// `reply_wait` short enough that a case sends a device each step though
/// it never answers: what a connection with many busy cases gets.
async fn quick_pings_paced(reply_wait: Duration) -> TestServer {
    TestServer::start_with(|c| {
        c.ping_interval = PING_EVERY;
        c.idle_timeout = IDLE_TIMEOUT;
        c.reply_wait = reply_wait;
    })
    .await
}

/// Waits until the server counts `open` sync connections; panics after
/// `within`.
async fn wait_for_connections(server: &TestServer, open: f64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now_open = server.metric("casesync_connections").await;
        if now_open == open {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {now_open} open connections, expected {open}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_vanishes_without_closing_is_dropped() {
    let server = quick_pings().await;
    let token = server.token("olena", "phone");
    // Connected, then silent: it reads nothing, so it answers no ping, and
    // the server's pings pile up unread in the socket's buffers.
    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url(&token))
        .await
        .expect("WebSocket upgrade");
    wait_for_connections(&server, 1.0, Duration::from_secs(5)).await;
    // Idle timeout, a ping tick, up to a second of ping phase and the
    // close handshake's linger all fit well within this bound; before the
    // fix, the server's own pings kept the socket alive for good.
    wait_for_connections(&server, 0.0, Duration::from_secs(30)).await;
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_answers_pings_stays_connected() {
    let server = quick_pings().await;
    let token = server.token("olena", "phone");
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url(&token))
        .await
        .expect("WebSocket upgrade");
    // Reading is what makes tungstenite answer pings; the device sends
    // nothing else.
    let pings = Arc::new(AtomicUsize::new(0));
    let counted = pings.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_ping() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    wait_for_connections(&server, 1.0, Duration::from_secs(5)).await;
    // Several idle timeouts of silence from the device's side.
    tokio::time::sleep(IDLE_TIMEOUT * 3).await;
    assert_eq!(server.metric("casesync_connections").await, 1.0);
    assert!(
        !reader.is_finished(),
        "the server closed a device that answered its pings"
    );
    // The server did ping it (and so it did answer): the first ping comes
    // within a second and a tick, then one every tick.
    assert!(pings.load(Ordering::SeqCst) >= 3, "pings: {pings:?}");
    reader.abort();
}

/// A phone and a tablet of one user, both synced with a new case.
struct TwoDevices {
    server: TestServer,
    case: DocumentId,
    phone: EngineDevice,
    /// Never read again: it stands for a device that vanished.
    _tablet: EngineDevice,
}

async fn phone_and_tablet_on_a_case(server: TestServer) -> TwoDevices {
    let (case, phone, tablet) = support::phone_and_tablet_on_a_new_case(&server).await;
    wait_for_connections(&server, 2.0, Duration::from_secs(5)).await;
    TwoDevices {
        server,
        case,
        phone,
        _tablet: tablet,
    }
}

fn unit(value: &str) -> Edit {
    Edit::SetField {
        field: Field::Military(MilitaryField::Unit),
        value: FieldValue::Str(value.into()),
    }
}

/// The phone makes rounds of edits (`round` returns the round's edits,
/// then the phone waits for their acknowledgement) until the server has
/// dropped the tablet; panics if that takes more than `within`. Then
/// checks the phone, which reads, is still connected and served.
async fn edit_until_the_tablet_is_dropped(
    d: &mut TwoDevices,
    within: Duration,
    mut round: impl FnMut(usize) -> Vec<Edit>,
    pause: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut edits = 0;
    while d.server.metric("casesync_connections").await > 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a device that read nothing for {within:?} (idle timeout {IDLE_TIMEOUT:?}) is still connected after {edits} edits to its case"
        );
        for edit in round(edits) {
            d.phone.edit(d.case, &edit);
            edits += 1;
        }
        d.phone.wait_acknowledged(d.case).await;
        tokio::time::sleep(pause).await;
    }
    assert_eq!(d.server.metric("casesync_connections").await, 1.0);
    d.phone.edit(d.case, &unit("after the tablet left"));
    d.phone.wait_acknowledged(d.case).await;
    assert_eq!(d.server.metric("casesync_connections").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_a_busy_case_is_dropped() {
    // The case does not wait for the tablet's answers (pacing) more than
    // a millisecond: this is the queue of a connection with many cases.
    let mut d = phone_and_tablet_on_a_case(quick_pings_paced(Duration::from_millis(1)).await).await;
    // From here on the tablet reads nothing, as if it had vanished, while
    // the phone keeps its case busy. Each edit is a 4,000-byte value (a
    // register takes up to 4,096) that does not compress, and the server
    // sends every one on to the tablet: its writes first fill the socket's
    // buffers, then block, and then the connection's queue fills. Before
    // the fix, the connection's task then waited for room in its queue for
    // good, never reaching its idle check: the tablet stayed connected
    // until TCP gave up, about 15 minutes later.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let big = |_| {
        (0..16)
            .map(|_| unit(&Alphanumeric.sample_string(&mut rng, 4000)))
            .collect()
    };
    edit_until_the_tablet_is_dropped(&mut d, Duration::from_secs(60), big, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_a_quiet_case_is_dropped() {
    let mut d = phone_and_tablet_on_a_case(quick_pings().await).await;
    // The tablet reads nothing more; the phone makes a small edit now and
    // then, which the server sends on to the tablet. Those few bytes fit
    // in the socket's buffers, read or not, so the writes complete at
    // once: before the fix each counted as the tablet being alive, and it
    // stayed connected as long as the case had traffic.
    let small = |n: usize| vec![unit(&format!("unit {n}"))];
    edit_until_the_tablet_is_dropped(
        &mut d,
        Duration::from_secs(30),
        small,
        Duration::from_millis(300),
    )
    .await;
}
