//! Serving: the unix socket (mode 0600, or 0660 shared with the roles
//! file's group), an optional TCP port (mutual TLS, or plain on loopback),
//! the standard health service and server reflection, all behind the
//! authorisation layer (`remote::authz`).

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{Arc, RwLock},
};

use faultline_proto::v1::{FILE_DESCRIPTOR_SET, fault_service_server::FaultServiceServer};
use tokio::net::{TcpListener, UnixListener};
use tonic::transport::Server;

use crate::{
    config::Config,
    engine::EngineHandle,
    grpc::FaultServiceImpl,
    remote::{
        audit::{self, Audit},
        authz::{AuthorizeLayer, Policy},
        listen::{self, TcpLimits},
        roles::Roles,
        settings::MAX_CONCURRENT_STREAMS,
    },
};

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{0}")]
    Setup(String),
}

pub async fn serve(
    cfg: &Config,
    engine: EngineHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let remote = &cfg.remote;
    let roles = match &remote.roles {
        Some(path) => Roles::load(path).map_err(|e| ServeError::Setup(format!("roles: {e}")))?,
        None => Roles::default(),
    };
    let unix = bind_unix(&cfg.socket, roles.socket_group())?;
    let audit = Audit::open(&remote.audit_log, audit::MAX_BYTES).map_err(|e| {
        ServeError::Setup(format!(
            "cannot open the audit log {}: {e}",
            remote.audit_log.display()
        ))
    })?;
    let roles = Arc::new(RwLock::new(Arc::new(roles)));
    let policy = Policy {
        roles: Arc::clone(&roles),
        audit: Arc::new(audit),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FaultServiceServer<FaultServiceImpl>>()
        .await;
    // Both reflection versions: grpcurl and grpc-java speak v1, grpcio's
    // own reflection client and older tools only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let metrics_engine = engine.clone();
    // Outermost, so every answer is counted, refusals included.
    let router = Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .layer(crate::metrics::ApiCallsLayer)
        .layer(AuthorizeLayer(policy))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            FaultServiceServer::new(FaultServiceImpl::new(engine))
                .max_decoding_message_size(crate::limits::MAX_REQUEST_BYTES)
                .max_encoding_message_size(crate::limits::MAX_RESPONSE_BYTES),
        );

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stop = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(());
    });
    let wait = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    // Open streams (WatchEvents) would hold a graceful shutdown forever:
    // give in-flight calls a moment, then go.
    let grace = {
        let mut rx = stop_tx.subscribe();
        async move {
            let _ = rx.recv().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    if let Some(addr) = cfg.metrics_listen {
        crate::metrics::spawn(addr, metrics_engine, wait(&stop_tx))
            .await
            .map_err(|e| ServeError::Bind(addr.to_string(), e))?;
    }
    tracing::info!(socket = %cfg.socket.display(), "serving faultline.v1 on unix socket");
    let unix_fut = router
        .clone()
        .serve_with_incoming_shutdown(listen::unix_incoming(unix), wait(&stop_tx));
    let tls_state = match &remote.tls {
        Some(files) => Some(Arc::new(RwLock::new(
            crate::remote::tls::server_config(files)
                .map_err(|e| ServeError::Setup(format!("`{}`: {}", e.key, e.reason)))?,
        ))),
        None => None,
    };
    crate::remote::reload::spawn(remote.clone(), tls_state.clone(), roles);
    if let Some(addr) = cfg.listen {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Bind(addr.to_string(), e))?;
        let tcp_fut = if let Some(tls) = tls_state {
            tracing::info!(%addr, "serving faultline.v1 on TCP with mutual TLS");
            let limits = TcpLimits {
                handshake_timeout: remote.handshake_timeout,
                max_connections: remote.max_connections as usize,
            };
            futures::future::Either::Left(router.serve_with_incoming_shutdown(
                listen::tls_incoming(tcp, tls, limits),
                wait(&stop_tx),
            ))
        } else {
            tracing::warn!(
                %addr,
                "serving faultline.v1 on plain TCP (insecure_listen): no TLS and no authentication. Any local \
                 user and any hostNetwork container on this host can reach this port and use the root API: kill \
                 or stop processes, fail root daemons' I/O, blackhole the network, stop every experiment"
            );
            futures::future::Either::Right(
                router.serve_with_incoming_shutdown(listen::insecure_incoming(tcp), wait(&stop_tx)),
            )
        };
        tokio::select! {
            (a, b) = async { tokio::join!(unix_fut, tcp_fut) } => { a?; b?; }
            () = grace => tracing::info!("closing connections that did not finish"),
        }
    } else {
        tokio::select! {
            r = unix_fut => r?,
            () = grace => tracing::info!("closing connections that did not finish"),
        }
    }
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}

/// The umask set at start-up (077) makes the socket the owner's only (0700)
/// as bind() creates it: a chmod alone, after bind, leaves a moment in which
/// others can connect. Checked, then narrowed to the 0600 the README names;
/// a socket others could have reached is not served. With a group in the
/// roles file, it is then shared with that group (0660).
fn bind_unix(path: &Path, group: Option<u32>) -> Result<UnixListener, ServeError> {
    let err = |e| ServeError::Bind(path.display().to_string(), e);
    let listener = UnixListener::bind(path).map_err(err)?;
    let mode = std::fs::symlink_metadata(path)
        .map_err(err)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        let _ = std::fs::remove_file(path);
        return Err(err(std::io::Error::other(format!(
            "the socket was created with mode {mode:04o}: the process umask lets other users connect"
        ))));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    if let Some(gid) = group {
        std::os::unix::fs::lchown(path, None, Some(gid)).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    }
    Ok(listener)
}
