//! SIGHUP: the TLS files and the roles file read again. New connections
//! get the new certificates and CA, every request from then on the new
//! roles; experiments and open streams go on. A file that does not load
//! leaves the configuration in force as it was, and the log says why.

use std::sync::{Arc, RwLock};

use super::{listen::TlsState, roles::Roles, settings::Settings, tls};

pub fn spawn(settings: Settings, tls_state: Option<TlsState>, roles: Arc<RwLock<Arc<Roles>>>) {
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGHUP: no reloads");
            return;
        }
    };
    tokio::spawn(async move {
        let mut hup = hup;
        while hup.recv().await.is_some() {
            reload(&settings, tls_state.as_ref(), &roles);
        }
    });
}

fn reload(settings: &Settings, tls_state: Option<&TlsState>, roles: &RwLock<Arc<Roles>>) {
    if let (Some(files), Some(state)) = (&settings.tls, tls_state) {
        match tls::server_config(files) {
            Ok(cfg) => {
                *state
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = cfg;
                tracing::info!(cert = %files.cert.display(), client_ca = %files.client_ca.display(), "SIGHUP: TLS certificates reloaded");
            }
            Err(e) => {
                tracing::error!(key = e.key, reason = %e.reason, "SIGHUP: TLS files not reloaded; the previous ones stay in force");
            }
        }
    }
    if let Some(path) = &settings.roles {
        match Roles::load(path) {
            Ok(r) => {
                *roles
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(r);
                tracing::info!(roles = %path.display(), "SIGHUP: roles reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: roles not reloaded; the previous ones stay in force");
            }
        }
    }
}
