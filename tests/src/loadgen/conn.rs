//! Dialing the server: plain `ws://`, a small read buffer (10,000 sockets
//! must fit in the generator too), and a counter of the bytes that really
//! cross the socket (HTTP upgrade, WebSocket framing and payload).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use super::LoadError;

/// A failure guard for connect plus upgrade; generous, because a storm of
/// a thousand connects overflows the accept queue and SYNs are retried
/// after a second or more.
const DIAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes received and sent on one device's sockets, over all its
/// connections, and the protocol messages (binary frames) among them.
#[derive(Debug, Default)]
pub struct Counters {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
    pub frames_rx: AtomicU64,
    pub frames_tx: AtomicU64,
}

impl Counters {
    pub fn rx(&self) -> u64 {
        self.rx.load(Ordering::Relaxed)
    }

    pub fn tx(&self) -> u64 {
        self.tx.load(Ordering::Relaxed)
    }

    pub fn frames_rx(&self) -> u64 {
        self.frames_rx.load(Ordering::Relaxed)
    }

    pub fn frames_tx(&self) -> u64 {
        self.frames_tx.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.rx.store(0, Ordering::Relaxed);
        self.tx.store(0, Ordering::Relaxed);
        self.frames_rx.store(0, Ordering::Relaxed);
        self.frames_tx.store(0, Ordering::Relaxed);
    }
}

/// A stream that counts what goes through it.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let n = buf.filled().len().saturating_sub(before);
            self.counters.rx.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            self.counters.tx.fetch_add(*n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub type Ws = WebSocketStream<Counted<TcpStream>>;

/// `host:port` of a `ws://host:port/path` URL.
pub fn host_port(url: &str) -> Result<&str, LoadError> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| LoadError::other(format!("{url}: only ws:// URLs are supported")))?;
    let host = rest.split('/').next().unwrap_or(rest);
    if host.is_empty() {
        return Err(LoadError::other(format!("{url}: no host")));
    }
    Ok(host)
}

/// Opens a WebSocket to `url`, with `Authorization: Bearer` when a token
/// is given.
pub async fn dial(
    url: &str,
    token: Option<&str>,
    counters: Arc<Counters>,
) -> Result<Ws, LoadError> {
    let addr = host_port(url)?;
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(LoadError::io(format!("connect to {addr}")))?;
        tcp.set_nodelay(true)
            .map_err(LoadError::io("TCP_NODELAY"))?;
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| LoadError::other(format!("token is not a header value: {e}")))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(8 * 1024)
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let stream = Counted {
            inner: tcp,
            counters,
        };
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        Ok::<Ws, LoadError>(ws)
    };
    tokio::time::timeout(DIAL_TIMEOUT, attempt)
        .await
        .map_err(|_| LoadError::Timeout {
            what: format!("dialing {url}"),
            secs: DIAL_TIMEOUT.as_secs_f64(),
        })?
}
