//! Packet parsing shared by the cgroup_skb, TCX and DNS programs: the
//! L3/L4 fields faults match on, read with fixed-size loads.

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
    };
    let l4 = if eth_proto == ETH_P_IP {
        let h: [u8; 20] = ctx.read(l3)?;
        p.proto = u32::from(h[9]);
        p.src[0] = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]);
        p.dst[0] = u32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
        l3 + usize::from(h[0] & 0x0f) * 4
    } else if eth_proto == ETH_P_IPV6 {
        let h: [u8; 40] = ctx.read(l3)?;
        p.v6 = true;
        p.proto = u32::from(h[6]);
        let mut i = 0;
        while i < 4 {
            p.src[i] =
                u32::from_ne_bytes([h[8 + 4 * i], h[9 + 4 * i], h[10 + 4 * i], h[11 + 4 * i]]);
            p.dst[i] =
                u32::from_ne_bytes([h[24 + 4 * i], h[25 + 4 * i], h[26 + 4 * i], h[27 + 4 * i]]);
            i += 1;
        }
        l3 + 40
    } else {
        return None;
    };
    p.l4 = l4;
    p.payload = l4;
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
