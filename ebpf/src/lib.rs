// Exists so that agent/build.rs can name this crate as a build-dependency
// (which makes cargo rebuild the agent when a kernel program changes).
#![no_std]

// The dependencies are the kernel programs' (the binary's); named here so
// that `unused_crate_dependencies` holds for this empty library too.
use aya_ebpf as _;
use faultline_common as _;
