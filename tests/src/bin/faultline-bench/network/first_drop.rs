//! Network part 3: StartExperiment → first dropped datagram.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context as _, anyhow, ensure};
use faultline_proto::v1 as pb;
use faultline_tests::{TestNetns, context, our_links, udp_receiver, wait_for};
use nix::sched::{CloneFlags, setns};
use tokio::runtime::Runtime;

use super::ours_on;
use crate::{Client, mono_ns, stats::*};

/// Runs before the measured ones (first program load, page cache); shown, not counted.
const FIRST_DROP_WARMUP: usize = 3;
const FIRST_DROP_PERIOD: Duration = Duration::from_micros(50);
/// How long datagrams flow before StartExperiment, so both ends are hot.
const FIRST_DROP_LEAD: Duration = Duration::from_millis(20);
/// Arrivals have stopped once none came for this long after StartExperiment returned.
const FIRST_DROP_QUIET: Duration = Duration::from_millis(20);
/// Give up on a run when datagrams still arrive this long after StartExperiment returned.
const FIRST_DROP_GIVE_UP: Duration = Duration::from_secs(2);

/// One run, in CLOCK_MONOTONIC nanoseconds.
pub struct FirstDrop {
    /// StartExperiment call → response returned.
    rpc: i64,
    /// Response returned → send time of the first datagram that never arrived;
    /// negative when the fault was live before the response.
    after_return: i64,
    /// StartExperiment called → that send time.
    after_call: i64,
    /// Datagrams missing before the last one that arrived (expected: 0).
    holes: usize,
    /// Median interval between the sender's datagrams.
    interval: i64,
    send_errors: u64,
}

pub struct FirstDropSummary {
    /// The judged figure, with its order-statistic CI.
    pub after_call_p99: Figure<'static>,
    pub after_return_p99: f64,
    pub rpc_p99: f64,
}

pub fn first_drop_intro(ns: &TestNetns) {
    println!();
    println!(
        "  -- 3. time to first drop: per run, a thread of this bench in the root namespace sends numbered UDP datagrams"
    );
    println!(
        "     every {} µs (absolute clock_nanosleep, timer slack 1 ns) to a receiver thread that joined the test namespace (setns) and",
        FIRST_DROP_PERIOD.as_micros()
    );
    println!(
        "     records each arrival's CLOCK_MONOTONIC; after {} ms of flow: StartExperiment(packet_loss 100 %, egress, udp",
        FIRST_DROP_LEAD.as_millis()
    );
    println!(
        "     to the receiver's port, interface {}). First drop = send time of the datagram after the last one that",
        ns.host_if
    );
    println!(
        "     arrived (resolution: one send interval). Then StopExperiment (the last experiment detaches the program, so"
    );
    println!(
        "     every run attaches it afresh). {FIRST_DROP_WARMUP} warm-up runs per agent; one agent at a time; nothing pinned."
    );
}

pub fn first_drop(
    rt: &Runtime,
    client: &mut Client,
    ns: &TestNetns,
    runs_wanted: usize,
    label: &str,
) -> anyhow::Result<FirstDropSummary> {
    println!();
    println!("  {label}");
    let netns_path = format!("/run/netns/{}", ns.name);
    let mut runs = Vec::with_capacity(FIRST_DROP_WARMUP + runs_wanted);
    for i in 0..FIRST_DROP_WARMUP + runs_wanted {
        runs.push(
            first_drop_run(rt, client, ns, &netns_path)
                .with_context(|| format!("first-drop run {i}"))?,
        );
    }

    let (warmup, measured) = runs.split_at(FIRST_DROP_WARMUP);
    let ms = |ns: i64| ns as f64 / 1e6;
    let early = measured.iter().filter(|r| r.after_return <= 0).count();
    let mut after_return: Vec<i64> = measured.iter().map(|r| r.after_return.max(0)).collect();
    let mut after_call: Vec<i64> = measured.iter().map(|r| r.after_call).collect();
    let mut rpc: Vec<i64> = measured.iter().map(|r| r.rpc).collect();
    let mut interval: Vec<i64> = measured.iter().map(|r| r.interval).collect();
    for v in [&mut after_return, &mut after_call, &mut rpc, &mut interval] {
        v.sort_unstable();
    }
    print_start_latency(
        "dropped",
        measured.len(),
        &warmup.iter().map(|r| r.after_return).collect::<Vec<_>>(),
        [&after_return, &after_call, &rpc],
    );
    let holes: usize = measured.iter().map(|r| r.holes).sum();
    let send_errors: u64 = measured.iter().map(|r| r.send_errors).sum();
    println!(
        "  send interval: median {:.1} µs (p99 of the per-run medians {:.1} µs); datagrams missing before the fault: {holes}; \
         send errors: {send_errors}",
        percentile(&interval, 50.0) as f64 / 1e3,
        percentile(&interval, 99.0) as f64 / 1e3
    );
    println!(
        "  dropped before the response returned: {early}/{} runs (counted as 0 ms in the first row)",
        measured.len()
    );
    Ok(FirstDropSummary {
        after_call_p99: p99_ms(&after_call),
        after_return_p99: ms(percentile(&after_return, 99.0)),
        rpc_p99: ms(percentile(&rpc, 99.0)),
    })
}

