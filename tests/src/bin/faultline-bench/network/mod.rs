//! `network`: packet_loss on a veth interface vs iptables `-m statistic`.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, anyhow, bail, ensure};
use faultline_proto::v1 as pb;
use faultline_tests::{
    Agent, TestNetns, context, experiment, interface_target, keeper_links, our_links, packet_loss,
    wait_for,
};
use tokio::runtime::Runtime;

mod first_drop;
mod loss;
mod stream;

use crate::{Client, header, stats::*};
use first_drop::*;
use loss::*;
use stream::*;

/// At least 368: only then does the order-statistic 95 % CI of the p99 have
/// an upper end (the largest value); with 200 it was unbounded.
const FIRST_DROP_RUNS: usize = 400;
/// Runs with the TCX hooks off between experiments (for comparison only).
const FIRST_DROP_COLD_RUNS: usize = 100;
const FIRST_DROP_TARGET_MS: f64 = 10.0;
const IPTABLES_COMMENT: &str = "faultline-bench";

pub fn network(rt: &Runtime) -> anyhow::Result<Vec<String>> {
    header(
        "network",
        &[
            "setup: one agent, one test namespace joined to the root namespace by a veth pair; all traffic goes from the",
            "root namespace to an address inside that namespace, through the veth's root-side end, where both faults",
            "act: ours = packet_loss (egress, that interface, protocol + destination port) as a TCX program; iptables =",
            "`iptables -t filter -I OUTPUT -o IF -p PROTO --dport PORT -m statistic --mode random --probability P -j DROP`",
            "(plus `-m comment`, which iptables-nft keeps as rule metadata, not evaluated per packet), deleted right after.",
            "Once iptables has been used, the filter table's (empty) chains stay hooked for every configuration alike.",
        ],
    );
    ensure_iptables()?;
    remove_stale_iptables_rules()?;
    let foreign = our_links().len();
    let agent = Agent::start();
    let mut client = rt.block_on(agent.client());
    let ns = TestNetns::new();
    println!(
        "  namespace {}, root-side interface {} ({}), destination {}",
        ns.name, ns.host_if, ns.host_ip, ns.peer_ips[0]
    );
    let mut verdicts = Vec::new();
    verdicts.extend(loss_accuracy(rt, &mut client, &ns)?);
    verdicts.extend(stream_cost(rt, &agent, &mut client, &ns, foreign)?);
    drop(client);
    drop(agent);

    // Time to first drop, first with the TCX hooks off between experiments
    // (the agent's `keep_tcx_hooks = false`), then with the default.
    first_drop_intro(&ns);
    let cold = if keeper_links().is_empty() {
        let agent = Agent::start_with(&["--keep-tcx-hooks", "false"]);
        let mut client = rt.block_on(agent.client());
        Some(first_drop(
            rt,
            &mut client,
            &ns,
            FIRST_DROP_COLD_RUNS,
            "keep_tcx_hooks = false: the kernel's TCX hooks are switched on by each experiment's link",
        )?)
    } else {
        println!(
            "  (another agent on this host keeps the TCX hooks on: no measurement with them off)"
        );
        None
    };
    let agent = Agent::start();
    let mut client = rt.block_on(agent.client());
    capabilities_loaded(rt, &mut client)?;
    if agent.keeper_links().is_empty() {
        bail!("the agent's default configuration did not keep the TCX hooks on");
    }
    let warm = first_drop(
        rt,
        &mut client,
        &ns,
        FIRST_DROP_RUNS,
        "default configuration (keep_tcx_hooks = true): two links on lo of a private namespace hold the hooks on",
    )?;
    // The p99's CI is the order-statistic one (distribution-free).
    let (_, v) = verdict(
        &warm.after_call_p99,
        Target::Below(FIRST_DROP_TARGET_MS),
        &show_ms,
    );
    let target = format!(
        "network: first drop: p99 (StartExperiment called → first dropped datagram) < {FIRST_DROP_TARGET_MS} ms: {v} \
         ({FIRST_DROP_RUNS} runs; after the response p99 {:.3} ms; the call's round trip p99 {:.3} ms{})",
        warm.after_return_p99,
        warm.rpc_p99,
        cold.map_or(String::new(), |c| format!(
            "; with keep_tcx_hooks = false: called → first dropped p99 {:.3} ms",
            c.after_call_p99.value
        ))
    );
    println!("  {target}");
    verdicts.push(target);
    Ok(verdicts)
}

/// Asks for the capabilities, which loads every program group (and with
/// the default configuration sets up the TCX keeper).
pub fn capabilities_loaded(rt: &Runtime, client: &mut Client) -> anyhow::Result<()> {
    context(
        rt.block_on(client.get_capabilities(pb::GetCapabilitiesRequest::default())),
        "GetCapabilities",
    )?;
    Ok(())
}

