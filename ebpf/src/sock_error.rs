//! `syscall_error` on socket calls through cgroup sock_addr hooks.
//!
//! Attached at the cgroup2 root while such a fault is active; the slot's
//! target decides who is hit. Returning 0 after `bpf_set_retval(-errno)`
//! makes the syscall fail with that errno.

use aya_ebpf::{
    helpers::generated::{bpf_set_retval, bpf_setsockopt},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use faultline_common::{MAX_FAULTS, flags, kind, sock_op};

use crate::{
    net::{Packet, SO_MAX_PACING_RATE, SOL_SOCKET, pacing_rate, ssh_ports},
    slots::{CONFIG, Caller, SLOTS, coin, count, dry_run, live, scan_limit, target_matches},
};

const ALLOW: i32 = 1;
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn fl_connect4(ctx: SockAddrContext) -> i32 {
    let verdict = decide(&ctx, sock_op::CONNECT, false);
    if verdict == ALLOW {
        pace(&ctx, false);
    }
    verdict
}

#[cgroup_sock_addr(connect6)]
pub fn fl_connect6(ctx: SockAddrContext) -> i32 {
    let verdict = decide(&ctx, sock_op::CONNECT, true);
    if verdict == ALLOW {
        pace(&ctx, true);
    }
    verdict
}

const SOCK_STREAM: u32 = 1;

/// `bandwidth` pacing at connect, for kernels whose sock_ops programs lack
/// the cgroup helper (Debian's 6.1): caps the pacing rate of a TCP socket
/// the target connects, as `fl_sock_ops` does elsewhere.
#[inline(always)]
fn pace(ctx: &SockAddrContext, v6: bool) {
    let Some(cfg) = CONFIG.get(0) else { return };
    if cfg.pace_at_connect == 0 || cfg.net_slot_count == 0 {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: the context is valid for the program's run; plain u32
    // fields, each read unconditionally (see fl_sock_ops). `v6` is a
    // constant of each program: a connect4 program may not even read
    // user_ip6 (the verifier refuses the access), nor connect6 user_ip4.
    let (ty, dst, port) = unsafe {
        let ty = core::ptr::read_volatile(&raw const (*sa).type_);
        let port = core::ptr::read_volatile(&raw const (*sa).user_port);
        let dst = if v6 {
            [
                core::ptr::read_volatile(&raw const (*sa).user_ip6[0]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[1]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[2]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[3]),
            ]
        } else {
            [core::ptr::read_volatile(&raw const (*sa).user_ip4), 0, 0, 0]
        };
        (ty, dst, port)
    };
    if ty != SOCK_STREAM {
        return;
    }
    let mut p = Packet {
        len: 0,
        v6,
        l3: 0,
        l4: 0,
        payload: 0,
        proto: 6,
        src: [0; 4],
        dst,
        sport: 0,
        dport: u32::from(u16::from_be(port as u16)),
        ssh: 0,
    };
    // Spared like a packet of the connection (a failed lookup: spared).
    p.ssh = ssh_ports(p.sport, p.dport).unwrap_or(1);
    if let Some(mut rate) = pacing_rate(cfg, &p, false) {
        // SAFETY: the program's own context; `rate` is a live u32 on the stack
        // and the length passed is its size.
        unsafe {
            bpf_setsockopt(
                sa.cast(),
                SOL_SOCKET,
                SO_MAX_PACING_RATE,
                (&raw mut rate).cast(),
                core::mem::size_of::<u32>() as i32,
            );
        }
    }
}

#[cgroup_sock_addr(bind4)]
pub fn fl_bind4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, sock_op::BIND, false)
}

#[cgroup_sock_addr(bind6)]
pub fn fl_bind6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, sock_op::BIND, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn fl_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, sock_op::SENDMSG, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn fl_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, sock_op::SENDMSG, true)
}

#[inline(always)]
fn prefix_mask(bits: u32) -> u32 {
    if bits == 0 {
        0
    } else if bits >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - bits)
    }
}

/// `addr` and `net` are big-endian words as the context stores them.
#[inline(always)]
fn v4_in(addr_be: u32, net_be: u32, prefix: u32) -> bool {
    let mask = prefix_mask(prefix);
    (u32::from_be(addr_be) & mask) == (u32::from_be(net_be) & mask)
}

#[expect(
    clippy::implicit_saturating_sub,
    reason = "explicit branches: the code shape the kernels' verifiers accepted is kept"
)]
#[inline(always)]
fn v6_in(addr: &[u32; 4], net: &[u32; 4], prefix: u32) -> bool {
    let mut i = 0;
    while i < 4 {
        let bits = if prefix >= 32 * (i as u32 + 1) {
            32
        } else if prefix > 32 * i as u32 {
            prefix - 32 * i as u32
        } else {
            0
        };
        if !v4_in(addr[i], net[i], bits) {
            return false;
        }
        i += 1;
    }
    true
}

#[expect(
    clippy::collapsible_if,
    reason = "collapsing into a let chain changes the generated code (4 more instructions in fl_bind4)"
)]
#[inline(always)]
fn decide(ctx: &SockAddrContext, op: u32, v6: bool) -> i32 {
    let caller = Caller::current();
    let Some(limit) = scan_limit(&caller) else {
        return ALLOW;
    };
    // SAFETY: the context pointer the kernel passed, valid (and not written
    // by anyone else) for the program's run; the verifier checks each read.
    let sa = unsafe { &*ctx.sock_addr };
    let port = u32::from(u16::from_be(sa.user_port as u16));
    let family = if v6 {
        flags::FAMILY_V6
    } else {
        flags::FAMILY_V4
    };

    let mut i = 0;
    while i < MAX_FAULTS {
        if i >= limit {
            break;
        }
        if let Some(slot) = SLOTS.get(i) {
            if slot.kind == kind::SOCK_ERROR
                && slot.op & op != 0
                && slot.flags & family != 0
                && (slot.port == 0 || slot.port == port)
                && live(slot)
            {
                let addr_ok = if v6 {
                    slot.v6_prefix == 0 || v6_in(&sa.user_ip6, &slot.v6_addr, slot.v6_prefix)
                } else {
                    slot.v4_prefix == 0 || v4_in(sa.user_ip4, slot.v4_addr, slot.v4_prefix)
                };
                if addr_ok && target_matches(i, &slot.target, &caller) {
                    let hit = coin(slot);
                    count(i, hit);
                    if hit && !dry_run(slot) {
                        // SAFETY: bpf_set_retval takes an integer and touches no memory;
                        // cgroup sock_addr programs may call it.
                        unsafe { bpf_set_retval(-(slot.errno as i32)) };
                        return REJECT;
                    }
                }
            }
        }
        i += 1;
    }
    ALLOW
}
