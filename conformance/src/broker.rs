//! The broker under test, in-process on 127.0.0.1, listening four ways: MQTT over TCP, TLS,
//! WebSocket and secure WebSocket (certificates from [`Pki::shared`]). Cases name a broker
//! by its TCP address; [`listener_for`] finds the listener of the transport a client uses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tern::auth::acl::Acl;
use tern::auth::password_file::PasswordFile;
use tern::core::{Config, ListenerAccess};
use tern::net::{tls, Endpoint, Persistence, Reloadable, Server, Transport};
use tern::store::Store;

use crate::client::Net;
use crate::pki::Pki;

pub struct Broker {
    pub server: Server,
    /// The TCP listener's address (the others are found with [`listener_for`]).
    pub addr: SocketAddr,
}

/// How the listeners log clients in, beyond `Config`.
#[derive(Default)]
pub struct Access {
    pub password_file: Option<PasswordFile>,
    pub acl: Option<Acl>,
    /// TLS listeners require a client certificate signed by the test CA, whose CN is the user
    /// name (Mosquitto's `require_certificate` and `use_identity_as_username`).
    pub client_certificates: bool,
}

/// The other listeners of each broker, by its TCP address.
fn siblings() -> &'static Mutex<HashMap<SocketAddr, [SocketAddr; 4]>> {
    static SIBLINGS: OnceLock<Mutex<HashMap<SocketAddr, [SocketAddr; 4]>>> = OnceLock::new();
    SIBLINGS.get_or_init(Default::default)
}

/// The listener of `net` of the broker whose TCP listener is `addr`; `addr` itself when it is
/// no broker's (a proxy the case put in front of the right listener).
pub fn listener_for(addr: SocketAddr, net: Net) -> SocketAddr {
    let siblings = siblings().lock().unwrap_or_else(|e| e.into_inner());
    match siblings.get(&addr) {
        Some(all) => all[net as usize],
        None => addr,
    }
}

impl Broker {
    pub async fn start(config: Config) -> anyhow::Result<Broker> {
        Broker::start_with(config, Access::default(), None).await
    }

    /// A broker with the default config that keeps its state in `store` (committed on the
    /// blocking pool, as a real disk is). The wall clock is fixed: the tests judge no deadline.
    pub async fn start_with_store(store: Box<dyn Store>) -> anyhow::Result<Broker> {
        let persistence = Persistence {
            store,
            wall_clock_ms: 1_700_000_000_000,
            blocking_commits: true,
        };
        Broker::start_with(Config::default(), Access::default(), Some(persistence)).await
    }

    pub async fn start_with(
        mut config: Config,
        access: Access,
        persistence: Option<Persistence>,
    ) -> anyhow::Result<Broker> {
        let pki = Pki::shared();
        let server_tls = Reloadable::new(tls::server_config(
            &pki.server_files(access.client_certificates),
        )?);
        let password_file = access.password_file.map(|f| Reloadable::new(Arc::new(f)));
        let acl = access.acl.map(Arc::new);
        let mut endpoints = Vec::new();
        let mut policies = Vec::new();
        for net in [Net::Tcp, Net::Tls, Net::Ws, Net::Wss] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let transport = Transport {
                tls: net.is_tls().then(|| server_tls.clone()),
                websocket_path: matches!(net, Net::Ws | Net::Wss).then(|| "/mqtt".to_owned()),
            };
            endpoints.push(Endpoint {
                listener,
                transport,
                password_file: password_file.clone(),
                acl: acl.clone(),
            });
            policies.push(ListenerAccess {
                allow_anonymous: config.allow_anonymous,
                password_file: password_file.is_some(),
                use_identity_as_username: access.client_certificates && net.is_tls(),
            });
        }
        config.listeners = policies;
        let entropy = Box::new(tern::auth::OsEntropy);
        let server = Server::start_with_store(endpoints, config, entropy, persistence)?;
        let addrs = server.local_addrs();
        let all = [addrs[0], addrs[1], addrs[2], addrs[3]];
        siblings()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(all[0], all);
        Ok(Broker {
            server,
            addr: all[0],
        })
    }
}
