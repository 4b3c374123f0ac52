//! The broker under test, in-process on 127.0.0.1:0.

use std::net::SocketAddr;

use tern::core::Config;
use tern::net::Server;

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
}
