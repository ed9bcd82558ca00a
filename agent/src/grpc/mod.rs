//! The gRPC adapter: converts at the edge and maps each error to its code.

mod convert;
mod service;

pub use convert::spec_from_proto;
pub use service::FaultServiceImpl;
