//! The flags of `faultctl inject KIND`, one fault each, and how they become
//! an experiment. Values go through the same parsers as an experiment file's
//! ([`spec`]'s), so a flag and a field accept the same text.

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Duration};

use anyhow::bail;
use clap::{ArgGroup, Args, Subcommand};

use crate::spec;

#[derive(Debug, Subcommand)]
pub enum InjectCommand {
    /// Fail a syscall with an errno: a socket call, or a file or process call.
    ///
    /// The cgroup socket hooks fail connect, bind and sendmsg. Where the
    /// kernel has BPF LSM, file, process and socket calls fail too: openat,
    /// read, write, execve, fork, unlink, mkdir, accept and more (see
    /// --syscall; `faultctl caps` shows what this host offers).
    SyscallError(SyscallErrorArgs),
    /// Send a signal to the target when it enters a syscall.
    SyscallSignal(SyscallSignalArgs),
    /// Drop a fraction of the matching packets of a cgroup or an interface.
    PacketLoss(PacketLossArgs),
    /// Drop every matching packet of a cgroup or an interface: a partition.
    Blackhole(NetworkArgs<CgroupOrInterface>),
    /// Send a fraction of the matching packets of an interface twice.
    Duplicate(DuplicateArgs),
    /// Flip one bit in a fraction of the matching packets of an interface.
    Corrupt(CorruptArgs),
    /// Limit the matching traffic of a cgroup or an interface to a rate;
    /// packets over it are dropped.
    Bandwidth(BandwidthArgs),
    /// Delay the matching packets an interface sends (egress), with
    /// optional jitter; the agent installs the fq qdisc while it runs.
    Latency(LatencyArgs),
    /// Fail the DNS queries a cgroup or an interface sends for names in a
    /// domain: drop them, or answer SERVFAIL or NXDOMAIN (interface only).
    DnsError(DnsErrorArgs),
}

#[derive(Debug, Args)]
pub struct DnsErrorArgs {
    /// Names in this domain fail (example.com: it and every name below it);
    /// omit for every name.
    #[arg(long, default_value = "")]
    pub domain: String,
    /// drop (the client times out), servfail or nxdomain (answers need
    /// --interface).
    #[arg(long, value_enum, default_value_t = spec::DnsFailure::Drop)]
    pub failure: spec::DnsFailure,
    /// Chance that a matching query fails, in [0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = spec::parse_probability)]
    pub probability: f64,
    /// Only queries to resolvers in this CIDR.
    #[arg(long, value_name = "CIDR")]
    pub resolver_cidr: Option<String>,
    #[command(flatten)]
    pub scope: CgroupOrInterface,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Latency delays sent (egress) packets only").hide(true)
}))]
pub struct LatencyArgs {
    /// Fixed delay, e.g. 50ms or 1.5ms (up to 10s).
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_short_duration)]
    pub delay: Duration,
    /// Uniform jitter around the delay, e.g. 10ms (at most the delay).
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_short_duration)]
    pub jitter: Option<Duration>,
    #[command(flatten)]
    pub network: NetworkArgs<InterfaceOnly>,
}

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

