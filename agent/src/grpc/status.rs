//! Every error to its gRPC code, and every refusal logged with the method,
//! the field and the reason.

use tonic::{Code, Status};

use crate::{
    domain::{SpecError, SpecErrorKind},
    engine::EngineError,
    kernel::KernelError,
};

fn spec_code(e: &SpecError) -> Code {
    match e.kind {
        SpecErrorKind::Invalid => Code::InvalidArgument,
        SpecErrorKind::Protected => Code::PermissionDenied,
        SpecErrorKind::Unsupported => Code::FailedPrecondition,
    }
}

fn kernel_code(e: &KernelError) -> Code {
    match e {
        KernelError::ListFull(..) => Code::ResourceExhausted,
        // The kernel or the host lacks something, or someone's
        // configuration is in the way: the caller can act on that.
        KernelError::Unavailable { .. } | KernelError::Conflict { .. } => Code::FailedPrecondition,
        KernelError::Load(_)
        | KernelError::MissingMap(_)
        | KernelError::Map { .. }
        | KernelError::Attach { .. } => Code::Internal,
    }
}

/// The status for a refused request, logged.
pub fn refused(method: &'static str, e: &EngineError) -> Status {
    let (code, field) = match e {
        EngineError::Spec(s) => (spec_code(s), s.field.as_str()),
        EngineError::NotFound(_) => (Code::NotFound, "id"),
        EngineError::Exhausted(_) => (Code::ResourceExhausted, ""),
        EngineError::Reused(_) => (Code::AlreadyExists, "request_id"),
        EngineError::Kernel(k) => (kernel_code(k), ""),
    };
    // A reason may quote the request: never more than a few KiB of it.
    let reason = crate::limits::clip(&e.to_string(), crate::limits::MAX_REASON_BYTES).into_owned();
    // The reason quotes the request (names, paths, comm): escaped in the log.
    let logged = faultline_proto::text::Escaped(&reason);
    if code == Code::Internal {
        tracing::error!(method, reason = %logged, "request failed");
    } else {
        tracing::warn!(method, code = ?code, field = %faultline_proto::text::Escaped(field), reason = %logged, "request refused");
    }
    Status::new(code, reason)
}

/// A required id.
pub fn id_arg<'a>(method: &'static str, id: &'a str) -> Result<&'a str, Status> {
    let id = id.trim();
    if id.is_empty() {
        return Err(refused(
            method,
            &EngineError::Spec(SpecError::invalid("id", "required")),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let spec = |e: SpecError| refused("t", &EngineError::Spec(e)).code();
        assert_eq!(spec(SpecError::invalid("f", "r")), Code::InvalidArgument);
        assert_eq!(spec(SpecError::protected("f", "r")), Code::PermissionDenied);
        assert_eq!(
            spec(SpecError::unsupported("f", "r")),
            Code::FailedPrecondition
        );
        let conflict = KernelError::Conflict {
            what: "fq qdisc",
            reason: "veth0 has a configured root qdisc (htb)".into(),
        };
        let s = refused("t", &EngineError::Kernel(conflict));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("htb"), "{}", s.message());
        assert_eq!(
            refused("t", &EngineError::Kernel(KernelError::ListFull(4, "DNS"))).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            refused("t", &EngineError::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(id_arg("t", " ").unwrap_err().code(), Code::InvalidArgument);
    }
}
