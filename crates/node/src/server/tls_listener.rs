//! HTTP with and without TLS on one port, as the Postgres port serves both: a
//! connection whose first byte opens a TLS handshake (0x16) gets TLS, any other is
//! plain HTTP. Handshakes run in their own tasks, so a slow client holds up nobody.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use grove_sql::tls::{TlsAcceptor, TlsStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::either::Either;

/// How long a connection may take to send its first byte and finish a handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The record type that opens every TLS handshake.
const TLS_HANDSHAKE: u8 = 0x16;

pub type Connection = Either<TcpStream, TlsStream<TcpStream>>;

/// An axum listener handing over plain and TLS connections alike.
pub struct TlsOrPlain {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

impl TlsOrPlain {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<TlsOrPlain> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = sender.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (socket, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("HTTP: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (sender, acceptor) = (sender.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, open(socket, &acceptor)).await {
                        Ok(Ok(connection)) => {
                            let _ = sender.send((connection, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("HTTP connection from {peer}: {e}"),
                        Err(_) => tracing::debug!("HTTP connection from {peer}: no handshake"),
                    }
                });
            }
        });
        Ok(TlsOrPlain { ready, local })
    }
}

/// TLS when the client starts a handshake, else the plain socket.
async fn open(socket: TcpStream, acceptor: &TlsAcceptor) -> io::Result<Connection> {
    let mut first = [0u8; 1];
    if socket.peek(&mut first).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before it sent anything",
        ));
    }
    if first[0] == TLS_HANDSHAKE {
        Ok(Either::Right(acceptor.accept(socket).await?))
    } else {
        Ok(Either::Left(socket))
    }
}

impl axum::serve::Listener for TlsOrPlain {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
