//! Wire values for the tests: the faults and matches come from
//! `faultline_proto::build`, which the end-to-end suite shares; the `inject`
//! flags that make `full_match()` are ctl's own. The unit tests and
//! `tests/cli.rs` share this file.

pub use faultline_proto::build::{
    any_packet, bandwidth, blackhole, corrupt, duplicate, full_match, packet_loss, to_ports,
};

/// The `inject` flags that make `full_match()`.
pub const FULL_MATCH_FLAGS: &str = "--protocol tcp --src-cidr 10.0.0.0/8 --dst-cidr 10.1.0.0/16 \
                                    --src-ports 8000-8100 --dst-ports 5432 --include-ssh";
