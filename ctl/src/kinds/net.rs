//! What the network kinds share: the direction and the packet match, in
//! files and on the wire, and the flags for them, for the scopes (a cgroup
//! or an interface, or an interface only) and for how long.

use clap::{ArgGroup, Args};
use faultline_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::Injection;
use crate::{
    cli::inject::RunArgs,
    spec::{self, WireError, fields},
};

// The enums below are named once: serde (files, JSON) and clap (flags) both
// take the lowercase variant names.

/// Which way the packets of a network fault travel; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    #[default]
    Egress,
    Both,
}

/// The IP protocol a network fault matches; written in lowercase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// Which packets a network fault applies to; every field defaults to "any".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacketMatch {
    pub protocol: Protocol,
    /// IPv4 or IPv6 CIDR; empty = any address.
    pub src_cidr: String,
    pub dst_cidr: String,
    /// `80` or `8000-8100`; empty = any port.
    #[serde(deserialize_with = "fields::deserialize_ports")]
    pub src_ports: String,
    #[serde(deserialize_with = "fields::deserialize_ports")]
    pub dst_ports: String,
    /// SSH (port 22) is spared unless this is set.
    pub include_ssh: bool,
}

impl From<Direction> for pb::Direction {
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Ingress => Self::Ingress,
            Direction::Egress => Self::Egress,
            Direction::Both => Self::Both,
        }
    }
}

impl Direction {
    /// The wire form, as a network fault's `direction` field holds it.
    pub fn wire(self) -> i32 {
        pb::Direction::from(self).into()
    }

    /// Unspecified on the wire means egress.
    pub fn from_wire(direction: i32) -> Result<Self, WireError> {
        match pb::Direction::try_from(direction) {
            Ok(pb::Direction::Unspecified | pb::Direction::Egress) => Ok(Self::Egress),
            Ok(pb::Direction::Ingress) => Ok(Self::Ingress),
            Ok(pb::Direction::Both) => Ok(Self::Both),
            Err(_) => Err(WireError(format!("unknown direction {direction}"))),
        }
    }
}

impl Protocol {
    /// The wire form: the lowercase name, or empty for any protocol.
    fn wire_name(self) -> &'static str {
        match self {
            Self::Any => "",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        }
    }

    /// Empty on the wire means any; the agent takes any case.
    fn from_wire(protocol: &str) -> Result<Self, WireError> {
        match protocol.trim().to_ascii_lowercase().as_str() {
            "" | "any" => Ok(Self::Any),
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "icmp" => Ok(Self::Icmp),
            _ => Err(WireError(format!("unknown protocol {protocol:?}"))),
        }
    }
}

impl PacketMatch {
    /// The wire form; a network fault always sends its match.
    pub fn wire(self) -> Option<pb::PacketMatch> {
        Some(pb::PacketMatch {
            protocol: self.protocol.wire_name().to_owned(),
            src_cidr: self.src_cidr,
            dst_cidr: self.dst_cidr,
            src_ports: self.src_ports,
            dst_ports: self.dst_ports,
            include_ssh: self.include_ssh,
        })
    }

    /// A missing match is any packet.
    pub fn from_wire(matching: Option<&pb::PacketMatch>) -> Result<Self, WireError> {
        let Some(m) = matching else {
            return Ok(Self::default());
        };
        Ok(Self {
            protocol: Protocol::from_wire(&m.protocol)?,
            src_cidr: m.src_cidr.clone(),
            dst_cidr: m.dst_cidr.clone(),
            src_ports: m.src_ports.clone(),
            dst_ports: m.dst_ports.clone(),
            include_ssh: m.include_ssh,
        })
    }
}

