//! proto <-> domain conversions. Validation of request syntax happens here,
//! once; every error names the field at fault.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use faultline_common::MAX_TARGET_PIDS;
use faultline_proto::v1 as pb;

use crate::{
    cgroup::Cgroup,
    domain::{
        BandwidthSpec, BlackholeSpec, Cidr, CorruptSpec, Direction, DnsErrorSpec, DnsFailure,
        DuplicateSpec, ErrorCall, ExperimentSpec, FaultSpec, Interface, LatencySpec,
        PacketLossSpec, PacketMatch, PathMatch, PortRange, Probability, SockCall, SpecError,
        SyscallErrorSpec, SyscallSignalSpec, Target,
    },
    engine::{Event, EventKind, ExperimentView, State},
    faults::lsm_error,
    names::{ErrnoName, SignalName, SyscallName},
};

const MAX_FAULTS_PER_EXPERIMENT: usize = 16;
/// fq's default horizon: packets scheduled further out are dropped.
const MAX_DELAY_MS: f64 = 10_000.0;

fn inv(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::invalid(field, reason)
}

fn probability(field: String, p: f64) -> Result<Probability, SpecError> {
    Probability::new(p).map_err(|r| inv(field, r))
}

fn comm(field: &str, s: &str) -> Result<Option<String>, SpecError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > 15 {
        return Err(inv(
            field,
            format!("{s:?} is longer than the kernel's 15-byte process name"),
        ));
    }
    Ok(Some(s.to_owned()))
}

fn pids(field: &str, list: &[u32], must_exist: bool) -> Result<Vec<u32>, SpecError> {
    if list.len() > MAX_TARGET_PIDS {
        return Err(inv(
            field,
            format!("at most {MAX_TARGET_PIDS} pids, got {}", list.len()),
        ));
    }
    for (i, pid) in list.iter().enumerate() {
        if *pid == 0 {
            return Err(inv(format!("{field}[{i}]"), "pid 0 is not a process"));
        }
        if must_exist && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(inv(
                format!("{field}[{i}]"),
                format!("no process with pid {pid}"),
            ));
        }
    }
    Ok(list.to_vec())
}

fn target(t: Option<&pb::Target>) -> Result<Target, SpecError> {
    let t = t.ok_or_else(|| inv("spec.target", "required: give pids, a cgroup or a comm"))?;
    let cgroup = match t.cgroup.trim() {
        "" => None,
        path => Some(Cgroup::resolve(path).map_err(|e| inv("spec.target.cgroup", e.to_string()))?),
    };
    let out = Target {
        pids: pids("spec.target.pids", &t.pids, true)?,
        cgroup,
        comm: comm("spec.target.comm", &t.comm)?,
        exclude_pids: pids("spec.target.exclude_pids", &t.exclude_pids, false)?,
        exclude_comm: comm("spec.target.exclude_comm", &t.exclude_comm)?,
        interface: interface(&t.interface)?,
    };
    if let Some(pid) = out.pids.iter().find(|p| out.exclude_pids.contains(p)) {
        return Err(inv(
            "spec.target.exclude_pids",
            format!("pid {pid} is both included and excluded"),
        ));
    }
    if out.interface.is_some() && out.cgroup.is_some() {
        return Err(inv(
            "spec.target.interface",
            "give either an interface or a cgroup, not both",
        ));
    }
    if out.pids.is_empty() && out.cgroup.is_none() && out.comm.is_none() && out.interface.is_none()
    {
        return Err(inv(
            "spec.target",
            "no selector: give pids, a cgroup or a comm (a fault never applies to the whole host implicitly)",
        ));
    }
    Ok(out)
}

fn interface(name: &str) -> Result<Option<Interface>, SpecError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    let ifindex = nix::net::if_::if_nametoindex(name).map_err(|_| {
        inv(
            "spec.target.interface",
            format!("no interface named {name:?} on this host"),
        )
    })?;
    Ok(Some(Interface {
        name: name.to_owned(),
        ifindex,
    }))
}

fn direction(field: String, d: i32) -> Result<Direction, SpecError> {
    match pb::Direction::try_from(d) {
        Ok(pb::Direction::Unspecified | pb::Direction::Egress) => Ok(Direction::Egress),
        Ok(pb::Direction::Ingress) => Ok(Direction::Ingress),
        Ok(pb::Direction::Both) => Ok(Direction::Both),
        Err(_) => Err(inv(field, format!("unknown direction {d}"))),
    }
}

