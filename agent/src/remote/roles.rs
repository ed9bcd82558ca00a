//! The roles file (`--roles FILE`, `roles = "..."`): which TLS client
//! identity, unix user and unix group gets which role. Its format:
//!
//! ```toml
//! [clients]        # certificate identity (URI SAN, else CN) = role
//! alice = "operator"
//! "spiffe://example.org/ci" = "viewer"
//!
//! [unix_users]     # uid = role (uid 0 is always admin)
//! "1000" = "viewer"
//!
//! [unix_groups]    # gid or group name = role; the socket becomes
//! faultline = "viewer"  # group-owned 0660 so that group can connect
//! ```
//!
//! `faultctl certs issue NAME --role R` writes `[clients]` entries.

use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use crate::grpc::caller::Role;

#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    clients: HashMap<String, String>,
    #[serde(default)]
    unix_users: HashMap<String, String>,
    #[serde(default)]
    unix_groups: HashMap<String, String>,
}

/// The parsed roles file; the empty one gives nobody but root a role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    clients: HashMap<String, Role>,
    uids: HashMap<u32, Role>,
    gids: HashMap<u32, Role>,
    /// The one group the unix socket is shared with (0660).
    socket_group: Option<u32>,
}

pub fn parse_role(s: &str) -> Option<Role> {
    match s.trim() {
        "viewer" => Some(Role::Viewer),
        "operator" => Some(Role::Operator),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

impl Roles {
    pub fn load(path: &Path) -> Result<Self, RolesError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RolesError::Read(name.clone(), e))?;
        Self::parse(&text, &|g| {
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        })
        .map_err(|e| RolesError::Parse(name, e))
    }

    /// `group_id` resolves a group name (the host's group database in `load`).
    pub fn parse(text: &str, group_id: &dyn Fn(&str) -> Option<u32>) -> Result<Self, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let role = |section: &str, key: &str, v: &str| {
            parse_role(v).ok_or_else(|| {
                format!("[{section}] {key:?} = {v:?}: the role must be viewer, operator or admin")
            })
        };
        let mut roles = Self::default();
        for (id, r) in &f.clients {
            if id.trim().is_empty() {
                return Err("[clients]: an empty identity".into());
            }
            roles.clients.insert(id.clone(), role("clients", id, r)?);
        }
        for (uid, r) in &f.unix_users {
            let n = uid
                .trim()
                .parse()
                .map_err(|_| format!("[unix_users] {uid:?}: not a numeric uid"))?;
            roles.uids.insert(n, role("unix_users", uid, r)?);
        }
        for (g, r) in &f.unix_groups {
            let gid = match g.trim().parse() {
                Ok(n) => n,
                Err(_) => group_id(g.trim())
                    .ok_or_else(|| format!("[unix_groups] {g:?}: no such group"))?,
            };
            roles.gids.insert(gid, role("unix_groups", g, r)?);
        }
        if roles.gids.len() > 1 {
            return Err(
                "[unix_groups]: at most one group (the unix socket can be shared with one group)"
                    .into(),
            );
        }
        roles.socket_group = roles.gids.keys().next().copied();
        Ok(roles)
    }

    pub fn for_client(&self, identity: &str) -> Option<Role> {
        self.clients.get(identity).copied()
    }

    /// Root is admin; otherwise the best of the uid's and its groups' roles.
    pub fn for_unix(&self, uid: u32, gids: &[u32]) -> Option<Role> {
        if uid == 0 {
            return Some(Role::Admin);
        }
        let by_group = gids.iter().filter_map(|g| self.gids.get(g).copied());
        self.uids
            .get(&uid)
            .copied()
            .into_iter()
            .chain(by_group)
            .max()
    }

    pub fn socket_group(&self) -> Option<u32> {
        self.socket_group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(name: &str) -> Option<u32> {
        (name == "faultline").then_some(990)
    }

    #[test]
    fn roles_file_maps_identities_users_and_groups() {
        let r = Roles::parse(
            "[clients]\nalice = \"operator\"\n\"spiffe://x/ci\" = \"viewer\"\n\
             [unix_users]\n\"1000\" = \"admin\"\n[unix_groups]\nfaultline = \"viewer\"\n",
            &groups,
        )
        .unwrap();
        assert_eq!(r.for_client("alice"), Some(Role::Operator));
        assert_eq!(r.for_client("spiffe://x/ci"), Some(Role::Viewer));
        assert_eq!(r.for_client("mallory"), None);
        assert_eq!(r.for_unix(0, &[]), Some(Role::Admin));
        assert_eq!(r.for_unix(1000, &[]), Some(Role::Admin));
        assert_eq!(r.for_unix(1001, &[5, 990]), Some(Role::Viewer));
        assert_eq!(r.for_unix(1001, &[5]), None);
        assert_eq!(r.socket_group(), Some(990));
        assert_eq!(Roles::parse("", &groups).unwrap(), Roles::default());
    }

    #[test]
    fn bad_roles_files_name_the_entry() {
        for (text, expected) in [
            ("[clients]\nalice = \"root\"\n", "\"alice\""),
            ("[unix_users]\nbob = \"viewer\"\n", "numeric uid"),
            ("[unix_groups]\nnope = \"viewer\"\n", "no such group"),
            (
                "[unix_groups]\n\"1\" = \"viewer\"\n\"2\" = \"viewer\"\n",
                "at most one",
            ),
            ("[client]\nalice = \"viewer\"\n", "client"),
        ] {
            let e = Roles::parse(text, &groups).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
