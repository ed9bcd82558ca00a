//! `syscall_error`: fail a syscall with an errno.

use clap::Args;
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CtlKind, Injection};
use crate::{
    cli::inject::ExperimentArgs,
    spec::{self, WireError, fields},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallError {
    pub syscall: String,
    pub errno: String,
    #[serde(
        default = "fields::always",
        deserialize_with = "fields::deserialize_probability"
    )]
    pub probability: f64,
    /// 0 = any port.
    #[serde(default)]
    pub port: u32,
    /// Empty = any address.
    #[serde(default)]
    pub cidr: String,
    /// File calls: only files at or below this path. Empty = every file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// Fail a syscall with an errno: a socket call, or a file or process call.
///
/// The cgroup socket hooks fail connect, bind and sendmsg. Where the
/// kernel has BPF LSM, file, process and socket calls fail too: openat,
/// read, write, execve, fork, unlink, mkdir, accept and more (see
/// --syscall; `faultctl caps` shows what this host offers).
#[derive(Debug, Args)]
pub struct SyscallErrorArgs {
    /// connect, bind, sendmsg (cgroup socket hooks) or, where the kernel has
    /// BPF LSM, open, read, write, mmap, mprotect, ioctl, execve, fork, kill,
    /// socket, accept, listen, recvmsg, unlink, rmdir, mkdir, rename, link,
    /// symlink (and their variants). `faultctl caps` shows what this host offers.
    #[arg(long)]
    pub syscall: String,
    /// Errno name, e.g. ECONNREFUSED.
    #[arg(long)]
    pub errno: String,
    /// Chance that a matching call fails, in [0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = spec::parse_probability)]
    pub probability: f64,
    /// Destination port (bound port for bind, local port for accept, listen,
    /// recvmsg); 0 = any.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Destination (bound) address range, IPv4 or IPv6 CIDR; default any.
    #[arg(long)]
    pub cidr: Option<String>,
    /// File calls only: fail only for files at or below this absolute path.
    #[arg(long)]
    pub path: Option<String>,
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

impl CtlKind for SyscallError {
    type Wire = pb::SyscallError;
    type Args = SyscallErrorArgs;

    fn to_wire(self) -> pb::SyscallError {
        pb::SyscallError {
            syscall: self.syscall,
            errno: self.errno,
            probability: self.probability,
            port: self.port,
            cidr: self.cidr,
            path: self.path,
        }
    }

    fn from_wire(f: &pb::SyscallError) -> Result<Self, WireError> {
        Ok(Self {
            syscall: f.syscall.clone(),
            errno: f.errno.clone(),
            probability: f.probability,
            port: f.port,
            cidr: f.cidr.clone(),
            path: f.path.clone(),
        })
    }

    #[cfg(test)]
    fn examples() -> Vec<pb::SyscallError> {
        vec![
            pb::SyscallError {
                syscall: "connect".into(),
                errno: "ECONNREFUSED".into(),
                probability: 0.5,
                port: 8080,
                cidr: "10.0.0.0/8".into(),
                path: String::new(),
            },
            // An LSM call, with a path.
            pb::SyscallError {
                syscall: "openat".into(),
                errno: "EACCES".into(),
                probability: 0.25,
                port: 0,
                cidr: String::new(),
                path: "/var/lib/app".into(),
            },
        ]
    }

    fn from_args(args: SyscallErrorArgs) -> anyhow::Result<Injection<Self>> {
        Ok(args.experiment.into_injection(Self {
            syscall: args.syscall,
            errno: args.errno,
            probability: args.probability,
            port: u32::from(args.port),
            cidr: args.cidr.unwrap_or_default(),
            path: args.path.unwrap_or_default(),
        }))
    }
}
