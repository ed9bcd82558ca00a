//! Who is calling. The transport (a client certificate over TLS, or
//! `SO_PEERCRED` on the unix socket) puts a [`Caller`] in every request's
//! extensions; handlers, leases and the audit log read it from there.

use std::fmt;

/// What a caller may do; each role includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Capabilities, get, list, watch.
    Viewer,
    /// Start, stop and renew experiments.
    Operator,
    /// Stop-all and configuration calls.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's URI SAN (else its CN), or `uid:N` on the unix socket.
    pub identity: String,
    /// None: the identity maps to no role (every call is refused).
    pub role: Option<Role>,
    /// The peer's address (`ip:port`), or `unix`.
    pub peer: String,
    /// Over TCP (experiments carry a lease by default).
    pub remote: bool,
}

impl Caller {
    /// The request's caller. A request without one (a server built without
    /// the identity layer, as in some unit tests) is the local root user.
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        req.extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self {
                identity: "uid:0".into(),
                role: Some(Role::Admin),
                peer: req
                    .remote_addr()
                    .map_or_else(|| "unix".into(), |a| a.to_string()),
                remote: req.remote_addr().is_some(),
            })
    }
}