/// The flags every network fault takes after its own: which way, which
/// packets, where (`S`, the scope the kind supports) and for how long.
#[derive(Debug, Args)]
pub struct NetworkArgs<S: Args> {
    // A kind whose verb is not "drop" rewords this help (`mut_arg`).
    /// Drop received (ingress) or sent (egress) packets, or both.
    #[arg(long, value_enum, default_value_t = Direction::Egress)]
    pub direction: Direction,
    #[command(flatten)]
    pub matching: PacketMatchArgs,
    #[command(flatten)]
    pub scope: S,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Packet filters shared by the network faults; each one defaults to any.
#[derive(Debug, Args)]
pub struct PacketMatchArgs {
    /// Only packets of this IP protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Any)]
    pub protocol: Protocol,
    /// Only packets from this address range, IPv4 or IPv6 CIDR.
    #[arg(long, value_name = "CIDR")]
    pub src_cidr: Option<String>,
    /// Only packets to this address range, IPv4 or IPv6 CIDR.
    #[arg(long, value_name = "CIDR")]
    pub dst_cidr: Option<String>,
    /// Only packets from this port or range, e.g. 80 or 8000-8100 (tcp and udp).
    #[arg(long, value_name = "PORTS", value_parser = spec::parse_ports)]
    pub src_ports: Option<String>,
    /// Only packets to this port or range, e.g. 80 or 8000-8100 (tcp and udp).
    #[arg(long, value_name = "PORTS", value_parser = spec::parse_ports)]
    pub dst_ports: Option<String>,
    /// Fault SSH (port 22) packets too; they are spared by default.
    #[arg(long)]
    pub include_ssh: bool,
}

/// Scope of the network faults that work on both: exactly one of a cgroup
/// or an interface. Its only group is that choice (`group(skip)`), so that
/// usage lines show the flags themselves.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(
    ArgGroup::new("target")
        .args(["cgroup", "interface"])
        .required(true)
))]
pub struct CgroupOrInterface {
    /// Fault the packets of processes in this cgroup v2 directory and its descendants.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Fault the packets on this network interface, e.g. eth0.
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,
    /// Accept a cgroup that covers the host's own machinery (the cgroup2
    /// root, or one holding the agent).
    #[arg(long)]
    pub allow_host_wide: bool,
}

/// Scope of the network faults that only work on an interface: there is no
/// cgroup scope for them. No group (`group(skip)`), so that usage lines show
/// `--interface` as a plain required flag.
#[derive(Debug, Args)]
#[group(skip)]
pub struct InterfaceOnly {
    /// Fault the packets on this network interface, e.g. eth0.
    #[arg(long, value_name = "NAME")]
    pub interface: String,
}

impl From<CgroupOrInterface> for spec::Target {
    fn from(scope: CgroupOrInterface) -> Self {
        Self {
            cgroup: scope.cgroup.unwrap_or_default(),
            interface: scope.interface.unwrap_or_default(),
            allow_host_wide: scope.allow_host_wide,
            ..Self::default()
        }
    }
}

impl From<InterfaceOnly> for spec::Target {
    fn from(scope: InterfaceOnly) -> Self {
        Self {
            interface: scope.interface,
            ..Self::default()
        }
    }
}

impl<S: Args + Into<spec::Target>> NetworkArgs<S> {
    /// The network fault that `fault` builds from the direction and the
    /// packet match, on the scope.
    pub fn into_injection<K>(
        self,
        fault: impl FnOnce(Direction, PacketMatch) -> K,
    ) -> Injection<K> {
        Injection {
            fault: fault(self.direction, self.matching.into()),
            target: self.scope.into(),
            run: self.run,
        }
    }
}

impl From<PacketMatchArgs> for PacketMatch {
    fn from(args: PacketMatchArgs) -> Self {
        Self {
            protocol: args.protocol,
            src_cidr: args.src_cidr.unwrap_or_default(),
            dst_cidr: args.dst_cidr.unwrap_or_default(),
            src_ports: args.src_ports.unwrap_or_default(),
            dst_ports: args.dst_ports.unwrap_or_default(),
            include_ssh: args.include_ssh,
        }
    }
}
