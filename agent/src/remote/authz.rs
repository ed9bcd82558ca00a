//! Authorisation: the one table of method → minimum role, checked in one
//! layer in front of every service (the handlers check nothing). The layer
//! also puts the request's [`Caller`] and the audit log in its extensions,
//! and audits every refusal, its own and the handlers'.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use tonic::{
    Code, Status,
    codegen::{Service, http},
};

use super::{Peer, audit::Audit, roles::Roles};
use crate::grpc::caller::{Caller, Role};

const FAULT: &str = "/faultline.v1.FaultService/";

/// Method (or a whole service, ending in `/`) → the least role that may call it.
const TABLE: &[(&str, Role)] = &[
    ("/faultline.v1.FaultService/GetCapabilities", Role::Viewer),
    ("/faultline.v1.FaultService/GetExperiment", Role::Viewer),
    ("/faultline.v1.FaultService/ListExperiments", Role::Viewer),
    ("/faultline.v1.FaultService/WatchEvents", Role::Viewer),
    ("/faultline.v1.FaultService/StartExperiment", Role::Operator),
    ("/faultline.v1.FaultService/StopExperiment", Role::Operator),
    ("/faultline.v1.FaultService/RenewLease", Role::Operator),
    ("/faultline.v1.FaultService/StopAll", Role::Admin),
    ("/grpc.health.v1.Health/", Role::Viewer),
    ("/grpc.reflection.v1.ServerReflection/", Role::Viewer),
    ("/grpc.reflection.v1alpha.ServerReflection/", Role::Viewer),
];

/// The role `path` needs; a method not in the table (a new one, a typo)
/// needs admin: fail closed.
pub fn required_role(path: &str) -> Role {
    TABLE
        .iter()
        .find(|(p, _)| *p == path || (p.ends_with('/') && path.starts_with(p)))
        .map_or(Role::Admin, |(_, r)| *r)
}

/// The short name the audit log and refusals use: `StartExperiment`.
pub fn method_name(path: &str) -> &str {
    path.strip_prefix(FAULT)
        .unwrap_or_else(|| path.trim_start_matches('/'))
}

/// Who may do what now: the roles file as last (re)loaded.
#[derive(Clone)]
pub struct Policy {
    pub roles: Arc<RwLock<Arc<Roles>>>,
    pub audit: Arc<Audit>,
}

impl Policy {
    fn caller(&self, peer: &Peer) -> Option<Caller> {
        let roles = self
            .roles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        peer.caller(&roles)
    }
}

/// The check itself: Ok, or the refusal naming the identity and the role.
pub fn check(caller: Option<&Caller>, path: &str) -> Result<(), Status> {
    let need = required_role(path);
    let method = method_name(path);
    match caller {
        None => Err(Status::unauthenticated(format!(
            "{method}: the client presented no identity (a certificate with a URI SAN or CN)"
        ))),
        Some(c) if c.role.is_some_and(|r| r >= need) => Ok(()),
        Some(c) => Err(Status::permission_denied(format!(
            "{method} needs the {need} role; {} has {}",
            c.identity,
            c.role
                .map_or_else(|| "no role".to_owned(), |r| format!("only {r}"))
        ))),
    }
}

#[derive(Clone)]
pub struct AuthorizeLayer(pub Policy);

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Policy,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Authorize<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let caller = req
            .extensions()
            .get::<Peer>()
            .and_then(|p| self.policy.caller(p));
        let peer = req
            .extensions()
            .get::<Peer>()
            .map_or_else(|| "unknown".into(), Peer::address);
        let audit = Arc::clone(&self.policy.audit);
        if let Err(status) = check(caller.as_ref(), &path) {
            let identity = caller.as_ref().map_or("", |c| c.identity.as_str());
            audit.refusal(identity, &peer, method_name(&path), &status);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let caller = caller.expect("checked above");
        req.extensions_mut().insert(caller.clone());
        req.extensions_mut().insert(Arc::clone(&audit));
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let res = inner.call(req).await?;
            // A handler's refusal is a trailers-only answer: its status is
            // in the headers.
            if let Some(s) = Status::from_header_map(res.headers())
                && s.code() != Code::Ok
            {
                audit.refusal(&caller.identity, &caller.peer, method_name(&path), &s);
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_table() {
        let m = |name: &str| required_role(&format!("{FAULT}{name}"));
        for v in [
            "GetCapabilities",
            "GetExperiment",
            "ListExperiments",
            "WatchEvents",
        ] {
            assert_eq!(m(v), Role::Viewer, "{v}");
        }
        for o in ["StartExperiment", "StopExperiment", "RenewLease"] {
            assert_eq!(m(o), Role::Operator, "{o}");
        }
        assert_eq!(m("StopAll"), Role::Admin);
        assert_eq!(m("SomethingNew"), Role::Admin);
        assert_eq!(required_role("/grpc.health.v1.Health/Check"), Role::Viewer);
        assert_eq!(
            required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Role::Viewer
        );
        assert_eq!(required_role("/grpc.health.v1.Healthy/Check"), Role::Admin);
    }

    #[test]
    fn refusals_name_the_identity_and_the_role() {
        let c = |role| Caller {
            identity: "alice".into(),
            role,
            peer: "10.0.0.1:5".into(),
            remote: true,
        };
        let start = "/faultline.v1.FaultService/StartExperiment";
        let e = check(Some(&c(Some(Role::Viewer))), start).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(
            e.message().contains("alice") && e.message().contains("operator"),
            "{}",
            e.message()
        );
        let e = check(Some(&c(None)), start).unwrap_err();
        assert!(e.message().contains("no role"), "{}", e.message());
        assert_eq!(
            check(None, start).unwrap_err().code(),
            Code::Unauthenticated
        );
        assert!(check(Some(&c(Some(Role::Operator))), start).is_ok());
        assert!(check(Some(&c(Some(Role::Admin))), start).is_ok());
    }
}