fn packet_match(p: &str, m: Option<&pb::PacketMatch>) -> Result<PacketMatch, SpecError> {
    let default = pb::PacketMatch::default();
    let m = m.unwrap_or(&default);
    let proto = match m.protocol.trim().to_ascii_lowercase().as_str() {
        "" | "any" => None,
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        other => {
            return Err(inv(
                format!("{p}.match.protocol"),
                format!("{other:?}: expected tcp, udp, icmp or any"),
            ));
        }
    };
    let cidr = |field: &str, s: &str| -> Result<Option<Cidr>, SpecError> {
        match s.trim() {
            "" => Ok(None),
            c => Cidr::parse(c)
                .map(Some)
                .map_err(|r| inv(format!("{p}.match.{field}"), r)),
        }
    };
    let src = cidr("src_cidr", &m.src_cidr)?;
    let dst = cidr("dst_cidr", &m.dst_cidr)?;
    if let (Some(a), Some(b)) = (src, dst)
        && a.addr.is_ipv4() != b.addr.is_ipv4()
    {
        return Err(inv(
            format!("{p}.match.dst_cidr"),
            "source and destination CIDRs must be of the same family",
        ));
    }
    let ports = |field: &str, s: &str| {
        PortRange::parse(s).map_err(|r| inv(format!("{p}.match.{field}"), r))
    };
    let sports = ports("src_ports", &m.src_ports)?;
    let dports = ports("dst_ports", &m.dst_ports)?;
    if (!sports.is_any() || !dports.is_any()) && proto.is_some_and(|p| p != 6 && p != 17) {
        return Err(inv(
            format!("{p}.match.protocol"),
            "ports apply to tcp and udp only",
        ));
    }
    Ok(PacketMatch {
        proto,
        src,
        dst,
        sports,
        dports,
        include_ssh: m.include_ssh,
    })
}

