//! A minimal HTTP/1.1 responder for `GET /metrics`: enough for Prometheus, curl and a
//! browser, and no more (one request per connection, no keep-alive, no request bodies, no
//! framework). It runs over the same [`Listener`] trait as MQTT.
//!
//! Everything is bounded: the request head (8 KiB), the time a connection may take from
//! accept to the last byte of the answer, the connections served at once (beyond that a socket
//! is closed at once), and the wait for the broker's answer (503 after it). Scrapes within a
//! second of each other share one snapshot, so scraping in a loop cannot take the core's time
//! (a snapshot walks every session).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

use super::{Listener, Probe};
use crate::metrics::prometheus::{encode, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use crate::metrics::Snapshot;

/// The request line and headers may take this much at most.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A client has this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const CONNECTIONS_MAX: usize = 16;
/// How long a scrape waits for the broker task to answer.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's whole life, from accept to the last byte written: a client that does not
/// read the answer gives its slot back after this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one snapshot serves every scrape.
const SNAPSHOT_REUSE: Duration = Duration::from_secs(1);

/// The last answer (a snapshot, or none: the broker did not answer in time) and when it came,
/// shared by the scrapes; the lock also makes concurrent scrapes wait for one answer instead
/// of each asking for its own.
type SnapshotCache = tokio::sync::Mutex<Option<(tokio::time::Instant, Option<Arc<Snapshot>>)>>;

pub(super) struct MetricsResponder<L> {
    pub listener: L,
    pub probe: Probe,
    pub shutdown: watch::Receiver<bool>,
}

impl<L: Listener> MetricsResponder<L> {
    pub async fn run(mut self) {
        let serving = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        let cache = Arc::new(SnapshotCache::default());
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.shutdown.changed() => return,
                accepted = self.listener.accept() => accepted,
            };
            let Ok((stream, peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = serving.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "metrics: too many connections, closing");
                continue;
            };
            let probe = self.probe.clone();
            let cache = cache.clone();
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(CONNECTION_TIMEOUT, serve(stream, &probe, &cache)).await;
                drop(permit);
            });
        }
    }
}

/// Answers one request and closes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    probe: &Probe,
    cache: &SnapshotCache,
) {
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Err(_) | Ok(Err(ReadError::Closed)) => return,
        Ok(Err(ReadError::TooLarge)) => Response::error(431, "request head too large"),
        Ok(Ok(head)) => match parse(&head) {
            Ok(request) => respond(&request, probe, cache).await,
            Err(response) => response,
        },
    };
    let _ = stream.write_all(&response.to_bytes()).await;
    let _ = stream.shutdown().await;
}

enum ReadError {
    Closed,
    TooLarge,
}

/// Reads up to the blank line that ends the head.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, ReadError> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|_| ReadError::Closed)?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Err(ReadError::TooLarge);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// HEAD: the headers of GET without the body.
    head_only: bool,
    /// The scraper accepts OpenMetrics text (Prometheus asks for it first).
    openmetrics: bool,
}

/// The request line and the Accept header; an error response for anything else than
/// `GET`/`HEAD` on `/metrics`.
fn parse(head: &[u8]) -> Result<Request, Response> {
    let text = std::str::from_utf8(head).map_err(|_| Response::error(400, "not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::error(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::error(505, "HTTP/1.x only"));
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Err(Response::error(
            404,
            "not found: the metrics are at /metrics",
        ));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Response::error(405, "GET or HEAD only")),
    };
    let openmetrics = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("accept") && value.contains("application/openmetrics-text")
        })
    });
    Ok(Request {
        head_only,
        openmetrics,
    })
}

async fn respond(request: &Request, probe: &Probe, cache: &SnapshotCache) -> Response {
    let Some(snapshot) = snapshot(probe, cache).await else {
        return Response::error(503, "the broker did not answer");
    };
    let content_type = if request.openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        PROMETHEUS_CONTENT_TYPE
    };
    Response {
        status: 200,
        content_type,
        body: encode(&snapshot, request.openmetrics),
        head_only: request.head_only,
    }
}

/// A snapshot at most [`SNAPSHOT_REUSE`] old, within twice [`SAMPLE_TIMEOUT`] (waiting for
/// the lock included). A broker that did not answer is not asked again for a second either: the
/// scrapes queued behind the failed one get their 503 at once.
async fn snapshot(probe: &Probe, cache: &SnapshotCache) -> Option<Arc<Snapshot>> {
    let ask = async {
        let mut cached = cache.lock().await;
        if let Some((at, answer)) = cached.as_ref() {
            if at.elapsed() < SNAPSHOT_REUSE {
                return answer.clone();
            }
        }
        let answer = tokio::time::timeout(SAMPLE_TIMEOUT, probe.snapshot())
            .await
            .ok()
            .flatten()
            .map(Arc::new);
        *cached = Some((tokio::time::Instant::now(), answer.clone()));
        answer
    };
    // Room for the one ahead in the queue to fail (and cache its failure) and for this one.
    tokio::time::timeout(SAMPLE_TIMEOUT * 2, ask)
        .await
        .ok()
        .flatten()
}

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Response {
    fn error(status: u16, why: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{why}\n"),
            head_only: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Error",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut bytes = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &str) -> u16 {
        match parse(head.as_bytes()) {
            Ok(_) => 200,
            Err(response) => response.status,
        }
    }

    #[test]
    fn only_get_and_head_on_metrics_are_served() {
        assert_eq!(status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("GET /metricsX HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("POST /metrics HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("GET /metrics SPDY/3\r\n\r\n"), 505);
        assert_eq!(status("GET\r\n\r\n"), 400);
        assert_eq!(status("\u{0}\u{1}\r\n\r\n"), 400);
        let head = parse(b"HEAD /metrics HTTP/1.1\r\n\r\n").unwrap();
        assert!(head.head_only);
    }

    #[test]
    fn openmetrics_is_chosen_when_the_scraper_accepts_it() {
        let prometheus = "GET /metrics HTTP/1.1\r\nACCEPT: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4\r\n\r\n";
        assert!(parse(prometheus.as_bytes()).unwrap().openmetrics);
        assert!(
            !parse(b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n")
                .unwrap()
                .openmetrics
        );
    }

    /// Scrapes in a loop cost the core one snapshot a second, not one each.
    #[tokio::test]
    async fn scrapes_within_a_second_share_one_snapshot() {
        let (requests, mut asked) = tokio::sync::mpsc::channel(4);
        let probe = Probe { requests };
        let answered = tokio::spawn(async move {
            let mut count = 0;
            while let Some(reply) = asked.recv().await {
                count += 1;
                let _ = reply.send(Snapshot::default());
            }
            count
        });
        let cache = SnapshotCache::default();
        for _ in 0..5 {
            assert!(snapshot(&probe, &cache).await.is_some());
        }
        // A second later (made so, not waited for) the next scrape asks again.
        if let Some((at, _)) = cache.lock().await.as_mut() {
            *at = at.checked_sub(SNAPSHOT_REUSE).unwrap();
        }
        assert!(snapshot(&probe, &cache).await.is_some());
        drop(probe);
        assert_eq!(answered.await.unwrap(), 2);
    }

    #[test]
    fn head_responses_have_the_length_but_no_body() {
        let response = Response {
            status: 200,
            content_type: PROMETHEUS_CONTENT_TYPE,
            body: "abc".into(),
            head_only: true,
        };
        let text = String::from_utf8(response.to_bytes()).unwrap();
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let allowed = String::from_utf8(Response::error(405, "x").to_bytes()).unwrap();
        assert!(allowed.contains("Allow: GET, HEAD\r\n"));
    }
}
