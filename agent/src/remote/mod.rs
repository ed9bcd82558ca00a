//! Remote operation: mutual TLS on the TCP listener (`listen`), who the
//! caller is on every connection (`identity`, `SO_PEERCRED`), what each
//! role may call (`authz`, `roles`), the audit log (`audit`), and the
//! settings (`settings`, `tls`).

pub mod audit;
pub mod authz;
pub mod identity;
pub mod listen;
pub mod reload;
pub mod roles;
pub mod settings;
pub mod tls;

use std::net::SocketAddr;

use crate::grpc::caller::{Caller, Role};

/// What the transport knows of a connection; the layer turns it into a
/// [`Caller`] with the roles file as it is at each request.
#[derive(Clone, Debug)]
pub enum Peer {
    /// A verified client certificate; `identity` None when it names no one.
    Tls {
        identity: Option<String>,
        addr: SocketAddr,
    },
    /// `SO_PEERCRED` (and `SO_PEERGROUPS`) of a unix-socket client.
    Unix { uid: u32, gids: Vec<u32> },
    /// Loopback plain TCP, the `insecure_listen` opt-in: unauthenticated, root's API.
    Insecure { addr: SocketAddr },
}

impl Peer {
    pub fn address(&self) -> String {
        match self {
            Self::Tls { addr, .. } | Self::Insecure { addr } => addr.to_string(),
            Self::Unix { .. } => "unix".into(),
        }
    }

    pub fn caller(&self, roles: &roles::Roles) -> Option<Caller> {
        let peer = self.address();
        Some(match self {
            Self::Tls { identity, .. } => {
                let identity = identity.clone()?;
                Caller {
                    role: roles.for_client(&identity),
                    identity,
                    peer,
                    remote: true,
                }
            }
            Self::Unix { uid, gids } => Caller {
                identity: format!("uid:{uid}"),
                role: roles.for_unix(*uid, gids),
                peer,
                remote: false,
            },
            Self::Insecure { .. } => Caller {
                identity: "insecure-tcp".into(),
                role: Some(Role::Admin),
                peer,
                remote: true,
            },
        })
    }
}
