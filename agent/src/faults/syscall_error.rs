//! `syscall_error` on socket calls: the cgroup sock_addr programs fail
//! connect/bind/sendmsg with the configured errno (`bpf_set_retval`).

use std::net::IpAddr;

use faultline_common::{FaultSlot, flags, kind, sock_op};

use crate::domain::{ErrorCall, SockCall, SyscallErrorSpec};

pub fn fill(spec: &SyscallErrorSpec, slot: &mut FaultSlot) {
    let call = match spec.call {
        ErrorCall::Sock(c) => c,
        ErrorCall::Lsm { .. } => {
            return super::lsm_error::fill(spec, slot);
        }
    };
    slot.kind = kind::SOCK_ERROR;
    slot.errno = spec.errno.number();
    slot.threshold = spec.probability.threshold();
    slot.port = u32::from(spec.port);
    slot.op = match call {
        SockCall::Connect => sock_op::CONNECT,
        SockCall::Bind => sock_op::BIND,
        SockCall::Sendmsg => sock_op::SENDMSG,
    };
    match spec.cidr {
        None => slot.flags |= flags::FAMILY_V4 | flags::FAMILY_V6,
        Some(c) => match c.addr {
            IpAddr::V4(a) => {
                slot.flags |= flags::FAMILY_V4;
                // The kernel context holds the address in network byte order.
                slot.v4_addr = u32::from_ne_bytes(a.octets());
                slot.v4_prefix = u32::from(c.prefix);
            }
            IpAddr::V6(a) => {
                slot.flags |= flags::FAMILY_V6;
                let o = a.octets();
                for (i, w) in slot.v6_addr.iter_mut().enumerate() {
                    *w = u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
                }
                slot.v6_prefix = u32::from(c.prefix);
            }
        },
    }
}
