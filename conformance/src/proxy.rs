//! A fault-injecting TCP proxy on loopback, for real network loss with real clients.
//!
//! Clients connect to the proxy instead of the broker. The proxy forwards bytes both ways
//! until told to `stall` (bytes are read and dropped, as on a network that vanished: neither
//! side sees an end) or to `sever` (every current connection is reset: no FIN, no DISCONNECT).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    stalled: AtomicBool,
    /// Connections opened before the latest sever are reset.
    generation: AtomicU64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    changed: watch::Sender<()>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let (changed, _) = watch::channel(());
        let accept_state = state.clone();
        let accept_changed = changed.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let generation = accept_state.generation.load(Ordering::SeqCst);
                tokio::spawn(relay(
                    client,
                    server,
                    accept_state.clone(),
                    accept_changed.subscribe(),
                    generation,
                ));
            }
        });
        Ok(Proxy {
            addr,
            state,
            changed,
            accept: accept.abort_handle(),
        })
    }

    /// From now on bytes in both directions are dropped; connections stay open.
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
        let _ = self.changed.send(());
    }

    pub fn resume(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
        let _ = self.changed.send(());
    }

    /// Resets every connection open now (RST, no FIN); later connections are forwarded.
    pub fn sever(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        self.state.stalled.store(false, Ordering::SeqCst);
        let _ = self.changed.send(());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    state: Arc<State>,
    changed: watch::Receiver<()>,
    generation: u64,
) {
    for stream in [&client, &server] {
        let _ = stream.set_nodelay(true);
        // With linger 0, dropping a socket resets it (RST) instead of closing it (FIN), which
        // is the fault this proxy exists to make. A zero linger never blocks on drop.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::spawn(pipe(
        client_read,
        server_write,
        state.clone(),
        changed.clone(),
        generation,
    ));
    tokio::spawn(pipe(server_read, client_write, state, changed, generation));
}

/// Copies `from` to `to` while forwarding. An end of stream is passed on as FIN; a sever
/// drops both halves, which resets the sockets.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: Arc<State>,
    mut changed: watch::Receiver<()>,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        tokio::select! {
            biased;
            _ = changed.changed() => continue,
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        let _ = to.shutdown().await;
                        return;
                    }
                    Ok(n) => n,
                };
                if state.stalled.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
