//! `faultctl`: the operator CLI for faultline-agent's gRPC API.

mod connect;
mod output;
mod spec;
#[cfg(test)]
mod test_support;

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use clap::{
    ArgGroup, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand,
    parser::ValueSource,
};
use faultline_proto::v1 as pb;

use crate::{
    connect::{AgentAddress, Client, RpcError, connect},
    output::{ExperimentJson, OutputFormat},
};

#[derive(Debug, Parser)]
#[command(
    name = "faultctl",
    version,
    about = "Inject, watch and stop fault experiments through faultline-agent"
)]
struct Cli {
    /// Unix socket of the agent's gRPC API.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_SOCKET",
        default_value = "/run/faultline/agent.sock",
        value_name = "PATH"
    )]
    socket: PathBuf,

    /// Reach the agent over TCP instead of the socket, e.g. http://127.0.0.1:50051.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_ENDPOINT",
        value_name = "URL"
    )]
    endpoint: Option<String>,

    /// How to print results.
    #[arg(
        long,
        short,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    output: OutputFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per run; boxing would only obscure the clap types"
)]
enum Command {
    /// Show which fault kinds this kernel supports, and why not when it does not.
    Caps,
    /// Start an experiment with one fault, given by flags.
    #[command(subcommand)]
    Inject(InjectCommand),
    /// Start the experiment described in a YAML or JSON file.
    Apply {
        /// Experiment file (YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// List experiments.
    #[command(visible_alias = "list")]
    Ls {
        /// Only running experiments.
        #[arg(long)]
        running: bool,
    },
    /// Show one experiment with its per-fault counters.
    Status {
        /// Experiment id.
        id: String,
    },
    /// Stop an experiment, or all of them.
    Stop(StopArgs),
    /// Print experiment events as they happen, until interrupted.
    Watch {
        /// Only this experiment's events.
        id: Option<String>,
        /// How often the agent sends counter updates.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
    },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), as `cargo xtask man` installs it.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
enum InjectCommand {
    /// Fail a syscall with an errno (connect, bind, sendmsg).
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
struct DnsErrorArgs {
    /// Names in this domain fail (example.com: it and every name below it);
    /// omit for every name.
    #[arg(long, default_value = "")]
    domain: String,
    /// drop (the client times out), servfail or nxdomain (answers need
    /// --interface).
    #[arg(long, value_enum, default_value_t = spec::DnsFailure::Drop)]
    failure: spec::DnsFailure,
    /// Chance that a matching query fails, in [0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = parse_probability)]
    probability: f64,
    /// Only queries to resolvers in this CIDR.
    #[arg(long, value_name = "CIDR")]
    resolver_cidr: Option<String>,
    #[command(flatten)]
    scope: CgroupOrInterface,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Latency delays sent (egress) packets only").hide(true)
}))]
struct LatencyArgs {
    /// Fixed delay, e.g. 50ms or 1.5ms (up to 10s).
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_short_duration)]
    delay: Duration,
    /// Uniform jitter around the delay, e.g. 10ms (at most the delay).
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_short_duration)]
    jitter: Option<Duration>,
    #[command(flatten)]
    network: NetworkArgs<InterfaceOnly>,
}

#[derive(Debug, Args)]
struct SyscallErrorArgs {
    /// connect, bind, sendmsg (cgroup socket hooks) or, where the kernel has
    /// BPF LSM, open, read, write, mmap, mprotect, ioctl, execve, fork, kill,
    /// socket, accept, listen, recvmsg, unlink, rmdir, mkdir, rename, link,
    /// symlink (and their variants). `faultctl caps` shows what this host offers.
    #[arg(long)]
    syscall: String,
    /// Errno name, e.g. ECONNREFUSED.
    #[arg(long)]
    errno: String,
    /// Chance that a matching call fails, in [0, 1].
    #[arg(long, default_value_t = 1.0, value_parser = parse_probability)]
    probability: f64,
    /// Destination port (bound port for bind, local port for accept, listen,
    /// recvmsg); 0 = any.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Destination (bound) address range, IPv4 or IPv6 CIDR; default any.
    #[arg(long)]
    cidr: Option<String>,
    /// File calls only: fail only for files at or below this absolute path.
    #[arg(long)]
    path: Option<String>,
    #[command(flatten)]
    experiment: ExperimentArgs,
}

