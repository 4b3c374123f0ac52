//! What a listener's raw byte stream becomes before MQTT is read from it: plain, TLS,
//! WebSocket, or WebSocket over TLS. After [`upgrade`] every kind is one [`MqttStream`], and
//! the connection task reads and writes it like a socket.
//!
//! WebSocket (MQTT section 6): HTTP upgrade on one path (`/mqtt` unless configured), the
//! `mqtt` subprotocol (`mqttv3.1` accepted too) chosen, MQTT in binary frames; a packet may
//! span frames and a frame may hold several packets, since the stream just concatenates frame
//! payloads. A wrong path is answered 404, a missing subprotocol 400, a text frame closes the
//! connection ([MQTT-6.0.0-1]). The handshake may read at most [`HANDSHAKE_BYTES_MAX`].
//!
//! Everything here is generic over the raw stream, so the simulation runs the same WebSocket
//! framing over turmoil's streams (scenario option `broker: { websocket: true }`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bytes the WebSocket upgrade request may take (a browser's is well under 4 KiB): a client
/// sending endless headers is cut off instead of growing a buffer.
pub const HANDSHAKE_BYTES_MAX: usize = 16 * 1024;

/// The WebSocket subprotocols MQTT clients ask for, preferred first.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A value shared between the driver and whoever reloads it (SIGHUP): readers take the
/// current `Arc`, a reload swaps it; connections keep what they took.
#[derive(Debug)]
pub struct Reloadable<T>(RwLock<Arc<T>>);

impl<T> Reloadable<T> {
    pub fn new(value: Arc<T>) -> Arc<Reloadable<T>> {
        Arc::new(Reloadable(RwLock::new(value)))
    }

    pub fn current(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// How a listener's connections are carried.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// TLS first (8883, 8084).
    pub tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    /// Then an HTTP upgrade to WebSocket on this path (8083, 8084).
    pub websocket_path: Option<String>,
}

impl Transport {
    /// A short name for logs: mqtt, mqtts, ws, wss.
    pub fn scheme(&self) -> &'static str {
        match (self.tls.is_some(), self.websocket_path.is_some()) {
            (false, false) => "mqtt",
            (true, false) => "mqtts",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }
}

/// An MQTT byte stream over any transport.
pub enum MqttStream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    WebSocket(Box<WsStream<Limited<S>>>),
    SecureWebSocket(Box<WsStream<Limited<TlsStream<S>>>>),
}

/// Runs the TLS handshake and the WebSocket upgrade `transport` asks for. Returns the stream
/// and the identity of a verified client certificate. The caller bounds the time it takes.
pub async fn upgrade<S>(
    stream: S,
    transport: &Transport,
    message_bytes_max: usize,
) -> io::Result<(MqttStream<S>, Option<String>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = &transport.tls else {
        return match &transport.websocket_path {
            None => Ok((MqttStream::Plain(stream), None)),
            Some(path) => {
                let ws = websocket(stream, path, message_bytes_max).await?;
                Ok((MqttStream::WebSocket(Box::new(ws)), None))
            }
        };
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let stream = acceptor.accept(stream).await?;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(super::tls::identity);
    match &transport.websocket_path {
        None => Ok((MqttStream::Tls(Box::new(stream)), identity)),
        Some(path) => {
            let ws = websocket(stream, path, message_bytes_max).await?;
            Ok((MqttStream::SecureWebSocket(Box::new(ws)), identity))
        }
    }
}

/// The server side of the WebSocket upgrade.
async fn websocket<S>(
    stream: S,
    path: &str,
    message_bytes_max: usize,
) -> io::Result<WsStream<Limited<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limited = Limited {
        inner: stream,
        left: Some(HANDSHAKE_BYTES_MAX),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(message_bytes_max))
        .max_frame_size(Some(message_bytes_max));
    // The handshake callback's signature (tungstenite's) has the large error type.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, response: Response| check_upgrade(request, response, path);
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(limited, check, Some(config))
        .await
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WebSocket upgrade: {e}"),
            )
        })?;
    ws.get_mut().left = None;
    Ok(WsStream {
        inner: ws,
        unread: Bytes::new(),
    })
}