pub fn first_drop_run(
    rt: &Runtime,
    client: &mut Client,
    ns: &TestNetns,
    netns_path: &str,
) -> anyhow::Result<FirstDrop> {
    let stop_receiver = AtomicBool::new(false);
    let stop_sender = AtomicBool::new(false);
    let last_arrival = AtomicI64::new(0);
    let peer = ns.peer_ips[0];
    std::thread::scope(|s| {
        let (stop_receiver, stop_sender, last_arrival) =
            (&stop_receiver, &stop_sender, &last_arrival);
        let (ready_tx, ready_rx) = mpsc::channel();
        let receiver = s
            .spawn(move || receive_timed(netns_path, peer, stop_receiver, last_arrival, &ready_tx));
        let Ok(port) = ready_rx.recv_timeout(Duration::from_secs(5)) else {
            stop_receiver.store(true, Ordering::Relaxed);
            return Err(join(receiver)
                .err()
                .unwrap_or_else(|| anyhow!("the receiver thread did not start")));
        };
        let dst = SocketAddr::from((peer, port));
        let sender = s.spawn(move || send_timed(dst, stop_sender));
        let before = our_links().len();
        let armed = arm_and_wait(rt, client, ns, port, last_arrival);
        stop_sender.store(true, Ordering::Relaxed);
        let sent = join(sender);
        let stopped = match &armed {
            Ok((_, _, id)) => {
                let r = context(
                    rt.block_on(
                        client.stop_experiment(pb::StopExperimentRequest { id: id.clone() }),
                    ),
                    "StopExperiment",
                );
                wait_for(Duration::from_secs(2), || our_links().len() <= before);
                r.map(drop)
            }
            Err(_) => Ok(()),
        };
        stop_receiver.store(true, Ordering::Relaxed);
        let arrivals = join(receiver)?;
        let (t_call, t_ret, _) = armed?;
        stopped?;
        let (sends, send_errors) = sent?;

        let mut seen = vec![false; sends.len()];
        let mut last = None;
        for &(seq, _) in &arrivals {
            let seq = seq as usize;
            ensure!(
                seq < sends.len(),
                "datagram {seq} arrived but was never sent"
            );
            seen[seq] = true;
            last = last.max(Some(seq));
        }
        let last = last.context("no datagram arrived at all")?;
        let first_lost = last + 1;
        ensure!(
            first_lost < sends.len(),
            "no datagram was lost: the last of {} sent arrived (StartExperiment returned {:.1} ms before the sender stopped)",
            sends.len(),
            (mono_ns() - t_ret) as f64 / 1e6
        );
        let holes = seen[..=last].iter().filter(|s| !**s).count();
        let mut gaps: Vec<i64> = sends.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        let dropped_at = sends[first_lost];
        Ok(FirstDrop {
            rpc: t_ret - t_call,
            after_return: dropped_at - t_ret,
            after_call: dropped_at - t_call,
            holes,
            interval: percentile(&gaps, 50.0),
            send_errors,
        })
    })
}

pub fn join<T>(handle: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("a first-drop thread panicked"))?
}

