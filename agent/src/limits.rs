//! What one request, one answer and the agent as a whole may hold, so that
//! no request mix grows the agent's memory without bound. The request-side
//! limits are checked once, at the edge (`domain::wire`); the counts are the
//! engine's (`max_running_experiments`, `keep_ended_experiments` in the
//! config); the message sizes are tonic's, on the `FaultService`.

/// Largest request the `FaultService` decodes (tonic's
/// `max_decoding_message_size`; tonic answers `OutOfRange` beyond): four
/// times the largest valid spec (`MAX_SPEC_BYTES`), so a request refused
/// for its size was never a valid one. A request beyond is refused from its
/// length prefix, before it is read. Requests within are read whole, a few
/// copies each while decoded: what many of them at once cost is bounded by
/// the streams and connections the server accepts (its
/// `max_concurrent_streams` and connection limit). A limit on calls in
/// flight in front of tonic does not work: streams waiting for their turn
/// keep the connection's HTTP/2 window, and those admitted can then never
/// read their bodies (seen as a deadlock in the hostile suite).
pub const MAX_REQUEST_BYTES: usize = 256 << 10;
/// Largest answer it encodes (tonic's `max_encoding_message_size`; tonic
/// sends without a limit by default). gRPC clients receive at most 4 MiB by
/// default, so no answer is made that they would refuse.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// What one `ListExperiments` page may take of that, leaving room for the
/// framing and the page token.
pub const MAX_PAGE_BYTES: usize = MAX_RESPONSE_BYTES - (64 << 10);
/// `ListExperiments.page_size` when 0, and its largest value.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Events the engine's broadcast keeps for subscribers that have not read
/// them yet. Each is one shared view (`Arc<Event>`), whatever the number of
/// subscribers; a subscriber that falls this far behind is told `lagged`
/// and reads the final states again from the records.
pub const EVENT_BUFFER: usize = 1024;
/// Encoded events one `WatchEvents` stream queues for its client beyond
/// what HTTP/2 flow control lets through: a client that stops reading
/// holds at most this many, and then its stream lags.
pub const WATCH_QUEUE: usize = 16;

/// An experiment's name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Labels per experiment, and a label's key and value in bytes.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY_BYTES: usize = 63;
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// A whole `ExperimentSpec`, encoded: bounds every string a fault kind
/// takes (paths, domains, names) without a limit per kind, and so the size
/// of every stored experiment and of every event about one.
pub const MAX_SPEC_BYTES: usize = 64 << 10;
/// The longest reason a refusal quotes back (a reason may quote the
/// request): cut beyond, so a refusal is never larger than a few KiB.
pub const MAX_REASON_BYTES: usize = 1024;

/// Experiments running at once, unless configured (the kernel's fault
/// slots, `faultline_common::MAX_FAULTS`, bound it anyway).
pub const DEFAULT_MAX_RUNNING: u32 = 128;
/// Ended experiments kept for `GetExperiment`/`ListExperiments`, unless
/// configured; the oldest are forgotten first.
pub const DEFAULT_KEEP_ENDED: u32 = 1000;
/// Configured values beyond these are refused (exit 64).
pub const MAX_KEEP_ENDED: u32 = 100_000;

/// The configurable counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_running: usize,
    pub keep_ended: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_running: DEFAULT_MAX_RUNNING as usize,
            keep_ended: DEFAULT_KEEP_ENDED as usize,
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked as cut.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_char_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        let s = "é".repeat(10);
        let c = clip(&s, 5);
        assert!(c.starts_with("éé…"), "{c}");
        assert!(c.ends_with("(20 bytes in all)"), "{c}");
    }
}