// -- iptables --

pub fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "filter"])
        .args(args)
        .output()
        .context("run iptables")?;
    ensure!(
        out.status.success(),
        "iptables -t filter {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub fn ensure_iptables() -> anyhow::Result<()> {
    match Command::new("iptables").arg("-V").output() {
        Ok(out) if out.status.success() => {
            println!(
                "  {}",
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .replace('\n', "; ")
            );
            Ok(())
        }
        Ok(out) => bail!(
            "`iptables -V` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => Err(e).context(
            "iptables is needed for the comparison and is not installed: run `cargo xtask setup` \
             (it installs Debian's iptables)",
        ),
    }
}

/// Deletes OUTPUT rules that an earlier, killed bench process left behind
/// (marked with its pid, which no longer exists).
pub fn remove_stale_iptables_rules() -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "filter", "-S", "OUTPUT"])
        .output()
        .context("run iptables -S OUTPUT")?;
    ensure!(
        out.status.success(),
        "iptables -S OUTPUT failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let prefix = format!("{IPTABLES_COMMENT}-");
    for rule in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = rule.split_whitespace().collect();
        let owner = words
            .windows(2)
            .find(|w| w[0] == "--comment")
            .and_then(|w| w[1].trim_matches('"').strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = owner else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() || words.first() != Some(&"-A") {
            continue;
        }
        let mut args = vec!["-D"];
        args.extend(words[1..].iter().map(|w| w.trim_matches('"')));
        iptables(&args)?;
        println!("  removed a rule left by an earlier bench run (pid {pid}): {rule}");
    }
    Ok(())
}

/// An iptables `-m statistic` drop rule in the filter table's OUTPUT chain,
/// deleted when dropped (also when the measurement failed).
pub struct IptablesDrop {
    spec: Vec<String>,
}

impl IptablesDrop {
    pub fn insert(
        interface: &str,
        protocol: &str,
        port: u16,
        probability: f64,
    ) -> anyhow::Result<Self> {
        let spec: Vec<String> = [
            "OUTPUT",
            "-o",
            interface,
            "-p",
            protocol,
            "--dport",
            &port.to_string(),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &format!("{probability}"),
            "-m",
            "comment",
            "--comment",
            &format!("{IPTABLES_COMMENT}-{}", std::process::id()),
            "-j",
            "DROP",
        ]
        .map(str::to_owned)
        .into();
        let mut args = vec!["-I"];
        args.extend(spec.iter().map(String::as_str));
        iptables(&args)?;
        Ok(Self { spec })
    }
}

impl Drop for IptablesDrop {
    fn drop(&mut self) {
        let mut args = vec!["-D"];
        args.extend(self.spec.iter().map(String::as_str));
        if let Err(e) = iptables(&args) {
            eprintln!("warning: could not delete our iptables rule: {e:#}");
        }
    }
}

// -- experiments --

/// Runs `f` while an experiment runs, and stops the experiment afterwards
/// whatever `f` returned.
pub fn during_experiment<T>(
    rt: &Runtime,
    client: &mut Client,
    req: pb::StartExperimentRequest,
    f: impl FnOnce(&mut Client, &str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let before = our_links().len();
    let exp = context(rt.block_on(client.start_experiment(req)), "StartExperiment")?
        .into_inner()
        .experiment
        .context("StartExperiment returned no experiment")?;
    let out = if our_links().len() > before {
        f(client, &exp.id)
    } else {
        Err(anyhow!(
            "the experiment is running but no fl_ program was attached"
        ))
    };
    let stopped = context(
        rt.block_on(client.stop_experiment(pb::StopExperimentRequest { id: exp.id })),
        "StopExperiment",
    );
    wait_for(Duration::from_secs(2), || our_links().len() <= before);
    let out = out?;
    stopped?;
    Ok(out)
}

/// (matched, injected) packet counters of a running experiment.
pub fn counters(rt: &Runtime, client: &mut Client, id: &str) -> anyhow::Result<(u64, u64)> {
    let exp = context(
        rt.block_on(client.get_experiment(pb::GetExperimentRequest { id: id.to_owned() })),
        "GetExperiment",
    )?
    .into_inner();
    Ok((exp.matched, exp.injected))
}

pub fn match_port(protocol: &str, port: u16) -> pb::PacketMatch {
    pb::PacketMatch {
        protocol: protocol.into(),
        dst_ports: port.to_string(),
        ..Default::default()
    }
}

pub fn ours_on(ns: &TestNetns, protocol: &str, port: u16, p: f64) -> pb::StartExperimentRequest {
    experiment(
        packet_loss(p, 0.0, pb::Direction::Egress, match_port(protocol, port)),
        interface_target(&ns.host_if),
        Duration::from_secs(600),
    )
}