/// Lets datagrams flow, starts the 100 % loss, and waits until arrivals have
/// stopped. Returns (t_call, t_ret, experiment id).
pub fn arm_and_wait(
    rt: &Runtime,
    client: &mut Client,
    ns: &TestNetns,
    port: u16,
    last_arrival: &AtomicI64,
) -> anyhow::Result<(i64, i64, String)> {
    std::thread::sleep(FIRST_DROP_LEAD);
    ensure!(
        last_arrival.load(Ordering::Relaxed) > 0,
        "no datagram arrived in the {} ms before StartExperiment",
        FIRST_DROP_LEAD.as_millis()
    );
    // Nothing may fail between StartExperiment and returning its id (the
    // caller stops the experiment only when it has the id).
    let quiet = i64::try_from(FIRST_DROP_QUIET.as_nanos())?;
    let give_up = i64::try_from(FIRST_DROP_GIVE_UP.as_nanos())?;
    let req = ours_on(ns, "udp", port, 1.0);
    let t_call = mono_ns();
    let res = rt.block_on(client.start_experiment(req));
    let t_ret = mono_ns();
    let id = context(res, "StartExperiment")?
        .into_inner()
        .experiment
        .context("StartExperiment returned no experiment")?
        .id;
    loop {
        std::thread::sleep(Duration::from_millis(1));
        let now = mono_ns();
        if now - last_arrival.load(Ordering::Relaxed).max(t_ret) > quiet || now - t_ret > give_up {
            break;
        }
    }
    Ok((t_call, t_ret, id))
}

/// Sends numbered datagrams (u32, big-endian) every FIRST_DROP_PERIOD until
/// stopped; returns each one's send time (index = sequence number) and the
/// number of failed sends.
pub fn send_timed(dst: SocketAddr, stop: &AtomicBool) -> anyhow::Result<(Vec<i64>, u64)> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only
    // the calling thread: sleeps then end close to the requested time.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let sock = UdpSocket::bind("0.0.0.0:0").context("bind the sender")?;
    let period = i64::try_from(FIRST_DROP_PERIOD.as_nanos())?;
    let mut sends = Vec::with_capacity(64 << 10);
    let mut errors = 0;
    let mut seq = 0u32;
    let mut next = mono_ns();
    while !stop.load(Ordering::Relaxed) {
        sends.push(mono_ns());
        if sock.send_to(&seq.to_be_bytes(), dst).is_err() {
            errors += 1;
        }
        seq += 1;
        // Absolute deadlines, so the wake-up cost does not add to the period;
        // a late wake-up starts a fresh schedule instead of a catch-up burst.
        next = (next + period).max(mono_ns());
        let deadline = libc::timespec {
            tv_sec: next / 1_000_000_000,
            tv_nsec: next % 1_000_000_000,
        };
        // SAFETY: a valid timespec; no remainder is needed with TIMER_ABSTIME.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &raw const deadline,
                std::ptr::null_mut(),
            );
        }
    }
    Ok((sends, errors))
}

/// Joins the test namespace (this thread only), binds a UDP socket on `ip`,
/// sends its port on `ready`, and records (sequence, CLOCK_MONOTONIC) of each
/// arrival until stopped.
pub fn receive_timed(
    netns_path: &str,
    ip: std::net::Ipv4Addr,
    stop: &AtomicBool,
    last_arrival: &AtomicI64,
    ready: &mpsc::Sender<u16>,
) -> anyhow::Result<Vec<(u32, i64)>> {
    let ns = std::fs::File::open(netns_path).with_context(|| format!("open {netns_path}"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into the test namespace")?;
    let sock = std::panic::catch_unwind(|| udp_receiver(&ip.to_string()))
        .map_err(|_| anyhow!("could not bind a UDP receiver on {ip} in the test namespace"))?;
    sock.set_read_timeout(Some(Duration::from_millis(2)))?;
    ready.send(sock.local_addr()?.port())?;
    let mut arrivals = Vec::with_capacity(64 << 10);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(4) = sock.recv(&mut buf) {
            let now = mono_ns();
            arrivals.push((u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]), now));
            last_arrival.store(now, Ordering::Relaxed);
        }
    }
    Ok(arrivals)
}