#[derive(Debug, Args)]
struct SyscallSignalArgs {
    /// Syscall name, e.g. openat.
    #[arg(long)]
    syscall: String,
    /// Signal name or number: KILL, SIGSEGV, 9.
    #[arg(long)]
    signal: String,
    /// Chance per matching call, in [0, 1] [default: 1].
    #[arg(long, value_parser = parse_probability, conflicts_with = "nth_call")]
    probability: Option<f64>,
    /// Signal exactly at the Nth matching call of each target process (1-based).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    nth_call: Option<u64>,
    #[command(flatten)]
    experiment: ExperimentArgs,
}

#[derive(Debug, Args)]
struct PacketLossArgs {
    /// Mean fraction of matching packets lost, in [0, 1].
    #[arg(long, value_parser = parse_probability)]
    probability: f64,
    /// Mean length of a loss burst in packets; 0 or 1 = independent losses.
    #[arg(long, value_name = "N", default_value_t = 0.0, value_parser = parse_burst_length)]
    burst_length: f64,
    #[command(flatten)]
    network: NetworkArgs<CgroupOrInterface>,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Duplicate received (ingress) or sent (egress) packets, or both")
}))]
struct DuplicateArgs {
    /// Fraction of matching packets sent twice, in [0, 1].
    #[arg(long, value_parser = parse_probability)]
    probability: f64,
    #[command(flatten)]
    network: NetworkArgs<InterfaceOnly>,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Corrupt received (ingress) or sent (egress) packets, or both")
}))]
struct CorruptArgs {
    /// Fraction of matching packets with one bit flipped, in [0, 1].
    #[arg(long, value_parser = parse_probability)]
    probability: f64,
    /// Recompute the L4 checksum so that the corrupted data is delivered;
    /// by default the checksums stay wrong and the receiver drops the packet.
    #[arg(long)]
    recompute_checksums: bool,
    #[command(flatten)]
    network: NetworkArgs<InterfaceOnly>,
}

#[derive(Debug, Args)]
#[command(mut_arg("direction", |arg| {
    arg.help("Limit received (ingress) or sent (egress) packets, or both")
}))]
struct BandwidthArgs {
    /// Rate in bits per second: a number, or one with kbit, mbit or gbit
    /// (×1000), e.g. 500kbit, 10mbit, 2.5gbit; kbps, mbps and gbps mean the
    /// same (bits, not bytes).
    #[arg(long, value_name = "RATE", value_parser = spec::parse_rate)]
    rate: u64,
    /// Bucket depth in bytes, with k or m for ×1024, e.g. 64k; 0 lets the
    /// agent pick max(64k, 20ms at the rate).
    #[arg(long, value_name = "BYTES", default_value_t = 0, value_parser = spec::parse_burst)]
    burst: u32,
    #[command(flatten)]
    network: NetworkArgs<CgroupOrInterface>,
}

/// The flags every network fault takes after its own: which way, which
/// packets, where (`S`, the scope the kind supports) and for how long.
#[derive(Debug, Args)]
struct NetworkArgs<S: Args> {
    // `duplicate` and `corrupt` reword this help (`mut_arg`) with their verb.
    /// Drop received (ingress) or sent (egress) packets, or both.
    #[arg(long, value_enum, default_value_t = spec::Direction::Egress)]
    direction: spec::Direction,
    #[command(flatten)]
    matching: PacketMatchArgs,
    #[command(flatten)]
    scope: S,
    #[command(flatten)]
    run: RunArgs,
}

/// Packet filters shared by the network faults; each one defaults to any.
#[derive(Debug, Args)]
struct PacketMatchArgs {
    /// Only packets of this IP protocol.
    #[arg(long, value_enum, default_value_t = spec::Protocol::Any)]
    protocol: spec::Protocol,
    /// Only packets from this address range, IPv4 or IPv6 CIDR.
    #[arg(long, value_name = "CIDR")]
    src_cidr: Option<String>,
    /// Only packets to this address range, IPv4 or IPv6 CIDR.
    #[arg(long, value_name = "CIDR")]
    dst_cidr: Option<String>,
    /// Only packets from this port or range, e.g. 80 or 8000-8100 (tcp and udp).
    #[arg(long, value_name = "PORTS", value_parser = spec::parse_ports)]
    src_ports: Option<String>,
    /// Only packets to this port or range, e.g. 80 or 8000-8100 (tcp and udp).
    #[arg(long, value_name = "PORTS", value_parser = spec::parse_ports)]
    dst_ports: Option<String>,
    /// Fault SSH (port 22) packets too; they are spared by default.
    #[arg(long)]
    include_ssh: bool,
}

