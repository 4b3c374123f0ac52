//! The turmoil listener adapter: the production driver (`tern::net`) on the simulated network.

use std::io;
use std::net::SocketAddr;

use tern::net::Listener;

pub struct TurmoilListener(pub turmoil::net::TcpListener);

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
