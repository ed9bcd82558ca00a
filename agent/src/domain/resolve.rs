//! Host look-ups behind one trait, so validation is unit-tested without
//! root (and without the names existing): cgroup paths, interfaces, file
//! paths and processes.

use std::path::Path;

use super::{Interface, PathMatch};
use crate::cgroup::Cgroup;

/// Resolves the names a request gives to what the kernel uses. Each error
/// is the reason only; the caller names the field.
pub trait Resolver: Sync {
    /// A cgroup2 directory, absolute or relative to the cgroup2 mount.
    fn cgroup(&self, path: &str) -> Result<Cgroup, String>;
    fn interface(&self, name: &str) -> Result<Interface, String>;
    /// An absolute path to an existing file or directory, as the LSM
    /// programs identify it (see `file_identity`).
    fn path(&self, path: &str) -> Result<PathMatch, String>;
    fn process_exists(&self, pid: u32) -> bool;
}

/// The real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostResolver;

impl Resolver for HostResolver {
    fn cgroup(&self, path: &str) -> Result<Cgroup, String> {
        Cgroup::resolve(path).map_err(|e| e.to_string())
    }

    fn interface(&self, name: &str) -> Result<Interface, String> {
        let ifindex = nix::net::if_::if_nametoindex(name)
            .map_err(|_| format!("no interface named {name:?} on this host"))?;
        Ok(Interface {
            name: name.to_owned(),
            ifindex,
        })
    }

    fn path(&self, path: &str) -> Result<PathMatch, String> {
        super::file_identity::resolve(path)
    }

    fn process_exists(&self, pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }
}