/// Target and lifetime flags of the process faults (`syscall-*`).
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .args(["pids", "cgroup", "comm"])
        .required(true)
        .multiple(true)
))]
struct ExperimentArgs {
    /// Target this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Target processes in this cgroup v2 directory and its descendants.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
    /// Target processes with this name (the kernel's comm, at most 15 bytes).
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// Never fault this process (repeatable).
    #[arg(long = "exclude-pid", value_name = "PID")]
    exclude_pids: Vec<u32>,
    /// Never fault processes with this name.
    #[arg(long, value_name = "NAME")]
    exclude_comm: Option<String>,
    #[command(flatten)]
    run: RunArgs,
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
struct CgroupOrInterface {
    /// Fault the packets of processes in this cgroup v2 directory and its descendants.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
    /// Fault the packets on this network interface, e.g. eth0.
    #[arg(long, value_name = "NAME")]
    interface: Option<String>,
}

/// Scope of the network faults that only work on an interface (`duplicate`,
/// `corrupt`): there is no cgroup scope for them. No group (`group(skip)`),
/// so that usage lines show `--interface` as a plain required flag.
#[derive(Debug, Args)]
#[group(skip)]
struct InterfaceOnly {
    /// Fault the packets on this network interface, e.g. eth0.
    #[arg(long, value_name = "NAME")]
    interface: String,
}

/// Lifetime flags shared by every `inject` subcommand.
#[derive(Debug, Args)]
struct RunArgs {
    /// How long the faults stay armed, e.g. 30s, 2m, 1500ms.
    #[arg(long, value_parser = spec::parse_duration)]
    duration: Duration,
    /// Count what would be injected; inject nothing.
    #[arg(long)]
    dry_run: bool,
    /// Label the experiment (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Name for humans.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").args(["id", "all"]).required(true)))]
struct StopArgs {
    /// Experiment id.
    id: Option<String>,
    /// Stop every running experiment.
    #[arg(long)]
    all: bool,
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
    fn into_experiment(self) -> anyhow::Result<spec::Experiment> {
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

fn parse_probability(text: &str) -> Result<f64, String> {
    let probability: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number between 0 and 1, found {text:?}"))?;
    if !(0.0..=1.0).contains(&probability) {
        return Err(format!("expected a number between 0 and 1, found {text}"));
    }
    Ok(probability)
}

/// A mean burst length in packets: 0 or more, where 0 and 1 both mean
/// independent losses.
fn parse_burst_length(text: &str) -> Result<f64, String> {
    let length: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of packets, found {text:?}"))?;
    if !length.is_finite() || length < 0.0 {
        return Err(format!(
            "expected a number of packets (0 or more), found {text}"
        ));
    }
    Ok(length)
}

/// The agent's floor for counter updates is 100ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = spec::parse_duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err(format!(
            "interval {text:?} is below the agent's minimum of 100ms"
        ));
    }
    Ok(interval)
}

/// `--endpoint` wins over `--socket`, unless `--socket` was typed and the
/// endpoint only came from `FAULTLINE_ENDPOINT`.
fn agent_address(cli: &Cli, matches: &clap::ArgMatches) -> AgentAddress {
    let typed = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
    match &cli.endpoint {
        Some(url) if typed("endpoint") || !typed("socket") => AgentAddress::Endpoint(url.clone()),
        _ => AgentAddress::Socket(cli.socket.clone()),
    }
}

fn parse_cli() -> (Cli, AgentAddress) {
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.format(&mut command).exit());
    if matches.value_source("socket") == Some(ValueSource::CommandLine)
        && matches.value_source("endpoint") == Some(ValueSource::CommandLine)
    {
        command
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--socket and --endpoint cannot be used together",
            )
            .exit();
    }
    let address = agent_address(&cli, &matches);
    (cli, address)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (cli, address) = parse_cli();
    match run(cli, &address).await {
        Ok(()) => ExitCode::SUCCESS,
        // `faultctl watch | head` closing the pipe is a normal way to stop.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

async fn run(cli: Cli, address: &AgentAddress) -> anyhow::Result<()> {
    let format = cli.output;
    let out = &mut io::stdout().lock();
    // Experiments are built before connecting, so that a bad file is
    // reported as such even when the agent is down.
    match cli.command {
        // These two need no agent.
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "faultctl", out);
            Ok(())
        }
        Command::Man => Ok(clap_mangen::Man::new(Cli::command()).render(out)?),
        Command::Inject(inject) => {
            let experiment = inject.into_experiment()?;
            start(&mut connect(address).await?, experiment, format, out).await
        }
        Command::Apply { file } => {
            let experiment = spec::load(&file)?;
            start(&mut connect(address).await?, experiment, format, out).await
        }
        Command::Caps => caps(&mut connect(address).await?, format, out).await,
        Command::Ls { running } => list(&mut connect(address).await?, running, format, out).await,
        Command::Status { id } => status(&mut connect(address).await?, id, format, out).await,
        Command::Stop(StopArgs { id: Some(id), .. }) => {
            stop(&mut connect(address).await?, id, format, out).await
        }
        Command::Stop(StopArgs { id: None, .. }) => {
            stop_all(&mut connect(address).await?, format, out).await
        }
        Command::Watch { id, interval } => {
            watch(&mut connect(address).await?, id, interval, format, out).await
        }
    }
}

