//! The gRPC adapter: converts at the edge (`domain::spec_from_proto` for
//! requests, `convert` for views) and maps each error to its code (`status`).

pub mod caller;
mod convert;
mod page;
mod service;
mod status;
mod watch;

pub use service::FaultServiceImpl;
