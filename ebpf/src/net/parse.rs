//! Packet parsing shared by the cgroup_skb, TCX and DNS programs: the
//! L3/L4 fields faults match on, read with fixed-size loads. IPv6
//! extension headers are walked (a bounded number); a packet that may be
//! TCP but whose ports cannot be read (an IPv4 or IPv6 non-first fragment,
//! or more extension headers than the walk takes) is marked `ssh`, so that
//! the SSH exemption spares it.

use aya_ebpf::{
    helpers::generated::bpf_get_prandom_u32,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::{SkBuffContext, TcContext},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const ETH_HLEN: usize = 14;

/// The fields of one packet that faults match on.
pub(crate) struct Packet {
    /// Bytes on the wire as the hook sees them (skb->len).
    pub(crate) len: u32,
    pub(crate) v6: bool,
    pub(crate) l3: usize,
    pub(crate) l4: usize,
    /// Offset of the L4 payload (after the UDP or TCP header).
    pub(crate) payload: usize,
    pub(crate) proto: u32,
    pub(crate) src: [u32; 4],
    pub(crate) dst: [u32; 4],
    pub(crate) sport: u32,
    pub(crate) dport: u32,
    /// 1 when network faults spare the packet unless they include SSH:
    /// to or from an SSH port, or possibly TCP with ports unread (0 then).
    /// Computed once per packet, not per slot.
    pub(crate) ssh: u64,
}

/// `PKT_SCRATCH`'s value: a packet, and the tag of the run that wrote it.
pub(crate) struct Scratch {
    tag: u32,
    p: Packet,
}

/// Where `parse` leaves its result and reads it back: the verifier does
/// not track map memory, so every way through the parser (IPv4 or IPv6,
/// fragment or not, extension headers walked) hands the same unknown
/// values to the slot loop, which it then verifies once instead of once per
/// way (it is most of the packet programs' verification).
#[map(name = "FL_PKT_SCRATCH")]
static PKT_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// `p`, through `PKT_SCRATCH` (see there). A packet program can be
/// interrupted on its CPU by a softirq running another one (an ACK sent
/// from softirq while a process's packet is in the egress hook), which
/// would overwrite the value: a random tag is written first and checked
/// last, and if another run wrote meanwhile, None (the packet is left
/// alone, like one that does not parse).
#[inline(always)]
fn launder(p: Packet) -> Option<Packet> {
    let s = PKT_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: bpf_get_prandom_u32 takes no arguments and touches no memory.
    let tag = unsafe { bpf_get_prandom_u32() };
    // SAFETY: `s` is non-null (a successful lookup) and points at this CPU's
    // value, valid for the program's run (migration is disabled); a nested
    // run on this CPU may write it too, which the tag detects. Volatile
    // accesses keep the stores and loads in this order (the round trip is
    // what hides the values from the verifier).
    unsafe {
        core::ptr::write_volatile(&raw mut (*s).tag, tag);
        core::ptr::write_volatile(&raw mut (*s).p, p);
        let out = core::ptr::read_volatile(&raw const (*s).p);
        (core::ptr::read_volatile(&raw const (*s).tag) == tag).then_some(out)
    }
}

/// The ports SSH is served on, a bitmap (bit `port % 64` of word
/// `port / 64`): the agent's configured `ssh_ports` and the ports sshd
/// listens on, refreshed when an experiment starts.
#[map(name = "FL_SSH_PORTS")]
static SSH_PORTS: Array<u64> = Array::with_max_entries(1024, 0);

/// 1 if either port is an SSH port (None only if the map lookup fails,
/// which it cannot for a port below 65536).
#[inline(always)]
pub(crate) fn ssh_ports(sport: u32, dport: u32) -> Option<u64> {
    let s = *SSH_PORTS.get((sport >> 6) & 1023)?;
    let d = *SSH_PORTS.get((dport >> 6) & 1023)?;
    Some(((s >> (sport & 63)) | (d >> (dport & 63))) & 1)
}

/// IPv6 extension headers walked before giving up on the L4 header:
/// hop-by-hop, routing, fragment, destination options (twice) and AH is
/// the most RFC 8200's recommended order has.
const MAX_EXT_HEADERS: u32 = 6;
const NH_HOP_BY_HOP: u32 = 0;
const NH_ROUTING: u32 = 43;
const NH_FRAGMENT: u32 = 44;
const NH_AH: u32 = 51;
const NH_DEST_OPTS: u32 = 60;
const IPPROTO_TCP: u32 = 6;

#[inline(always)]
const fn is_ext_header(nh: u32) -> bool {
    nh == NH_HOP_BY_HOP
        || nh == NH_ROUTING
        || nh == NH_FRAGMENT
        || nh == NH_AH
        || nh == NH_DEST_OPTS
}

/// Walks IPv6 extension headers from `off` (the first one's type `nh`):
/// the upper-layer protocol and its offset, and whether its header is in
/// this packet (false for a non-first fragment, or when the walk ended on
/// an extension header).
#[inline(always)]
fn ipv6_upper(mut nh: u32, mut off: usize, ctx: &impl Headers) -> Option<(u32, usize, bool)> {
    let mut i = 0;
    while i < MAX_EXT_HEADERS {
        if !is_ext_header(nh) {
            return Some((nh, off, true));
        }
        let h: [u8; 4] = ctx.read(off)?;
        if nh == NH_FRAGMENT {
            // Fragment offset (13 bits, in 8-byte units): the upper-layer
            // header is in the first fragment only.
            if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                return Some((u32::from(h[0]), off + 8, false));
            }
            off += 8;
        } else if nh == NH_AH {
            off += (usize::from(h[1]) + 2) * 4;
        } else {
            off += (usize::from(h[1]) + 1) * 8;
        }
        nh = u32::from(h[0]);
        i += 1;
    }
    Some((nh, off, !is_ext_header(nh)))
}