async fn start(
    client: &mut Client,
    experiment: spec::Experiment,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = pb::StartExperimentRequest {
        spec: Some(experiment.into()),
    };
    let response = client
        .start_experiment(request)
        .await
        .map_err(RpcError)?
        .into_inner();
    let experiment = response
        .experiment
        .ok_or_else(|| anyhow!("the agent started the experiment but did not return it"))?;
    match format {
        OutputFormat::Table => writeln!(out, "{}", experiment.id)?,
        OutputFormat::Json => output::write_json(out, &ExperimentJson::from(&experiment))?,
    }
    Ok(())
}

async fn caps(
    client: &mut Client,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest::default())
        .await
        .map_err(RpcError)?
        .into_inner();
    match format {
        OutputFormat::Table => output::write_capabilities_table(out, &caps)?,
        OutputFormat::Json => output::write_json(out, &output::CapabilitiesJson::from(&caps))?,
    }
    Ok(())
}

async fn list(
    client: &mut Client,
    running_only: bool,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiments = client
        .list_experiments(pb::ListExperimentsRequest { running_only })
        .await
        .map_err(RpcError)?
        .into_inner()
        .experiments;
    match format {
        OutputFormat::Table => {
            output::write_experiments_table(out, &experiments, output::now_ms())?;
        }
        OutputFormat::Json => {
            let all: Vec<ExperimentJson> = experiments.iter().map(ExperimentJson::from).collect();
            output::write_json(out, &all)?;
        }
    }
    Ok(())
}

async fn status(
    client: &mut Client,
    id: String,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiment = client
        .get_experiment(pb::GetExperimentRequest { id })
        .await
        .map_err(RpcError)?
        .into_inner();
    match format {
        OutputFormat::Table => output::write_experiment_detail(out, &experiment, output::now_ms())?,
        OutputFormat::Json => output::write_json(out, &ExperimentJson::from(&experiment))?,
    }
    Ok(())
}

async fn stop(
    client: &mut Client,
    id: String,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let experiment = client
        .stop_experiment(pb::StopExperimentRequest { id })
        .await
        .map_err(RpcError)?
        .into_inner();
    match format {
        OutputFormat::Table => writeln!(
            out,
            "{}  {}  matched={} injected={}",
            experiment.id,
            output::state_name(experiment.state),
            experiment.matched,
            experiment.injected
        )?,
        OutputFormat::Json => output::write_json(out, &ExperimentJson::from(&experiment))?,
    }
    Ok(())
}

async fn stop_all(
    client: &mut Client,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let stopped = client
        .stop_all(pb::StopAllRequest {})
        .await
        .map_err(RpcError)?
        .into_inner()
        .stopped_ids;
    match format {
        OutputFormat::Table if stopped.is_empty() => eprintln!("no running experiments"),
        OutputFormat::Table => {
            for id in &stopped {
                writeln!(out, "{id}")?;
            }
        }
        OutputFormat::Json => {
            output::write_json(out, &serde_json::json!({ "stopped_ids": stopped }))?;
        }
    }
    Ok(())
}

/// Without an id, follows every experiment until interrupted; with an id,
/// stops after that experiment's last event.
async fn watch(
    client: &mut Client,
    id: Option<String>,
    interval: Duration,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = pb::WatchEventsRequest {
        experiment_id: id.clone().unwrap_or_default(),
        counters_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
    };
    let mut events = client
        .watch_events(request)
        .await
        .map_err(RpcError)?
        .into_inner();
    if let Some(id) = &id {
        // Asked after subscribing, so that an end in between still arrives
        // as an event; an unknown id fails here instead of waiting forever.
        let experiment = client
            .get_experiment(pb::GetExperimentRequest { id: id.clone() })
            .await
            .map_err(RpcError)?
            .into_inner();
        if experiment.state != pb::ExperimentState::Running as i32 {
            eprintln!(
                "experiment {id} is {}: no more events",
                output::state_name(experiment.state)
            );
            return Ok(());
        }
    }
    while let Some(event) = events.message().await.map_err(RpcError)? {
        match format {
            OutputFormat::Table => output::write_event_line(out, &event),
            OutputFormat::Json => output::write_json_line(out, &output::EventJson::from(&event)),
        }
        .context("cannot write to standard output")?;
        // Each event should show up at once, also when piped.
        out.flush()?;
        if id.is_some() && is_final(&event) {
            break;
        }
    }
    Ok(())
}

