//! The `tern` binary: parse the command line, set up logging, serve until SIGINT or SIGTERM
//! (SIGHUP reloads certificates, password files and ACLs); `tern passwd` edits a password file.

mod passwd;
mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tern::auth::acl::Acl;
use tern::auth::password_file::PasswordFile;
use tern::auth::scram::{Credential, ITERATIONS_DEFAULT};
use tern::auth::OsEntropy;
use tern::config::{Config, LogFormat};
use tern::net::tls;
use tern::net::{Endpoint, Persistence, Reloadable, Server, Transport};
use tern::store::RedbStore;
use tracing_appender::non_blocking::ErrorCounter;
use tracing_subscriber::EnvFilter;

use reload::ListenerFiles;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add or update a user in a password file (argon2id), or delete one; like
    /// mosquitto_passwd, whose files Tern reads as they are.
    Passwd(passwd::PasswdArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Passwd(passwd)) = args.command {
        return passwd::run(passwd);
    }
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
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.replace_listeners(&args.listen);
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = Some(dir.clone());
    }
    if args.in_memory {
        config.data_dir = None;
    }
    let log = init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(tern::net::WORKER_STACK_BYTES)
        .build()
        .context("starting the runtime")?;
    let served = runtime.block_on(serve(config, log.error_counter.clone()));
    let dropped = log.error_counter.dropped_lines();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "log lines dropped: the log writer could not keep up"
        );
    }
    // Flushes what the writer thread still holds.
    drop(log.guard);
    served
}

/// The log writer's thread and its count of lines it had to drop.
struct Logging {
    guard: tracing_appender::non_blocking::WorkerGuard,
    error_counter: ErrorCounter,
}

/// Logs go to stderr through a writer thread: a slow terminal or a full pipe never blocks the
/// core's task (lines are dropped and counted instead). Text has colours only when stderr is
/// a terminal (`tern 2> tern.log` must not fill the file with escape codes); JSON is one
/// object per line. `RUST_LOG` sets the level (default `info`).
fn init_logging(format: LogFormat) -> Logging {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stderr());
    let error_counter = writer.error_counter();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(terminal).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Logging {
        guard,
        error_counter,
    }
}

async fn serve(config: Config, log_drops: ErrorCounter) -> anyhow::Result<()> {
    warn_about_weak_settings(&config);
    let mut endpoints = Vec::new();
    let mut files = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        let (endpoint, listener_files) = open_listener(index, listener).await?;
        endpoints.push(endpoint);
        files.push(listener_files);
    }
    let persistence = open_store(&config)?;
    let metrics = match config.metrics_bind {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    let mut server =
        Server::start_with_store(endpoints, config.core, Box::new(OsEntropy), persistence)?;
    server.count_log_drops(move || log_drops.dropped_lines() as u64);
    if let Some(listener) = metrics {
        server.serve_metrics(listener)?;
    }
    let mut hangup = reload::hangups()?;
    let failure = loop {
        tokio::select! {
            biased;
            signal = wait_for_signal() => {
                signal?;
                tracing::info!("signal received, shutting down");
                break None;
            }
            _ = hangup.recv() => reload::reload(&files, &server).await,
            error = server.store_failed() => break Some(error),
        }
    };
    let (stats, failed_late) = server.shutdown_checked().await;
    tracing::info!(?stats, "stopped");
    match failure.or(failed_late) {
        Some(error) => Err(anyhow::anyhow!("the store failed: {error}")),
        None => Ok(()),
    }
}

/// Settings that work but leave clients less protected than they may think.
fn warn_about_weak_settings(config: &Config) {
    if !config.core.users.is_empty() {
        tracing::warn!(
            "[auth] users holds plain-text passwords: move them to a password file \
             (`tern passwd --create FILE USER`, then password_file = \"FILE\")"
        );
    }
    for (listener, access) in config.listeners.iter().zip(&config.core.listeners) {
        if listener.acl_file.is_some() && !access.password_file && !access.use_identity_as_username
        {
            tracing::warn!(
                addr = %listener.bind,
                "an ACL without a password file or client certificates: clients are judged by \
                 the user names they claim"
            );
        }
    }
}

/// The store in the data directory, or none with `--in-memory`.
fn open_store(config: &Config) -> anyhow::Result<Option<Persistence>> {
    let Some(dir) = &config.data_dir else {
        tracing::warn!("persistence off (--in-memory): sessions and messages end with the process");
        return Ok(None);
    };
    let store = RedbStore::open(dir)?;
    tracing::info!(dir = %dir.display(), "persistence on: acknowledged messages survive restarts and crashes");
    Ok(Some(Persistence {
        store: Box::new(store),
        wall_clock_ms: wall_clock_ms(),
        blocking_commits: true,
    }))
}

/// Binds one listener and reads its certificates, password file and ACL: any error stops the
/// start, naming the file.
async fn open_listener(
    index: usize,
    listener: &tern::config::ListenerConfig,
) -> anyhow::Result<(Endpoint<tokio::net::TcpListener>, ListenerFiles)> {
    let addr = listener.bind;
    let socket = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let tls = match &listener.tls {
        Some(files) => Some(Reloadable::new(tls::server_config(files)?)),
        None => None,
    };
    let password_file = match &listener.password_file {
        Some(path) => {
            let file = PasswordFile::load(path)?;
            tracing::info!(%addr, path = %path.display(), users = file.len(), "password file read");
            Some(Reloadable::new(Arc::new(file)))
        }
        None => None,
    };
    let acl = match &listener.acl_file {
        Some(path) => {
            let acl = Acl::load(path)?;
            tracing::info!(%addr, path = %path.display(), rules = acl.rule_count(), "ACL file read");
            Some(Arc::new(acl))
        }
        None => None,
    };
    let transport = Transport {
        tls: tls.clone(),
        websocket_path: listener.websocket_path.clone(),
    };
    tracing::info!(%addr, scheme = transport.scheme(), "listener ready");
    let endpoint = Endpoint {
        listener: socket,
        transport,
        password_file: password_file.clone(),
        acl,
    };
    let files = ListenerFiles {
        index: u16::try_from(index).context("too many listeners")?,
        config: listener.clone(),
        tls,
        password_file,
    };
    Ok((endpoint, files))
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
