//! The `tern` binary: parse the command line, set up logging, serve until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tern::auth::scram::{Credential, ITERATIONS_DEFAULT};
use tern::auth::OsEntropy;
use tern::config::Config;
use tern::net::{Persistence, Server};
use tern::store::RedbStore;
use tracing_subscriber::EnvFilter;

/// Tern: an MQTT 3.1.1 and 5.0 broker.
///
/// With no arguments it serves MQTT on 127.0.0.1:1883 with safe defaults.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (see tern.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on; repeatable. Replaces the config file's listeners.
    #[arg(long, short, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Directory of the store (default ./tern-data, or the config file's). Replaces the
    /// config file's.
    #[arg(long, value_name = "DIR", conflicts_with = "in_memory")]
    data_dir: Option<PathBuf>,
    /// Keep nothing across restarts: no store, no data directory.
    #[arg(long)]
    in_memory: bool,
    /// Read a password from standard input, print its SCRAM-SHA-256 stored credential (for
    /// `[auth.scram] users`, so the config holds no password) and exit.
    #[arg(long)]
    scram_credential: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scram_credential {
        let mut password = String::new();
        std::io::stdin()
            .read_line(&mut password)
            .context("reading the password from standard input")?;
        let password = password.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "no password on standard input");
        let credential = Credential::generate(password, ITERATIONS_DEFAULT, &mut OsEntropy);
        println!("{}", credential.encode());
        return Ok(());
    }
    // Logs go to stderr, with colours only when it is a terminal: `tern 2> tern.log` must
    // not fill the file with escape codes.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listeners = args.listen.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = Some(dir.clone());
    }
    if args.in_memory {
        config.data_dir = None;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(tern::net::WORKER_STACK_BYTES)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in &config.listeners {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    let persistence = match &config.data_dir {
        Some(dir) => {
            let store = RedbStore::open(dir)?;
            tracing::info!(dir = %dir.display(), "persistence on: acknowledged messages survive restarts and crashes");
            Some(Persistence {
                store: Box::new(store),
                wall_clock_ms: wall_clock_ms(),
                blocking_commits: true,
            })
        }
        None => {
            tracing::warn!(
                "persistence off (--in-memory): sessions and messages end with the process"
            );
            None
        }
    };
    let mut server =
        Server::start_with_store(listeners, config.core, Box::new(OsEntropy), persistence)?;
    let failure = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            tracing::info!("signal received, shutting down");
            None
        }
        error = server.store_failed() => Some(error),
    };
    let (stats, failed_late) = server.shutdown_checked().await;
    tracing::info!(?stats, "stopped");
    match failure.or(failed_late) {
        Some(error) => Err(anyhow::anyhow!("the store failed: {error}")),
        None => Ok(()),
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            biased;
            result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

/// Milliseconds since the Unix epoch: the store keeps deadlines on the wall clock.
// The binary is the one place that reads the wall clock (clippy.toml): the core gets time as
// an input.
#[allow(clippy::disallowed_methods)]
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
