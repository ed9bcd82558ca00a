//! The accept loops. TCP: a connection limit (excess connections closed at
//! once), each TLS handshake in its own task under a timeout, so idle or
//! slow clients never hold up others, and the server configuration read
//! anew for every handshake (SIGHUP swaps it). Unix: `SO_PEERCRED`.

use std::{
    io,
    os::fd::AsFd as _,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tonic::transport::server::Connected;

use super::Peer;

/// A connection and who is on the other end; counts against the limit
/// while it lives.
pub struct Conn<S> {
    io: S,
    peer: Peer,
    _slot: Option<Slot>,
}

impl<S> Connected for Conn<S> {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// One place under the connection limit, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(count)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TLS server configuration now in force; SIGHUP replaces it.
pub type TlsState = Arc<RwLock<Arc<ServerConfig>>>;

pub struct TcpLimits {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

type Incoming<S> = ReceiverStream<io::Result<Conn<S>>>;

/// Accepts TCP connections and hands on those that complete the TLS
/// handshake (a verified client certificate) within the timeout.
pub fn tls_incoming(
    listener: TcpListener,
    tls: TlsState,
    limits: TcpLimits,
) -> Incoming<TlsStream<TcpStream>> {
    let (tx, rx) = mpsc::channel(64);
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Some((stream, addr)) = accept(&listener, &tx).await {
            let Some(slot) = Slot::take(&count, limits.max_connections) else {
                tracing::debug!(%addr, max = limits.max_connections, "connection limit reached: closed");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = TlsAcceptor::from(
                tls.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            );
            let tx = tx.clone();
            let timeout = limits.handshake_timeout;
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, ?timeout, "TLS handshake timed out: closed");
                        return;
                    }
                };
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| super::identity::of_certificate(c));
                let peer = Peer::Tls { identity, addr };
                let _ = tx
                    .send(Ok(Conn {
                        io: tls,
                        peer,
                        _slot: Some(slot),
                    }))
                    .await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Plain TCP (loopback, `insecure_listen`).
pub fn insecure_incoming(listener: TcpListener) -> Incoming<TcpStream> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some((stream, addr)) = accept(&listener, &tx).await {
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                io: stream,
                peer: Peer::Insecure { addr },
                _slot: None,
            };
            if tx.send(Ok(conn)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The next connection; None once the server is gone. Errors such as
/// EMFILE are logged and waited out, not fatal.
async fn accept<T>(
    listener: &TcpListener,
    tx: &mpsc::Sender<T>,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            () = tx.closed() => return None,
            r = listener.accept() => match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Unix-socket connections with their peer's uid and groups.
pub fn unix_incoming(
    listener: UnixListener,
) -> impl Stream<Item = io::Result<Conn<UnixStream>>> + Send {
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|r| {
        r.and_then(|io| {
            let cred = io.peer_cred()?;
            let mut gids = peer_groups(&io);
            gids.push(cred.gid());
            Ok(Conn {
                peer: Peer::Unix {
                    uid: cred.uid(),
                    gids,
                },
                io,
                _slot: None,
            })
        })
    })
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, as at connect()).
fn peer_groups(s: &UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd as _;
    let mut gids = vec![0 as libc::gid_t; 256];
    let mut len = (gids.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: the buffer and its length are ours and valid for the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            gids.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    gids.truncate(len as usize / size_of::<libc::gid_t>());
    gids
}
