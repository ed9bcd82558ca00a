//! Faultline's kernel programs.
//!
//! One module per fault kind (`net` for all network faults); `slots` holds
//! the maps and the matching logic they share. Every program is attached by the agent only while a fault that
//! needs it is active, and only through bpf_link, so faults vanish with the
//! agent.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod lsm_error;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod process_exit;
#[cfg(target_arch = "bpf")]
mod runq;
#[cfg(target_arch = "bpf")]
mod slots;
#[cfg(target_arch = "bpf")]
mod sock_error;
#[cfg(target_arch = "bpf")]
mod syscall_signal;

// Only a build-dependency marker for agent/build.rs (see lib.rs).
use faultline_ebpf as _;
// Off the BPF target the binary is empty: its dependencies go unused there.
#[cfg(not(target_arch = "bpf"))]
use {aya_ebpf as _, faultline_common as _};

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier guarantees this is unreachable.
    loop {}
}

// bpf_send_signal and the cgroup-ancestor helper are GPL-only.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
