//! faultline-agent: the host daemon that arms eBPF faults and serves the
//! `faultline.v1` gRPC API.
//!
//! Layout (see ARCHITECTURE.md): `grpc` is a thin adapter; `domain` holds
//! the validated experiment and target types and their wire conversion;
//! `faults/` has one module per fault kind behind the `Fault` trait;
//! `engine` runs experiments (arm all-or-nothing, count, expire, stop);
//! `kernel` owns the eBPF object, its maps and attachments.

// The binary's error type (main.rs); the library's errors are thiserror enums.
use anyhow as _;

pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod config;
pub mod domain;
pub mod engine;
pub mod faults;
pub mod grpc;
pub mod impact;
pub mod kernel;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod procs;
pub mod qdisc;
pub mod remote;
pub mod server;
pub mod ssh;
pub mod state;
pub mod stress;
pub mod worker;
