//! SIGHUP: re-read every listener's certificates, password file and ACL file without a
//! restart. A file that fails to read or parse is logged and the listener keeps what it had;
//! connections already open keep the TLS session they have.

use std::sync::Arc;

use anyhow::Context;
use tern::auth::acl::Acl;
use tern::auth::password_file::PasswordFile;
use tern::config::ListenerConfig;
use tern::net::tls;
use tern::net::{Reloadable, Server};

/// What one listener reloads, and the handles its connections read them through.
pub struct ListenerFiles {
    pub index: u16,
    pub config: ListenerConfig,
    pub tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
    pub password_file: Option<Arc<Reloadable<PasswordFile>>>,
}

/// The SIGHUP stream (on Unix; elsewhere one that never fires).
pub fn hangups() -> anyhow::Result<Hangups> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let signal = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        Ok(Hangups(signal))
    }
    #[cfg(not(unix))]
    Ok(Hangups(()))
}

#[cfg(unix)]
pub struct Hangups(tokio::signal::unix::Signal);
#[cfg(not(unix))]
pub struct Hangups(());

impl Hangups {
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            self.0.recv().await;
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

/// Re-reads every listener's files; each failure is logged and leaves that file's old
/// contents in place.
pub async fn reload(listeners: &[ListenerFiles], server: &Server) {
    tracing::info!("SIGHUP: reloading certificates, password files and ACLs");
    for listener in listeners {
        let addr = listener.config.bind;
        if let (Some(files), Some(handle)) = (&listener.config.tls, &listener.tls) {
            match tls::server_config(files) {
                Ok(config) => {
                    handle.replace(config);
                    tracing::info!(%addr, "certificates reloaded");
                }
                Err(error) => {
                    tracing::error!(%addr, %error, "certificates not reloaded; keeping the old ones")
                }
            }
        }
        if let (Some(path), Some(handle)) =
            (&listener.config.password_file, &listener.password_file)
        {
            match PasswordFile::load(path) {
                Ok(file) => {
                    tracing::info!(%addr, users = file.len(), "password file reloaded");
                    handle.replace(Arc::new(file));
                }
                Err(error) => {
                    tracing::error!(%addr, %error, "password file not reloaded; keeping the old one")
                }
            }
        }
        if let Some(path) = &listener.config.acl_file {
            match Acl::load(path) {
                Ok(acl) => {
                    tracing::info!(%addr, rules = acl.rule_count(), "ACL reloaded");
                    server.set_acl(listener.index, Some(Arc::new(acl))).await;
                }
                Err(error) => {
                    tracing::error!(%addr, %error, "ACL not reloaded; keeping the old one")
                }
            }
        }
    }
}
