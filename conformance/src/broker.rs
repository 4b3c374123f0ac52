//! The broker under test, in-process on 127.0.0.1:0.

use std::net::SocketAddr;

use tern::core::Config;
use tern::net::{Persistence, Server};
use tern::store::Store;

pub struct Broker {
    pub server: Server,
    pub addr: SocketAddr,
}

impl Broker {
    pub async fn start(config: Config) -> anyhow::Result<Broker> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = Server::start(vec![listener], config)?;
        let addr = server.local_addrs()[0];
        Ok(Broker { server, addr })
    }

    /// A broker with the default config that keeps its state in `store` (committed on the
    /// blocking pool, as a real disk is). The wall clock is fixed: the tests judge no deadline.
    pub async fn start_with_store(store: Box<dyn Store>) -> anyhow::Result<Broker> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let persistence = Persistence {
            store,
            wall_clock_ms: 1_700_000_000_000,
            blocking_commits: true,
        };
        let entropy = Box::new(tern::auth::OsEntropy);
        let server = Server::start_with_store(
            vec![tern::net::Endpoint::plain(listener)],
            Config::default(),
            entropy,
            Some(persistence),
        )?;
        let addr = server.local_addrs()[0];
        Ok(Broker { server, addr })
    }
}
