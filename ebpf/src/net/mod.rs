//! Network faults: `packet_loss`, `blackhole`, `bandwidth`, `latency`,
//! `duplicate`, `corrupt` and `dns_error`.
//!
//! One module per program type, each holding its programs' entry points:
//! - `skb`: cgroup_skb, cgroup scope (and interface scope without TCX);
//!   drops only.
//! - `tc`: TCX on an interface; drops, delays, duplicates, corrupts.
//! - `sock_ops`: TCP pacing for `bandwidth` in cgroup scope.
//! - `dns`: the cgroup_skb and TCX programs the two above tail-call for
//!   DNS queries while a `dns_error` fault is active.
//!
//! and one per concern they share: `parse` (headers), `decide` (slot list,
//! match, scope, verdict), `rate` (token bucket, departure times, jitter),
//! `loss` (Bernoulli and Gilbert), `mutate` (what TCX changes in a packet).

mod decide;
mod dns;
mod loss;
mod mutate;
mod parse;
mod rate;
mod skb;
mod sock_ops;
mod tc;

pub(crate) use parse::{Packet, ssh_ports};
pub(crate) use sock_ops::{SO_MAX_PACING_RATE, SOL_SOCKET, pacing_rate};
