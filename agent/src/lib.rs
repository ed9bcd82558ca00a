//! faultline-agent: the host daemon that arms eBPF faults and serves the
//! `faultline.v1` gRPC API.
//!
//! Layout: `domain` holds validated fault and target types; `faults/` has one
//! module per fault kind that turns a domain spec into a kernel slot;
//! `kernel` owns the eBPF object, its maps and attachments; `engine` runs
//! experiments (arm, count, expire, stop); `grpc` is a thin adapter that
//! converts proto messages at the edge.

pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod config;
pub mod domain;
pub mod engine;
pub mod faults;
pub mod grpc;
pub mod kernel;
pub mod names;
pub mod qdisc;
pub mod server;
pub mod state;