/// The client side of MQTT over WebSocket, for tests and the simulation: upgrades `stream`
/// with a request for `ws://{host}{path}` asking for the `mqtt` subprotocol.
pub async fn websocket_client<S>(stream: S, host: &str, path: &str) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let invalid =
        |e: tokio_tungstenite::tungstenite::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut request = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(invalid)?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("mqtt"),
    );
    let (inner, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(invalid)?;
    Ok(WsStream {
        inner,
        unread: Bytes::new(),
    })
}

/// Accepts the upgrade only on `path` and with an MQTT subprotocol, which it names in the
/// response.
#[allow(clippy::result_large_err)] // the handshake callback's signature
fn check_upgrade(
    request: &Request,
    mut response: Response,
    path: &str,
) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: String| {
        let mut error = ErrorResponse::new(Some(why));
        *error.status_mut() = status;
        error
    };
    if request.uri().path() != path {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("MQTT over WebSocket is served on {path}\n"),
        ));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .collect();
    let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "MQTT over WebSocket needs the subprotocol \"mqtt\" (Sec-WebSocket-Protocol)\n".into(),
        ));
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok(response)
}

/// A stream that fails reads after `left` bytes, while `left` is set (the handshake).
pub struct Limited<S> {
    inner: S,
    left: Option<usize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        if let Some(left) = &mut self.left {
            match left.checked_sub(read) {
                Some(rest) => *left = rest,
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("WebSocket upgrade request over {HANDSHAKE_BYTES_MAX} bytes"),
                    )))
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// MQTT bytes over WebSocket messages: reads concatenate binary frames; writes send one
/// binary frame per MQTT packet. One frame holding several packets is valid MQTT, but Paho C
/// (1.3) reads only the first of them over plain WebSocket until more bytes arrive, so a
/// PUBACK batched behind a PUBLISH would wait for the next keep-alive (and a packet split over
/// several frames stalls it the same way); Mosquitto also sends a frame per packet.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The rest of the last binary message, not read yet.
    unread: Bytes,
}

fn ws_error(error: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(error)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                buf.put_slice(&self.unread.split_to(n));
                return Poll::Ready(Ok(()));
            }
            // Pings are answered by tungstenite itself (on this poll or the next write).
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => self.unread = data,
                Some(Ok(Message::Text(_))) => {
                    // spec: [MQTT-6.0.0-1]: MQTT goes in binary frames only.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a WebSocket text frame: MQTT must use binary frames",
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(ws_error(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut written = 0;
        while written < buf.len() {
            let rest = &buf[written..];
            // Not a whole packet at the front (never from the connection task, which writes
            // whole packets): send what there is as it is.
            let len = crate::codec::packet_len(rest).unwrap_or(rest.len());
            match Sink::<Message>::poll_ready(Pin::new(&mut self.inner), cx) {
                Poll::Ready(ready) => ready.map_err(ws_error)?,
                Poll::Pending if written > 0 => break,
                Poll::Pending => return Poll::Pending,
            }
            Pin::new(&mut self.inner)
                .start_send(Message::Binary(Bytes::copy_from_slice(&rest[..len])))
                .map_err(ws_error)?;
            written += len;
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_flush(Pin::new(&mut self.inner), cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_close(Pin::new(&mut self.inner), cx).map_err(ws_error)
    }
}

/// Delegates to whichever stream it is.
macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self.get_mut() {
            MqttStream::Plain($s) => $body,
            MqttStream::Tls($s) => $body,
            MqttStream::WebSocket($s) => $body,
            MqttStream::SecureWebSocket($s) => $body,
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MqttStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MqttStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