fn is_final(event: &pb::Event) -> bool {
    matches!(
        pb::EventType::try_from(event.r#type),
        Ok(pb::EventType::Expired | pb::EventType::Stopped | pb::EventType::Failed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        FULL_MATCH_FLAGS, any_packet, bandwidth, blackhole, corrupt, duplicate, full_match,
        packet_loss,
    };

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("faultctl").chain(args.iter().copied()))
    }

    /// A command line written as one string; no argument in these tests has a space.
    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    /// The spec that `inject ...` sends, or why there is none.
    fn inject_spec(args: &[&str]) -> Result<pb::ExperimentSpec, String> {
        let cli = parse(args).map_err(|err| err.to_string())?;
        let Command::Inject(inject) = cli.command else {
            return Err(format!("expected an inject command, got {:?}", cli.command));
        };
        let experiment = inject.into_experiment().map_err(|err| err.to_string())?;
        Ok(experiment.into())
    }

    /// Asserts that `base` followed by each `extra` is a usage error (exit
    /// code 2) whose message mentions `expected`.
    fn assert_usage_errors(base: &str, cases: &[(&str, &str)]) {
        for (extra, expected) in cases {
            let line = format!("{base} {extra}");
            match parse(&words(&line)) {
                Ok(cli) => panic!("expected {line:?} to be a usage error, got {cli:?}"),
                Err(err) => {
                    assert_eq!(err.exit_code(), 2, "usage errors exit with 2: {line:?}");
                    assert!(
                        err.to_string().contains(expected),
                        "expected the error for {line:?} to mention {expected:?}, got: {err}"
                    );
                }
            }
        }
    }

    /// A valid `syscall-error` injection, for the tests of the flags all faults share.
    const SYSCALL_ERROR: &str =
        "inject syscall-error --syscall connect --errno EPERM --pid 1 --duration 1s";

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_label("team=payments"),
            Ok(("team".into(), "payments".into()))
        );
        assert_eq!(parse_label("query=a=b"), Ok(("query".into(), "a=b".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
    }

    #[test]
    fn bad_labels_are_rejected_with_the_reason() {
        for (text, reason) in [
            ("team", "no '='"),
            ("=payments", "empty key"),
            ("", "no '='"),
        ] {
            match parse_label(text) {
                Ok(label) => panic!("expected {text:?} to be rejected, got {label:?}"),
                Err(err) => assert!(
                    err.contains(reason),
                    "expected {reason:?} in the error for {text:?}, got: {err}"
                ),
            }
        }
        assert_usage_errors(SYSCALL_ERROR, &[("--label oops", "--label")]);
    }

    #[test]
    fn repeated_label_key_is_rejected() {
        let line = format!("{SYSCALL_ERROR} --label a=1 --label a=2");
        match inject_spec(&words(&line)) {
            Ok(spec) => panic!("expected a duplicate label error, got {spec:?}"),
            Err(err) => assert_eq!(err, "--label a is given more than once"),
        }
    }

    #[test]
    fn inject_latency_dns_error_and_lsm_syscall_error_build_their_specs() {
        let spec = inject_spec(&words(
            "inject latency --delay 1.5ms --jitter 500us --protocol udp --interface lo --duration 1m",
        ))
        .expect("latency parses");
        match &spec.faults[0].kind {
            Some(pb::fault_spec::Kind::Latency(l)) => {
                assert!((l.delay_ms - 1.5).abs() < 1e-9, "{l:?}");
                assert!((l.jitter_ms - 0.5).abs() < 1e-9, "{l:?}");
                assert_eq!(l.r#match.as_ref().map(|m| m.protocol.as_str()), Some("udp"));
            }
            other => panic!("expected a latency fault, got {other:?}"),
        }
        assert_eq!(
            spec.target.as_ref().map(|t| t.interface.as_str()),
            Some("lo")
        );
        let err = inject_spec(&words(
            "inject latency --delay 10ms --direction ingress --interface lo --duration 1m",
        ))
        .expect_err("latency is egress only");
        assert!(err.contains("--direction"), "{err}");

        let spec = inject_spec(&words(
            "inject dns-error --domain example.com --failure nxdomain --probability 0.5 \
             --resolver-cidr 10.0.0.53/32 --interface eth0 --duration 30s",
        ))
        .expect("dns-error parses");
        assert_eq!(
            spec.faults[0].kind,
            Some(pb::fault_spec::Kind::DnsError(pb::DnsError {
                domain: "example.com".into(),
                failure: pb::DnsFailure::Nxdomain.into(),
                probability: 0.5,
                resolver_cidr: "10.0.0.53/32".into(),
            }))
        );

        let spec = inject_spec(&words(
            "inject syscall-error --syscall openat --errno EIO --path /var/lib/app --comm app --duration 1m",
        ))
        .expect("an LSM syscall error parses");
        match &spec.faults[0].kind {
            Some(pb::fault_spec::Kind::SyscallError(e)) => {
                assert_eq!(
                    (e.syscall.as_str(), e.path.as_str()),
                    ("openat", "/var/lib/app")
                );
            }
            other => panic!("expected a syscall_error fault, got {other:?}"),
        }
    }

    #[test]
    fn inject_syscall_error_builds_the_spec() {
        let cli = match parse(&words(
            "inject syscall-error --syscall connect --errno ECONNREFUSED --probability 0.5 \
             --port 8080 --cidr 10.0.0.0/8 --cgroup /sys/fs/cgroup/unified/app \
             --pid 7 --pid 8 --exclude-pid 9 --duration 30s --dry-run \
             --label team=payments --name checkout --output json",
        )) {
            Ok(cli) => cli,
            Err(err) => panic!("expected the flags to parse, got: {err}"),
        };
        assert_eq!(cli.output, OutputFormat::Json);
        let Command::Inject(inject) = cli.command else {
            panic!("expected an inject command, got {:?}", cli.command);
        };
        let spec: pb::ExperimentSpec = match inject.into_experiment() {
            Ok(experiment) => experiment.into(),
            Err(err) => panic!("expected a valid experiment, got: {err}"),
        };
        let expected = pb::ExperimentSpec {
            name: "checkout".into(),
            faults: vec![pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                    syscall: "connect".into(),
                    errno: "ECONNREFUSED".into(),
                    probability: 0.5,
                    port: 8080,
                    cidr: "10.0.0.0/8".into(),
                    path: String::new(),
                })),
            }],
            target: Some(pb::Target {
                pids: vec![7, 8],
                cgroup: "/sys/fs/cgroup/unified/app".into(),
                comm: String::new(),
                exclude_pids: vec![9],
                exclude_comm: String::new(),
                interface: String::new(),
            }),
            duration_ms: 30_000,
            dry_run: true,
            labels: [("team".to_owned(), "payments".to_owned())].into(),
        };
        assert_eq!(spec, expected);
    }

    #[test]
    fn inject_syscall_signal_takes_nth_call_or_probability() {
        let signal_of = |extra: &str| -> Result<pb::SyscallSignal, String> {
            let line = format!(
                "inject syscall-signal --syscall openat --signal KILL --comm curl \
                 --duration 2m {extra}"
            );
            let spec = inject_spec(&words(&line))?;
            match spec.faults.into_iter().next().and_then(|f| f.kind) {
                Some(pb::fault_spec::Kind::SyscallSignal(signal)) => Ok(signal),
                other => Err(format!("expected one syscall_signal fault, got {other:?}")),
            }
        };
        let nth = signal_of("--nth-call 3").unwrap_or_else(|err| panic!("--nth-call 3: {err}"));
        assert_eq!((nth.nth_call, nth.signal.as_str()), (3, "KILL"));
        let chance =
            signal_of("--probability 0.25").unwrap_or_else(|err| panic!("--probability: {err}"));
        assert_eq!(chance.nth_call, 0, "no nth_call unless asked");
        assert!(
            (chance.probability - 0.25).abs() < f64::EPSILON,
            "probability 0.25, got {}",
            chance.probability
        );
        if let Ok(both) = signal_of("--probability 0.5 --nth-call 2") {
            panic!("expected --probability with --nth-call to be a usage error, got {both:?}");
        }
    }

    /// Each network subcommand with the flags it needs besides a scope and a duration.
    const NETWORK_KINDS: [&str; 5] = [
        "packet-loss --probability 0.5",
        "blackhole",
        "duplicate --probability 0.5",
        "corrupt --probability 0.5",
        "bandwidth --rate 10mbit",
    ];

    #[test]
    fn inject_network_faults_build_the_spec() {
        use pb::Direction::{Both, Ingress};
        let cases = [
            (
                "packet-loss --probability 0.3 --burst-length 4 --direction both",
                packet_loss(0.3, 4.0, Both, full_match()),
            ),
            (
                "blackhole --direction ingress",
                blackhole(Ingress, full_match()),
            ),
            (
                "duplicate --probability 0.2 --direction ingress",
                duplicate(0.2, Ingress, full_match()),
            ),
            (
                "corrupt --probability 0.01 --recompute-checksums --direction both",
                corrupt(0.01, true, Both, full_match()),
            ),
            (
                "bandwidth --rate 2.5gbit --burst 64k --direction both",
                bandwidth(2_500_000_000, 65_536, Both, full_match()),
            ),
        ];
        for (flags, kind) in cases {
            let line = format!(
                "inject {flags} {FULL_MATCH_FLAGS} --interface eth0 --duration 1m --dry-run \
                 --label team=db --name net-db"
            );
            let spec = inject_spec(&words(&line))
                .unwrap_or_else(|err| panic!("expected {line:?} to build a spec, got: {err}"));
            let expected = pb::ExperimentSpec {
                name: "net-db".into(),
                faults: vec![pb::FaultSpec { kind: Some(kind) }],
                target: Some(pb::Target {
                    interface: "eth0".into(),
                    ..Default::default()
                }),
                duration_ms: 60_000,
                dry_run: true,
                labels: [("team".to_owned(), "db".to_owned())].into(),
            };
            assert_eq!(spec, expected, "{line}");
        }
    }

    #[test]
    fn network_faults_default_to_egress_and_any_packet() {
        use pb::Direction::Egress;
        let cgroup = pb::Target {
            cgroup: "/sys/fs/cgroup/app".into(),
            ..Default::default()
        };
        let lo = pb::Target {
            interface: "lo".into(),
            ..Default::default()
        };
        let cases = [
            (
                "packet-loss --probability 1 --cgroup /sys/fs/cgroup/app",
                packet_loss(1.0, 0.0, Egress, any_packet()),
                &cgroup,
            ),
            (
                "blackhole --cgroup /sys/fs/cgroup/app",
                blackhole(Egress, any_packet()),
                &cgroup,
            ),
            (
                "duplicate --probability 1 --interface lo",
                duplicate(1.0, Egress, any_packet()),
                &lo,
            ),
            // The checksums stay wrong unless asked.
            (
                "corrupt --probability 1 --interface lo",
                corrupt(1.0, false, Egress, any_packet()),
                &lo,
            ),
            // The agent picks the burst.
            (
                "bandwidth --rate 10mbit --cgroup /sys/fs/cgroup/app",
                bandwidth(10_000_000, 0, Egress, any_packet()),
                &cgroup,
            ),
        ];
        for (flags, kind, target) in cases {
            let line = format!("inject {flags} --duration 5s");
            let spec = inject_spec(&words(&line))
                .unwrap_or_else(|err| panic!("expected {line:?} to build a spec, got: {err}"));
            assert_eq!(spec.faults, [pb::FaultSpec { kind: Some(kind) }], "{line}");
            assert_eq!(spec.target.as_ref(), Some(target), "{line}");
            assert_eq!((spec.name.as_str(), spec.dry_run), ("", false), "{line}");
        }
    }

    #[test]
    fn packet_loss_blackhole_and_bandwidth_take_exactly_one_of_cgroup_or_interface() {
        for kind in [
            "packet-loss --probability 0.5",
            "blackhole",
            "bandwidth --rate 1mbit",
        ] {
            assert_usage_errors(
                &format!("inject {kind} --duration 1s"),
                &[
                    ("", "--cgroup"),
                    ("--cgroup /a --interface eth0", "cannot be used"),
                    ("--pid 1", "--pid"),
                    ("--comm curl", "--comm"),
                ],
            );
        }
    }

    #[test]
    fn duplicate_and_corrupt_take_only_an_interface() {
        for kind in ["duplicate --probability 0.5", "corrupt --probability 0.5"] {
            assert_usage_errors(
                &format!("inject {kind}"),
                &[
                    ("--duration 1s", "--interface"),
                    ("--interface lo", "--duration"),
                    ("--cgroup /sys/fs/cgroup/app --duration 1s", "--cgroup"),
                    (
                        "--cgroup /sys/fs/cgroup/app --interface lo --duration 1s",
                        "--cgroup",
                    ),
                    ("--pid 1 --interface lo --duration 1s", "--pid"),
                    ("--comm curl --interface lo --duration 1s", "--comm"),
                    (
                        "--interface lo --duration 1s --burst-length 2",
                        "--burst-length",
                    ),
                ],
            );
        }
    }

    #[test]
    fn bad_network_flags_are_usage_errors() {
        for kind in NETWORK_KINDS {
            assert_usage_errors(
                &format!("inject {kind} --interface lo --duration 1s"),
                &[
                    ("--direction up", "--direction"),
                    ("--protocol sctp", "--protocol"),
                    ("--dst-ports 90-80", "--dst-ports"),
                    ("--src-ports ssh", "--src-ports"),
                ],
            );
        }
        for kind in ["packet-loss", "duplicate", "corrupt"] {
            assert_usage_errors(
                &format!("inject {kind} --interface lo --duration 1s"),
                &[
                    ("", "--probability"),
                    ("--probability 1.5", "--probability"),
                    ("--probability=-0.1", "--probability"),
                ],
            );
        }
        for (kind, extra, flag) in [
            (
                "packet-loss --probability 0.5",
                "--burst-length=-2",
                "--burst-length",
            ),
            (
                "corrupt --probability 0.5",
                "--recompute-checksums=yes",
                "--recompute-checksums",
            ),
            // blackhole drops every matching packet.
            ("blackhole", "--probability 0.5", "--probability"),
            (
                "bandwidth --rate 1mbit",
                "--probability 0.5",
                "--probability",
            ),
            (
                "bandwidth --rate 1mbit",
                "--burst-length 2",
                "--burst-length",
            ),
        ] {
            assert_usage_errors(
                &format!("inject {kind} --interface lo --duration 1s"),
                &[(extra, flag)],
            );
        }
    }

    #[test]
    fn bandwidth_rate_and_burst_parse_with_units() {
        let of = |flags: &str| -> Result<(u64, u32), String> {
            let line = format!("inject bandwidth {flags} --interface lo --duration 1s");
            match inject_spec(&words(&line))?
                .faults
                .first()
                .and_then(|f| f.kind.clone())
            {
                Some(pb::fault_spec::Kind::Bandwidth(b)) => {
                    Ok((b.rate_bits_per_sec, b.burst_bytes))
                }
                other => Err(format!("expected one bandwidth fault, got {other:?}")),
            }
        };
        for (flags, expected) in [
            ("--rate 64000", (64_000, 0)),
            ("--rate 500kbit --burst 1514", (500_000, 1_514)),
            ("--rate 10Mbit --burst 64k", (10_000_000, 65_536)),
            ("--rate 10mbps --burst 1m", (10_000_000, 1_048_576)),
            ("--rate 1gbps --burst 0", (1_000_000_000, 0)),
        ] {
            assert_eq!(of(flags), Ok(expected), "{flags}");
        }
    }

    #[test]
    fn bad_bandwidth_flags_are_usage_errors_naming_the_flag() {
        assert_usage_errors(
            "inject bandwidth --interface lo --duration 1s",
            &[
                ("", "--rate"),
                (
                    "--rate 10mb",
                    "'--rate <RATE>': invalid rate \"10mb\": unknown unit \"mb\"",
                ),
                ("--rate 0", "'--rate <RATE>'"),
                ("--rate fast", "'--rate <RATE>'"),
                ("--rate=-1mbit", "'--rate <RATE>'"),
                ("--rate 1mbit --burst 64kb", "'--burst <BYTES>'"),
                ("--rate 1mbit --burst 4g", "'--burst <BYTES>'"),
                ("--rate 1mbit --burst 4194304k", "'--burst <BYTES>'"),
            ],
        );
    }

    #[test]
    fn inject_requires_a_target_and_a_duration() {
        assert_usage_errors(
            "inject syscall-error --syscall connect --errno EPERM",
            &[("--duration 1s", "--pid"), ("--pid 1", "--duration")],
        );
    }

    #[test]
    fn out_of_range_probability_is_a_usage_error() {
        assert_usage_errors(SYSCALL_ERROR, &[("--probability 1.5", "--probability")]);
    }

    #[test]
    fn stop_needs_an_id_or_all() {
        assert!(
            parse(&["stop"]).is_err(),
            "stop without an id or --all should be a usage error"
        );
        assert!(
            parse(&["stop", "abc", "--all"]).is_err(),
            "stop with both an id and --all should be a usage error"
        );
        assert!(parse(&["stop", "--all"]).is_ok(), "stop --all should parse");
    }

    #[test]
    fn watch_interval_has_a_floor() {
        assert!(
            parse(&["watch", "--interval", "50ms"]).is_err(),
            "50ms is below the 100ms floor"
        );
        match parse(&["watch", "abc", "--interval", "250ms"]) {
            Ok(Cli {
                command: Command::Watch { id, interval },
                ..
            }) => {
                assert_eq!(
                    (id.as_deref(), interval),
                    (Some("abc"), Duration::from_millis(250))
                );
            }
            other => panic!("expected a watch command, got {other:?}"),
        }
    }
}