fn fault(i: usize, f: &pb::FaultSpec) -> Result<FaultSpec, SpecError> {
    use pb::fault_spec::Kind;
    match &f.kind {
        None => Err(inv(
            format!("spec.faults[{i}]"),
            "no fault kind set (syscall_error, syscall_signal, packet_loss or blackhole)",
        )),
        Some(Kind::PacketLoss(l)) => {
            let p = format!("spec.faults[{i}].packet_loss");
            let probability = probability(format!("{p}.probability"), l.probability)?;
            let burst_length = l.burst_length;
            if !burst_length.is_finite() || !(0.0..=1e6).contains(&burst_length) {
                return Err(inv(
                    format!("{p}.burst_length"),
                    "must be 0 (independent) or between 1 and 1e6 packets",
                ));
            }
            if burst_length > 1.0 {
                let (enter, _) =
                    crate::faults::packet_drop::gilbert(probability.value(), burst_length);
                if probability.value() >= 1.0 || enter > 1.0 {
                    return Err(inv(
                        format!("{p}.burst_length"),
                        format!(
                            "a mean loss of {} cannot have bursts of {burst_length} packets",
                            probability.value()
                        ),
                    ));
                }
            }
            Ok(FaultSpec::PacketLoss(PacketLossSpec {
                probability,
                burst_length,
                direction: direction(format!("{p}.direction"), l.direction)?,
                matching: packet_match(&p, l.r#match.as_ref())?,
            }))
        }
        Some(Kind::Bandwidth(b)) => {
            let p = format!("spec.faults[{i}].bandwidth");
            if !(8_000..=80_000_000_000).contains(&b.rate_bits_per_sec) {
                return Err(inv(
                    format!("{p}.rate_bits_per_sec"),
                    format!(
                        "{} is outside 8000 ..= 80000000000 bit/s",
                        b.rate_bits_per_sec
                    ),
                ));
            }
            let rate_bytes_per_sec = b.rate_bits_per_sec / 8;
            let burst_bytes = match b.burst_bytes {
                // 20 ms at the rate, and at least four 64 KiB GSO segments.
                0 => (rate_bytes_per_sec / 50).clamp(256 * 1024, 1 << 30) as u32,
                n if (1514..=1 << 30).contains(&n) => n,
                n => {
                    return Err(inv(
                        format!("{p}.burst_bytes"),
                        format!("{n} must hold a full frame: 1514 ..= 1073741824 bytes"),
                    ));
                }
            };
            Ok(FaultSpec::Bandwidth(BandwidthSpec {
                rate_bytes_per_sec,
                burst_bytes,
                direction: direction(format!("{p}.direction"), b.direction)?,
                matching: packet_match(&p, b.r#match.as_ref())?,
            }))
        }
        Some(Kind::DnsError(d)) => {
            let p = format!("spec.faults[{i}].dns_error");
            let failure = match pb::DnsFailure::try_from(d.failure) {
                Ok(pb::DnsFailure::Unspecified | pb::DnsFailure::Drop) => DnsFailure::Drop,
                Ok(pb::DnsFailure::Servfail) => DnsFailure::ServFail,
                Ok(pb::DnsFailure::Nxdomain) => DnsFailure::NxDomain,
                Err(_) => {
                    return Err(inv(
                        format!("{p}.failure"),
                        format!("{} is not a DnsFailure", d.failure),
                    ));
                }
            };
            let resolver = match d.resolver_cidr.trim() {
                "" => None,
                c => Some(Cidr::parse(c).map_err(|r| inv(format!("{p}.resolver_cidr"), r))?),
            };
            Ok(FaultSpec::DnsError(DnsErrorSpec {
                domain: DnsErrorSpec::parse_domain(&d.domain)
                    .map_err(|r| inv(format!("{p}.domain"), r))?,
                failure,
                probability: probability(format!("{p}.probability"), d.probability)?,
                resolver,
            }))
        }
        Some(Kind::Latency(l)) => {
            let p = format!("spec.faults[{i}].latency");
            if !(l.delay_ms.is_finite() && l.delay_ms > 0.0 && l.delay_ms <= MAX_DELAY_MS) {
                return Err(inv(
                    format!("{p}.delay_ms"),
                    format!(
                        "{} must be in (0, {MAX_DELAY_MS}] ms (fq drops packets scheduled beyond its 10 s horizon)",
                        l.delay_ms
                    ),
                ));
            }
            if !l.jitter_ms.is_finite() || !(0.0..=l.delay_ms).contains(&l.jitter_ms) {
                return Err(inv(
                    format!("{p}.jitter_ms"),
                    format!("{} must be in [0, delay_ms = {}]", l.jitter_ms, l.delay_ms),
                ));
            }
            Ok(FaultSpec::Latency(LatencySpec {
                delay: Duration::from_secs_f64(l.delay_ms / 1e3),
                jitter: Duration::from_secs_f64(l.jitter_ms / 1e3),
                matching: packet_match(&p, l.r#match.as_ref())?,
            }))
        }
        Some(Kind::Corrupt(c)) => {
            let p = format!("spec.faults[{i}].corrupt");
            Ok(FaultSpec::Corrupt(CorruptSpec {
                probability: probability(format!("{p}.probability"), c.probability)?,
                recompute_checksums: c.recompute_checksums,
                direction: direction(format!("{p}.direction"), c.direction)?,
                matching: packet_match(&p, c.r#match.as_ref())?,
            }))
        }
        Some(Kind::Duplicate(d)) => {
            let p = format!("spec.faults[{i}].duplicate");
            Ok(FaultSpec::Duplicate(DuplicateSpec {
                probability: probability(format!("{p}.probability"), d.probability)?,
                direction: direction(format!("{p}.direction"), d.direction)?,
                matching: packet_match(&p, d.r#match.as_ref())?,
            }))
        }
        Some(Kind::Blackhole(b)) => {
            let p = format!("spec.faults[{i}].blackhole");
            Ok(FaultSpec::Blackhole(BlackholeSpec {
                direction: direction(format!("{p}.direction"), b.direction)?,
                matching: packet_match(&p, b.r#match.as_ref())?,
            }))
        }
        Some(Kind::SyscallError(e)) => {
            let p = format!("spec.faults[{i}].syscall_error");
            let name = e.syscall.trim();
            let call = match SockCall::parse(name) {
                Some(c) => ErrorCall::Sock(c),
                None => match lsm_error::hook_for(name) {
                    Some(hook) => ErrorCall::Lsm {
                        syscall: lsm_error::HOOKS[hook]
                            .syscalls
                            .iter()
                            .find(|s| **s == name)
                            .copied()
                            .unwrap_or(lsm_error::HOOKS[hook].syscalls[0]),
                        hook,
                    },
                    None if name.is_empty() => {
                        return Err(inv(format!("{p}.syscall"), "required"));
                    }
                    None => {
                        return Err(inv(
                            format!("{p}.syscall"),
                            format!(
                                "{name:?} cannot be failed by syscall_error (supported: connect, bind, sendmsg, {})",
                                lsm_error::HOOKS
                                    .iter()
                                    .flat_map(|h| h.syscalls.iter().copied())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                },
            };
            let errno = ErrnoName::parse(&e.errno).map_err(|r| inv(format!("{p}.errno"), r))?;
            let port = u16::try_from(e.port).map_err(|_| {
                inv(
                    format!("{p}.port"),
                    format!("{} is not a port (0..=65535)", e.port),
                )
            })?;
            let cidr = match e.cidr.trim() {
                "" => None,
                c => Some(Cidr::parse(c).map_err(|r| inv(format!("{p}.cidr"), r))?),
            };
            let filter = match call {
                ErrorCall::Sock(_) => None,
                ErrorCall::Lsm { hook, .. } => Some(lsm_error::HOOKS[hook].filter),
            };
            if cidr.is_some() && filter.is_some() {
                return Err(inv(
                    format!("{p}.cidr"),
                    format!("applies to connect, bind and sendmsg only, not {name}"),
                ));
            }
            if port != 0 && !matches!(filter, None | Some(lsm_error::Filter::LocalPort)) {
                return Err(inv(
                    format!("{p}.port"),
                    format!(
                        "applies to connect, bind, sendmsg (destination/bound port) and accept, listen, recvmsg (local port) only, not {name}"
                    ),
                ));
            }
            let path = match e.path.trim() {
                "" => None,
                path if filter == Some(lsm_error::Filter::Path) => {
                    Some(PathMatch::resolve(path).map_err(|r| inv(format!("{p}.path"), r))?)
                }
                _ => {
                    return Err(inv(
                        format!("{p}.path"),
                        format!(
                            "applies to file calls only (open, read, write, mmap, mprotect, ioctl, execve, unlink, rmdir, mkdir, rename, link, symlink), not {name}"
                        ),
                    ));
                }
            };
            Ok(FaultSpec::SyscallError(SyscallErrorSpec {
                call,
                errno,
                probability: probability(format!("{p}.probability"), e.probability)?,
                port,
                cidr,
                path,
            }))
        }
        Some(Kind::SyscallSignal(s)) => {
            let p = format!("spec.faults[{i}].syscall_signal");
            let syscall =
                SyscallName::parse(&s.syscall).map_err(|r| inv(format!("{p}.syscall"), r))?;
            let signal = SignalName::parse(&s.signal).map_err(|r| inv(format!("{p}.signal"), r))?;
            Ok(FaultSpec::SyscallSignal(SyscallSignalSpec {
                syscall,
                signal,
                probability: probability(format!("{p}.probability"), s.probability)?,
                nth_call: s.nth_call,
            }))
        }
    }
}

/// Validates a request's spec. Policy (protected targets, the duration cap,
/// kernel support) is the engine's to check.
pub fn spec_from_proto(spec: Option<&pb::ExperimentSpec>) -> Result<ExperimentSpec, SpecError> {
    let s = spec.ok_or_else(|| inv("spec", "required"))?;
    if s.faults.is_empty() {
        return Err(inv("spec.faults", "at least one fault is required"));
    }
    if s.faults.len() > MAX_FAULTS_PER_EXPERIMENT {
        return Err(inv(
            "spec.faults",
            format!("at most {MAX_FAULTS_PER_EXPERIMENT} faults per experiment"),
        ));
    }
    if s.duration_ms == 0 {
        return Err(inv(
            "spec.duration_ms",
            "required: every experiment must be time-boxed",
        ));
    }
    if s.name.len() > 128 {
        return Err(inv("spec.name", "at most 128 bytes"));
    }
    if s.labels.len() > 32 {
        return Err(inv("spec.labels", "at most 32 labels"));
    }
    for k in s.labels.keys() {
        if k.is_empty() || k.len() > 63 {
            return Err(inv(
                format!("spec.labels[{k:?}]"),
                "a label key has 1 to 63 bytes",
            ));
        }
    }
    let faults: Vec<FaultSpec> = s
        .faults
        .iter()
        .enumerate()
        .map(|(i, f)| fault(i, f))
        .collect::<Result<_, _>>()?;
    let target = target(s.target.as_ref())?;
    for (i, f) in faults.iter().enumerate() {
        let field = || format!("spec.faults[{i}].{}", f.kind_name());
        if f.is_network() && target.cgroup.is_none() && target.interface.is_none() {
            return Err(inv(
                field(),
                "network faults are scoped by a cgroup or an interface: set spec.target.cgroup or spec.target.interface",
            ));
        }
        if f.is_network() && (!target.pids.is_empty() || target.comm.is_some()) {
            return Err(inv(
                field(),
                "packets are matched by cgroup or interface; pids and comm do not apply to network faults",
            ));
        }
        if matches!(
            f,
            FaultSpec::Duplicate(_) | FaultSpec::Corrupt(_) | FaultSpec::Latency(_)
        ) && target.interface.is_none()
        {
            return Err(inv(
                field(),
                format!(
                    "{} needs an interface scope (spec.target.interface): cgroup_skb programs cannot change, copy or delay packets",
                    f.kind_name()
                ),
            ));
        }
        if let FaultSpec::DnsError(d) = f
            && d.failure != DnsFailure::Drop
            && target.interface.is_none()
        {
            return Err(inv(
                format!("spec.faults[{i}].dns_error.failure"),
                format!(
                    "answering with {} needs an interface scope (spec.target.interface): cgroup_skb programs \
                     cannot rewrite packets; use drop for a cgroup",
                    d.failure.name()
                ),
            ));
        }
        if !f.is_network() && target.interface.is_some() {
            return Err(inv(
                "spec.target.interface",
                format!("{} faults are not scoped by interface", f.kind_name()),
            ));
        }
    }
    Ok(ExperimentSpec {
        name: s.name.clone(),
        faults,
        target,
        duration: Duration::from_millis(s.duration_ms),
        dry_run: s.dry_run,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    })
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn direction_to_proto(d: Direction) -> pb::Direction {
    match d {
        Direction::Ingress => pb::Direction::Ingress,
        Direction::Egress => pb::Direction::Egress,
        Direction::Both => pb::Direction::Both,
    }
}

fn match_to_proto(m: &PacketMatch) -> pb::PacketMatch {
    let range = |r: PortRange| {
        if r.is_any() {
            String::new()
        } else if r.lo == r.hi {
            r.lo.to_string()
        } else {
            format!("{}-{}", r.lo, r.hi)
        }
    };
    pb::PacketMatch {
        protocol: match m.proto {
            Some(6) => "tcp".into(),
            Some(17) => "udp".into(),
            Some(_) => "icmp".into(),
            None => String::new(),
        },
        src_cidr: m.src.map(|c| c.to_string()).unwrap_or_default(),
        dst_cidr: m.dst.map(|c| c.to_string()).unwrap_or_default(),
        src_ports: range(m.sports),
        dst_ports: range(m.dports),
        include_ssh: m.include_ssh,
    }
}

fn spec_to_proto(s: &ExperimentSpec) -> pb::ExperimentSpec {
    use pb::fault_spec::Kind;
    let faults = s
        .faults
        .iter()
        .map(|f| pb::FaultSpec {
            kind: Some(match f {
                FaultSpec::SyscallError(e) => Kind::SyscallError(pb::SyscallError {
                    syscall: e.call.name().into(),
                    errno: e.errno.name(),
                    probability: e.probability.value(),
                    port: u32::from(e.port),
                    cidr: e.cidr.map(|c| c.to_string()).unwrap_or_default(),
                    path: e.path.as_ref().map(|p| p.path.clone()).unwrap_or_default(),
                }),
                FaultSpec::SyscallSignal(g) => Kind::SyscallSignal(pb::SyscallSignal {
                    syscall: g.syscall.name().into(),
                    signal: g.signal.name().into(),
                    probability: g.probability.value(),
                    nth_call: g.nth_call,
                }),
                FaultSpec::PacketLoss(l) => Kind::PacketLoss(pb::PacketLoss {
                    probability: l.probability.value(),
                    burst_length: l.burst_length,
                    direction: direction_to_proto(l.direction).into(),
                    r#match: Some(match_to_proto(&l.matching)),
                }),
                FaultSpec::Bandwidth(b) => Kind::Bandwidth(pb::Bandwidth {
                    rate_bits_per_sec: b.rate_bytes_per_sec * 8,
                    burst_bytes: b.burst_bytes,
                    direction: direction_to_proto(b.direction).into(),
                    r#match: Some(match_to_proto(&b.matching)),
                }),
                FaultSpec::DnsError(d) => Kind::DnsError(pb::DnsError {
                    domain: d.domain.clone(),
                    failure: match d.failure {
                        DnsFailure::Drop => pb::DnsFailure::Drop,
                        DnsFailure::ServFail => pb::DnsFailure::Servfail,
                        DnsFailure::NxDomain => pb::DnsFailure::Nxdomain,
                    }
                    .into(),
                    probability: d.probability.value(),
                    resolver_cidr: d.resolver.map(|c| c.to_string()).unwrap_or_default(),
                }),
                FaultSpec::Latency(l) => Kind::Latency(pb::Latency {
                    delay_ms: l.delay.as_secs_f64() * 1e3,
                    jitter_ms: l.jitter.as_secs_f64() * 1e3,
                    r#match: Some(match_to_proto(&l.matching)),
                }),
                FaultSpec::Corrupt(c) => Kind::Corrupt(pb::Corrupt {
                    probability: c.probability.value(),
                    recompute_checksums: c.recompute_checksums,
                    direction: direction_to_proto(c.direction).into(),
                    r#match: Some(match_to_proto(&c.matching)),
                }),
                FaultSpec::Duplicate(d) => Kind::Duplicate(pb::Duplicate {
                    probability: d.probability.value(),
                    direction: direction_to_proto(d.direction).into(),
                    r#match: Some(match_to_proto(&d.matching)),
                }),
                FaultSpec::Blackhole(b) => Kind::Blackhole(pb::Blackhole {
                    direction: direction_to_proto(b.direction).into(),
                    r#match: Some(match_to_proto(&b.matching)),
                }),
            }),
        })
        .collect();
    let t = &s.target;
    pb::ExperimentSpec {
        name: s.name.clone(),
        faults,
        target: Some(pb::Target {
            pids: t.pids.clone(),
            cgroup: t
                .cgroup
                .as_ref()
                .map(|c| c.path.display().to_string())
                .unwrap_or_default(),
            comm: t.comm.clone().unwrap_or_default(),
            exclude_pids: t.exclude_pids.clone(),
            exclude_comm: t.exclude_comm.clone().unwrap_or_default(),
            interface: t
                .interface
                .as_ref()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
        }),
        duration_ms: s.duration.as_millis() as u64,
        dry_run: s.dry_run,
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn experiment_to_proto(v: &ExperimentView) -> pb::Experiment {
    let state = match v.state {
        State::Running => pb::ExperimentState::Running,
        State::Expired => pb::ExperimentState::Expired,
        State::Stopped => pb::ExperimentState::Stopped,
        State::Failed => pb::ExperimentState::Failed,
    };
    pb::Experiment {
        id: v.id.clone(),
        spec: Some(spec_to_proto(&v.spec)),
        state: state.into(),
        started_at_ms: ms(v.started_at),
        deadline_ms: ms(v.deadline),
        ended_at_ms: v.ended_at.map_or(0, ms),
        message: v.message.clone(),
        matched: v.faults.iter().map(|f| f.matched).sum(),
        injected: v.faults.iter().map(|f| f.injected).sum(),
        faults: v
            .faults
            .iter()
            .map(|f| pb::FaultStatus {
                index: f.index,
                kind: f.kind.into(),
                mechanism: f.mechanism.into(),
                matched: f.matched,
                injected: f.injected,
                summary: f.summary.clone(),
            })
            .collect(),
    }
}

pub fn event_to_proto(e: &Event) -> pb::Event {
    let t = match e.kind {
        EventKind::Started => pb::EventType::Started,
        EventKind::Counters => pb::EventType::Counters,
        EventKind::Expired => pb::EventType::Expired,
        EventKind::Stopped => pb::EventType::Stopped,
        EventKind::Failed => pb::EventType::Failed,
    };
    pb::Event {
        r#type: t.into(),
        at_ms: ms(e.at),
        experiment: Some(experiment_to_proto(&e.experiment)),
        message: e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> pb::ExperimentSpec {
        pb::ExperimentSpec {
            name: "t".into(),
            faults: vec![pb::FaultSpec {
                kind: Some(pb::fault_spec::Kind::SyscallError(pb::SyscallError {
                    syscall: "connect".into(),
                    errno: "ECONNREFUSED".into(),
                    probability: 0.5,
                    port: 8080,
                    cidr: "127.0.0.0/8".into(),
                    path: String::new(),
                })),
            }],
            target: Some(pb::Target {
                pids: vec![std::process::id()],
                ..Default::default()
            }),
            duration_ms: 1000,
            ..Default::default()
        }
    }

    fn field_of(spec: pb::ExperimentSpec) -> String {
        spec_from_proto(Some(&spec)).unwrap_err().field
    }

    #[test]
    fn valid_spec_converts() {
        let s = spec_from_proto(Some(&base())).unwrap();
        assert_eq!(s.duration, Duration::from_secs(1));
        assert_eq!(
            s.faults[0].summary(),
            "connect -> ECONNREFUSED p=0.5 port=8080 cidr=127.0.0.0/8"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let with_err = |f: &dyn Fn(&mut pb::SyscallError)| {
            let mut s = base();
            if let Some(pb::fault_spec::Kind::SyscallError(e)) = &mut s.faults[0].kind {
                f(e);
            }
            field_of(s)
        };
        assert_eq!(
            with_err(&|e| e.errno = "EFOO".into()),
            "spec.faults[0].syscall_error.errno"
        );
        assert_eq!(
            with_err(&|e| e.syscall = "frob".into()),
            "spec.faults[0].syscall_error.syscall"
        );
        assert_eq!(
            with_err(&|e| e.probability = 1.5),
            "spec.faults[0].syscall_error.probability"
        );
        assert_eq!(
            with_err(&|e| e.port = 70000),
            "spec.faults[0].syscall_error.port"
        );
        assert_eq!(
            with_err(&|e| e.cidr = "10.0.0.0/40".into()),
            "spec.faults[0].syscall_error.cidr"
        );
        // Filters that do not apply to the call are refused, not ignored.
        assert_eq!(
            with_err(&|e| e.path = "/tmp".into()),
            "spec.faults[0].syscall_error.path"
        );
        let lsm = |e: &mut pb::SyscallError| {
            e.syscall = "openat".into();
            e.port = 0;
            e.cidr = String::new();
        };
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.cidr = "10.0.0.0/8".into();
            }),
            "spec.faults[0].syscall_error.cidr"
        );
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.port = 80;
            }),
            "spec.faults[0].syscall_error.port"
        );
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.path = "relative/dir".into();
            }),
            "spec.faults[0].syscall_error.path"
        );
        assert_eq!(
            with_err(&|e| {
                lsm(e);
                e.path = "/no/such/faultline/dir".into();
            }),
            "spec.faults[0].syscall_error.path"
        );
        assert_eq!(
            with_err(&|e| {
                e.syscall = "fork".into();
                e.port = 0;
                e.cidr = String::new();
                e.path = "/tmp".into();
            }),
            "spec.faults[0].syscall_error.path"
        );

        let mut s = base();
        s.duration_ms = 0;
        assert_eq!(field_of(s), "spec.duration_ms");
        let mut s = base();
        s.target = Some(pb::Target::default());
        assert_eq!(field_of(s), "spec.target");
        let mut s = base();
        s.target = Some(pb::Target {
            cgroup: "/definitely/not/a/cgroup".into(),
            ..Default::default()
        });
        assert_eq!(field_of(s), "spec.target.cgroup");
        let mut s = base();
        s.target = Some(pb::Target {
            pids: vec![u32::MAX - 1],
            ..Default::default()
        });
        assert_eq!(field_of(s), "spec.target.pids[0]");
        let mut s = base();
        s.faults[0].kind = Some(pb::fault_spec::Kind::SyscallSignal(pb::SyscallSignal {
            syscall: "getpid".into(),
            signal: "NOTASIG".into(),
            ..Default::default()
        }));
        assert_eq!(field_of(s), "spec.faults[0].syscall_signal.signal");
    }
}