#[derive(Debug, Args)]
pub struct SyscallSignalArgs {
    /// Syscall name, e.g. openat.
    #[arg(long)]
    pub syscall: String,
    /// Signal name or number: KILL, SIGSEGV, 9.
    #[arg(long)]
    pub signal: String,
    /// Chance per matching call, in [0, 1] [default: 1].
    #[arg(long, value_parser = spec::parse_probability, conflicts_with = "nth_call")]
    pub probability: Option<f64>,
    /// Signal exactly at the Nth matching call of each target process (1-based).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub nth_call: Option<u64>,
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

#[derive(Debug, Args)]
pub struct PacketLossArgs {
    /// Mean fraction of matching packets lost, in [0, 1].
    #[arg(long, value_parser = spec::parse_probability)]
    pub probability: f64,
    /// Mean length of a loss burst in packets; 0 or 1 = independent losses.
    #[arg(long, value_name = "N", default_value_t = 0.0, value_parser = spec::parse_burst_length)]
    pub burst_length: f64,
    #[command(flatten)]
    pub network: NetworkArgs<CgroupOrInterface>,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Duplicate received (ingress) or sent (egress) packets, or both")
}))]
pub struct DuplicateArgs {
    /// Fraction of matching packets sent twice, in [0, 1].
    #[arg(long, value_parser = spec::parse_probability)]
    pub probability: f64,
    #[command(flatten)]
    pub network: NetworkArgs<InterfaceOnly>,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Corrupt received (ingress) or sent (egress) packets, or both")
}))]
pub struct CorruptArgs {
    /// Fraction of matching packets with one bit flipped, in [0, 1].
    #[arg(long, value_parser = spec::parse_probability)]
    pub probability: f64,
    /// Recompute the L4 checksum so that the corrupted data is delivered;
    /// by default the checksums stay wrong and the receiver drops the packet.
    #[arg(long)]
    pub recompute_checksums: bool,
    #[command(flatten)]
    pub network: NetworkArgs<InterfaceOnly>,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Limit received (ingress) or sent (egress) packets, or both")
}))]
pub struct BandwidthArgs {
    /// Rate in bits per second: a number, or one with kbit, mbit or gbit
    /// (×1000), e.g. 500kbit, 10mbit, 2.5gbit; kbps, mbps and gbps mean the
    /// same (bits, not bytes).
    #[arg(long, value_name = "RATE", value_parser = spec::parse_rate)]
    pub rate: u64,
    /// Bucket depth in bytes, with k or m for ×1024, e.g. 64k; 0 lets the
    /// agent pick max(64k, 20ms at the rate).
    #[arg(long, value_name = "BYTES", default_value_t = 0, value_parser = spec::parse_burst)]
    pub burst: u32,
    #[command(flatten)]
    pub network: NetworkArgs<CgroupOrInterface>,
}

/// The flags every network fault takes after its own: which way, which
/// packets, where (`S`, the scope the kind supports) and for how long.
#[derive(Debug, Args)]
pub struct NetworkArgs<S: Args> {
    // `duplicate` and `corrupt` reword this help (`mut_arg`) with their verb.
    /// Drop received (ingress) or sent (egress) packets, or both.
    #[arg(long, value_enum, default_value_t = spec::Direction::Egress)]
    pub direction: spec::Direction,
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
    #[arg(long, value_enum, default_value_t = spec::Protocol::Any)]
    pub protocol: spec::Protocol,
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

/// Target and lifetime flags of the process faults (`syscall-*`).
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .args(["pids", "cgroup", "comm"])
        .required(true)
        .multiple(true)
))]
pub struct ExperimentArgs {
    /// Target this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Target processes in this cgroup v2 directory and its descendants.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Target processes with this name (the kernel's comm, at most 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Never fault this process (repeatable).
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub exclude_pids: Vec<u32>,
    /// Never fault processes with this name.
    #[arg(long, value_name = "NAME")]
    pub exclude_comm: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
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
}

/// Scope of the network faults that only work on an interface (`duplicate`,
/// `corrupt`): there is no cgroup scope for them. No group (`group(skip)`),
/// so that usage lines show `--interface` as a plain required flag.
#[derive(Debug, Args)]
#[group(skip)]
pub struct InterfaceOnly {
    /// Fault the packets on this network interface, e.g. eth0.
    #[arg(long, value_name = "NAME")]
    pub interface: String,
}

/// Lifetime flags shared by every `inject` subcommand.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How long the faults stay armed, e.g. 30s, 2m, 1500ms.
    #[arg(long, value_parser = spec::parse_duration)]
    pub duration: Duration,
    /// Count what would be injected; inject nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Label the experiment (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Name for humans.
    #[arg(long)]
    pub name: Option<String>,
}

impl RunArgs {
    fn into_experiment(
        self,
        target: spec::Target,
        fault: spec::Fault,
    ) -> anyhow::Result<spec::Experiment> {
        let mut labels = BTreeMap::new();
        for (key, value) in self.labels {
            if labels.insert(key.clone(), value).is_some() {
                bail!("--label {key} is given more than once");
            }
        }
        Ok(spec::Experiment {
            name: self.name.unwrap_or_default(),
            duration: self.duration,
            dry_run: self.dry_run,
            labels,
            target,
            faults: vec![fault],
        })
    }
}

