//! `ListExperiments` in pages: at most `page_size` experiments and
//! `limits::MAX_PAGE_BYTES` encoded per answer (a page stops early rather
//! than exceed it), oldest first, and an opaque token to go on from.
//!
//! The token is the position after the page's last experiment (its start
//! time and id), not an offset: experiments that start or are forgotten
//! between pages move no other one into or out of the next page.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_proto::v1 as pb;
use prost::Message as _;

use super::convert::experiment_to_proto;
use crate::{
    domain::SpecError,
    engine::EngineHandle,
    limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES, MAX_PAGE_SIZE},
};

const TOKEN_PREFIX: &str = "p1";

/// Where the next page starts: after this experiment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub started_at: SystemTime,
    pub id: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl Cursor {
    pub fn encode(&self) -> String {
        let ns = self
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!(
            "{TOKEN_PREFIX}{}",
            hex(format!("{ns}/{}", self.id).as_bytes())
        )
    }

    pub fn decode(token: &str) -> Option<Self> {
        let raw = String::from_utf8(unhex(token.strip_prefix(TOKEN_PREFIX)?)?).ok()?;
        let (ns, id) = raw.split_once('/')?;
        let ns: u64 = ns.parse().ok()?;
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        id_ok.then(|| Self {
            started_at: UNIX_EPOCH + Duration::from_nanos(ns),
            id: id.to_owned(),
        })
    }
}

/// The page `req` asks for.
pub fn list(
    engine: &EngineHandle,
    req: &pb::ListExperimentsRequest,
) -> Result<pb::ListExperimentsResponse, SpecError> {
    let size = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n <= MAX_PAGE_SIZE => n,
        n => {
            return Err(SpecError::invalid(
                "page_size",
                format!("at most {MAX_PAGE_SIZE}, got {n} (0 = {DEFAULT_PAGE_SIZE})"),
            ));
        }
    } as usize;
    let after = match req.page_token.as_str() {
        "" => None,
        t => Some(Cursor::decode(t).ok_or_else(|| {
            SpecError::invalid(
                "page_token",
                "not a token this agent gave (pass next_page_token as it came, or empty to start)",
            )
        })?),
    };
    let mut experiments = Vec::new();
    let mut bytes = 0;
    let mut last = None;
    let more = engine.walk(
        req.running_only,
        after.as_ref().map(|c| (c.started_at, c.id.as_str())),
        &mut |v| {
            if experiments.len() == size {
                return false;
            }
            let e = experiment_to_proto(&v);
            // The field's tag and length prefix besides the message.
            let len = e.encoded_len() + 1 + prost::length_delimiter_len(e.encoded_len());
            if bytes + len > MAX_PAGE_BYTES && !experiments.is_empty() {
                return false;
            }
            bytes += len;
            last = Some(Cursor {
                started_at: v.started_at,
                id: v.id.clone(),
            });
            experiments.push(e);
            true
        },
    );
    Ok(pb::ListExperimentsResponse {
        experiments,
        next_page_token: match (more, last) {
            (true, Some(c)) => c.encode(),
            _ => String::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_junk_is_refused() {
        let c = Cursor {
            started_at: UNIX_EPOCH + Duration::from_nanos(1_764_614_233_123_456_789),
            id: "exp-00ab12cd34ef".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        for bad in [
            "",
            "p1",
            "p1zz",
            "p1abc",
            "x1",
            &c.encode()[2..],
            &format!("p1{}", hex(b"12/")),
            &format!("p1{}", hex(b"12/exp 1")),
            &format!("p1{}", hex(b"-1/exp-1")),
            &format!("p1{}", hex(b"99999999999999999999999/exp-1")),
            "p1é",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }
}