/// Fixed-size reads from a packet (`bpf_skb_load_bytes` with a constant
/// length: the verifier refuses a length that could be zero).
pub(crate) trait Headers {
    fn read<T>(&self, off: usize) -> Option<T>;
}

impl Headers for SkBuffContext {
    fn read<T>(&self, off: usize) -> Option<T> {
        self.load::<T>(off).ok()
    }
}

impl Headers for TcContext {
    fn read<T>(&self, off: usize) -> Option<T> {
        self.load::<T>(off).ok()
    }
}

/// Reads L3/L4 headers starting at `l3`.
#[inline(always)]
pub(crate) fn parse(eth_proto: u16, l3: usize, ctx: &impl Headers) -> Option<Packet> {
    let mut p = Packet {
        len: 0,
        v6: false,
        l3,
        l4: 0,
        payload: 0,
        proto: 0,
        src: [0; 4],
        dst: [0; 4],
        sport: 0,
        dport: 0,
        ssh: 0,
    };
    // Where the L4 header is, and whether it is in this packet.
    let (l4, has_l4) = if eth_proto == ETH_P_IP {
        let h: [u8; 20] = ctx.read(l3)?;
        p.proto = u32::from(h[9]);
        p.src[0] = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
        p.dst[0] = u32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
        // A non-zero fragment offset: a later fragment, without L4 header.
        (
            l3 + usize::from(h[0] & 0x0f) * 4,
            u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0,
        )
    } else if eth_proto == ETH_P_IPV6 {
        let h: [u8; 40] = ctx.read(l3)?;
        p.v6 = true;
        let mut i = 0;
        while i < 4 {
            p.src[i] =
                u32::from_ne_bytes([h[8 + 4 * i], h[9 + 4 * i], h[10 + 4 * i], h[11 + 4 * i]]);
            p.dst[i] =
                u32::from_ne_bytes([h[24 + 4 * i], h[25 + 4 * i], h[26 + 4 * i], h[27 + 4 * i]]);
            i += 1;
        }
        let (proto, l4, whole) = ipv6_upper(u32::from(h[6]), l3 + 40, ctx)?;
        p.proto = proto;
        (l4, whole)
    } else {
        return None;
    };
    p.l4 = l4;
    p.payload = l4;
    if !has_l4 {
        // Ports unread: such a packet may be SSH unless it is known not
        // to be TCP (an extension header left unwalked may hide TCP).
        p.ssh = u64::from(p.proto == IPPROTO_TCP || is_ext_header(p.proto));
        return launder(p);
    }
    if p.proto == 17 {
        p.payload = l4 + 8;
    } else if p.proto == 6
        && let Some(off) = ctx.read::<u8>(l4 + 12)
    {
        p.payload = l4 + usize::from(off >> 4) * 4;
    }
    if (p.proto == 6 || p.proto == 17)
        && let Some(ports) = ctx.read::<[u8; 4]>(l4)
    {
        p.sport = u32::from(u16::from_be_bytes([ports[0], ports[1]]));
        p.dport = u32::from(u16::from_be_bytes([ports[2], ports[3]]));
    }
    p.ssh = ssh_ports(p.sport, p.dport)?;
    launder(p)
}