impl ExperimentArgs {
    fn into_experiment(self, fault: spec::Fault) -> anyhow::Result<spec::Experiment> {
        let target = spec::Target {
            pids: self.pids,
            cgroup: self.cgroup.unwrap_or_default(),
            comm: self.comm.unwrap_or_default(),
            exclude_pids: self.exclude_pids,
            exclude_comm: self.exclude_comm.unwrap_or_default(),
            interface: String::new(),
        };
        self.run.into_experiment(target, fault)
    }
}

impl From<CgroupOrInterface> for spec::Target {
    fn from(scope: CgroupOrInterface) -> Self {
        Self {
            cgroup: scope.cgroup.unwrap_or_default(),
            interface: scope.interface.unwrap_or_default(),
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
    /// The experiment of the network fault that `fault` builds from the
    /// direction and the packet match.
    fn into_experiment(
        self,
        fault: impl FnOnce(spec::Direction, spec::PacketMatch) -> spec::Fault,
    ) -> anyhow::Result<spec::Experiment> {
        let fault = fault(self.direction, self.matching.into());
        self.run.into_experiment(self.scope.into(), fault)
    }
}

impl From<PacketMatchArgs> for spec::PacketMatch {
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

impl InjectCommand {
    pub fn into_experiment(self) -> anyhow::Result<spec::Experiment> {
        match self {
            Self::SyscallError(args) => {
                args.experiment
                    .into_experiment(spec::Fault::SyscallError(spec::SyscallError {
                        syscall: args.syscall,
                        errno: args.errno,
                        probability: args.probability,
                        port: u32::from(args.port),
                        cidr: args.cidr.unwrap_or_default(),
                        path: args.path.unwrap_or_default(),
                    }))
            }
            Self::SyscallSignal(args) => {
                args.experiment
                    .into_experiment(spec::Fault::SyscallSignal(spec::SyscallSignal {
                        syscall: args.syscall,
                        signal: args.signal,
                        // The agent ignores the probability when nth_call is set.
                        probability: args.probability.unwrap_or(1.0),
                        nth_call: args.nth_call.unwrap_or(0),
                    }))
            }
            Self::PacketLoss(args) => args.network.into_experiment(|direction, matching| {
                spec::Fault::PacketLoss(spec::PacketLoss {
                    probability: args.probability,
                    burst_length: args.burst_length,
                    direction,
                    matching,
                })
            }),
            Self::Blackhole(network) => network.into_experiment(|direction, matching| {
                spec::Fault::Blackhole(spec::Blackhole {
                    direction,
                    matching,
                })
            }),
            Self::Duplicate(args) => args.network.into_experiment(|direction, matching| {
                spec::Fault::Duplicate(spec::Duplicate {
                    probability: args.probability,
                    direction,
                    matching,
                })
            }),
            Self::Corrupt(args) => args.network.into_experiment(|direction, matching| {
                spec::Fault::Corrupt(spec::Corrupt {
                    probability: args.probability,
                    recompute_checksums: args.recompute_checksums,
                    direction,
                    matching,
                })
            }),
            Self::DnsError(args) => args.run.into_experiment(
                args.scope.into(),
                spec::Fault::DnsError(spec::DnsError {
                    domain: args.domain,
                    failure: args.failure,
                    probability: args.probability,
                    resolver_cidr: args.resolver_cidr.unwrap_or_default(),
                }),
            ),
            Self::Latency(args) => {
                if args.network.direction != spec::Direction::Egress {
                    anyhow::bail!("--direction: latency delays egress packets only");
                }
                args.network.into_experiment(|_, matching| {
                    spec::Fault::Latency(spec::Latency {
                        delay_ms: args.delay.as_secs_f64() * 1e3,
                        jitter_ms: args.jitter.unwrap_or_default().as_secs_f64() * 1e3,
                        matching,
                    })
                })
            }
            Self::Bandwidth(args) => args.network.into_experiment(|direction, matching| {
                spec::Fault::Bandwidth(spec::Bandwidth {
                    rate_bits_per_sec: args.rate,
                    burst_bytes: args.burst,
                    direction,
                    matching,
                })
            }),
        }
    }
}

/// `KEY=VALUE`; the value may be empty and may contain `=`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected KEY=VALUE, found no '=' in {text:?}"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!(
            "expected KEY=VALUE, found an empty key in {text:?}"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}
