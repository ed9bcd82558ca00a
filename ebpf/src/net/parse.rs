//! Packet parsing shared by the cgroup_skb, TCX and DNS programs: the
//! L3/L4 fields faults match on, read with fixed-size loads. IPv6
//! extension headers are walked (a bounded number); a packet whose TCP
//! ports cannot be read (an IPv4 or IPv6 non-first fragment, or more
//! extension headers than the walk takes) is marked `ports_unknown`, so
//! that the SSH exemption spares it.

use aya_ebpf::programs::{SkBuffContext, TcContext};

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
    /// The packet may be TCP but its ports could not be read (they are 0).
    pub(crate) ports_unknown: bool,
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
        ports_unknown: false,
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
        p.ports_unknown = p.proto == IPPROTO_TCP || is_ext_header(p.proto);
        return Some(p);
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
    Some(p)
}
