//! The `tern` binary: parse the command line, set up logging, serve until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tern::auth::scram::{Credential, ITERATIONS_DEFAULT};
use tern::auth::OsEntropy;
use tern::config::Config;
use tern::net::Server;
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
    tracing_subscriber::fmt()
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
    let server = Server::start(listeners, config.core)?;
    wait_for_signal().await?;
    tracing::info!("signal received, shutting down");
    let stats = server.shutdown().await;
    tracing::info!(?stats, "stopped");
    Ok(())
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
