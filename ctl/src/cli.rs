//! The command line: clap's definition of every subcommand and global flag.
//! The `inject` subcommands' flags are in [`inject`].

pub mod certs;
pub mod inject;

use std::{path::PathBuf, time::Duration};

use clap::{
    ArgGroup, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand,
    parser::ValueSource,
};

use self::{certs::CertsCommand, inject::InjectCommand};
use crate::{
    connect::{AgentAddress, ClientTls},
    output::OutputFormat,
    spec,
};

#[derive(Debug, Parser)]
#[command(
    name = "faultctl",
    version,
    about = "Inject, watch and stop fault experiments through faultline-agent"
)]
pub struct Cli {
    /// Unix socket of the agent's gRPC API.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_SOCKET",
        default_value = "/run/faultline/agent.sock",
        value_name = "PATH"
    )]
    pub socket: PathBuf,

    /// Reach the agent over TCP instead of the socket: https://HOST:PORT
    /// (mutual TLS, with --tls-ca, --tls-cert and --tls-key), or
    /// http://127.0.0.1:PORT (an agent's plain loopback port).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,

    /// CA certificate (PEM) the agent's certificate must chain to (https endpoints).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_TLS_CA",
        value_name = "FILE"
    )]
    pub tls_ca: Option<PathBuf>,

    /// This client's certificate (PEM), e.g. from `faultctl certs issue`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_TLS_CERT",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTLINE_TLS_KEY",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// How long the agent gets to answer each call (and to connect), e.g.
    /// 2s; `watch` gives up on an agent silent for 5s plus this long.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "FAULTCTL_TIMEOUT",
        default_value = "10s",
        value_parser = spec::parse_duration,
        value_name = "DURATION"
    )]
    pub timeout: Duration,

    /// How to print results.
    #[arg(
        long,
        short,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per run; boxing would only obscure the clap types"
)]
pub enum Command {
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
    /// Run the experiment in a file in the foreground under a lease: show
    /// its progress, stop it on Ctrl-C, SIGTERM or terminal loss (SIGHUP).
    /// If faultctl dies (SIGKILL, a lost link), the lease lapses and the
    /// agent stops it within the lease's time.
    Run {
        /// Experiment file (YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// The lease: the agent stops the experiment this long after the
        /// last renewal (faultctl renews every third of it); 500ms to 1h.
        #[arg(long, default_value = "15s", value_parser = parse_lease, value_name = "DURATION")]
        lease: Duration,
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
    /// Make a development CA and certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
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

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").args(["id", "all"]).required(true)))]
pub struct StopArgs {
    /// Experiment id.
    pub id: Option<String>,
    /// Stop every running experiment.
    #[arg(long)]
    pub all: bool,
}

/// The agent's bounds for a lease.
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = spec::parse_duration(text)?;
    if !(Duration::from_millis(500)..=Duration::from_secs(3600)).contains(&lease) {
        return Err(format!("lease {text:?} is not between 500ms and 1h"));
    }
    Ok(lease)
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
/// An `https://` endpoint takes all three TLS files.
pub fn agent_address(cli: &Cli, matches: &clap::ArgMatches) -> Result<AgentAddress, String> {
    let typed = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
    let address = match &cli.endpoint {
        Some(url) if typed("endpoint") || !typed("socket") => AgentAddress::Endpoint(url.clone()),
        _ => AgentAddress::Socket(cli.socket.clone()),
    };
    let any_tls = cli.tls_ca.is_some() || cli.tls_cert.is_some() || cli.tls_key.is_some();
    match address {
        AgentAddress::Endpoint(url) if url.starts_with("https://") => {
            match (&cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
                (Some(ca), Some(cert), Some(key)) => Ok(AgentAddress::Tls(
                    url,
                    Box::new(ClientTls {
                        ca: ca.clone(),
                        cert: cert.clone(),
                        key: key.clone(),
                    }),
                )),
                _ => Err(format!(
                    "--endpoint {url} needs --tls-ca, --tls-cert and --tls-key (or FAULTLINE_TLS_CA, \
                     FAULTLINE_TLS_CERT, FAULTLINE_TLS_KEY): the agent serves TCP only with mutual TLS"
                )),
            }
        }
        AgentAddress::Endpoint(url) if any_tls && typed("endpoint") => Err(format!(
            "--tls-ca/--tls-cert/--tls-key need an https:// endpoint, not {url}"
        )),
        a => Ok(a),
    }
}

pub fn parse_cli() -> (Cli, AgentAddress) {
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
    let address = agent_address(&cli, &matches).unwrap_or_else(|e| {
        command
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit()
    });
    (cli, address)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("faultctl").chain(args.iter().copied()))
    }

    /// A command line written as one string; no argument in these tests has a space.
    pub fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    /// Asserts that `base` followed by each `extra` is a usage error (exit
    /// code 2) whose message mentions `expected`.
    pub fn assert_usage_errors(base: &str, cases: &[(&str, &str)]) {
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

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
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
    fn timeout_defaults_to_ten_seconds_and_is_never_zero() {
        let timeout = |args: &[&str]| parse(args).map(|cli| cli.timeout);
        assert_eq!(timeout(&["ls"]).ok(), Some(Duration::from_secs(10)));
        assert_eq!(
            timeout(&["ls", "--timeout", "2s"]).ok(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            timeout(&["--timeout", "500ms", "watch"]).ok(),
            Some(Duration::from_millis(500))
        );
        assert_usage_errors("ls --timeout", &[("0s", "at least 1ms"), ("soon", "soon")]);
    }

    #[test]
    fn run_takes_a_file_and_a_bounded_lease() {
        match parse(&["run", "-f", "x.yaml", "--lease", "2s"]) {
            Ok(Cli {
                command: Command::Run { file, lease },
                ..
            }) => assert_eq!((file, lease), ("x.yaml".into(), Duration::from_secs(2))),
            other => panic!("expected a run command, got {other:?}"),
        }
        match parse(&["run", "-f", "x.yaml"]) {
            Ok(Cli {
                command: Command::Run { lease, .. },
                ..
            }) => assert_eq!(lease, Duration::from_secs(15)),
            other => panic!("expected a run command, got {other:?}"),
        }
        assert_usage_errors(
            "run -f x.yaml --lease",
            &[("100ms", "between 500ms and 1h"), ("2h", "between")],
        );
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
