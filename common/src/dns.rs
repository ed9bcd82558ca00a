//! The hash that matches DNS names by domain, shared by the agent (for the
//! configured domain) and the packet programs (for every label boundary of
//! a query's name; see `ebpf/src/net/dns.rs`).

/// Multiplier of the polynomial hash (the 64-bit FNV prime; odd, so it
/// has an inverse modulo 2^64).
pub const B: u64 = 0x0000_0100_0000_01b3;
/// B^-1 mod 2^64, by Newton's iteration.
pub const INV_B: u64 = {
    let mut x: u64 = B; // correct to 3 bits for odd B
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(B.wrapping_mul(x)));
        i += 1;
    }
    x
};
/// Longest name the programs read, in wire bytes.
pub const MAX_NAME: usize = 128;
/// Longest domain that can match, in wire bytes without the final zero:
/// the programs must find a query name's final zero within `MAX_NAME`
/// bytes, and a query is at least as long as the domain it falls under.
/// (A dotted domain of `MAX_DOMAIN_WIRE - 1` characters.)
pub const MAX_DOMAIN_WIRE: usize = MAX_NAME - 1;
/// Label boundaries the programs remember (the last ones of a name):
/// a domain of up to this many labels can be matched.
pub const MAX_LABELS: usize = 8;

/// Case folding without a branch (the verifier walks every branch of a
/// per-byte loop): bit 5 set on every byte, which lowercases ASCII
/// letters and leaves digits, '-' and '_' distinct. Length bytes fold
/// too (3 and 35 alike), on both sides, so matching is unaffected.
pub const fn fold(c: u8) -> u8 {
    c | 0x20
}

/// Hash of wire-format bytes (length-prefixed labels, no final zero),
/// folded: sum of fold(c_j) * B^(len-1-j).
pub fn suffix_hash(wire: &[u8]) -> u64 {
    let mut h: u64 = 0;
    for c in wire {
        h = h.wrapping_mul(B).wrapping_add(u64::from(fold(*c)));
    }
    h
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{format, string::String, vec::Vec};

    use super::*;

    /// A dotted name in wire format without the final zero, as the agent
    /// writes a domain (`Domain::wire`).
    fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).unwrap());
            out.extend_from_slice(label.as_bytes());
        }
        out
    }

    /// The definition, written out independently of `suffix_hash`:
    /// sum of fold(c_j) * B^(len-1-j) mod 2^64.
    fn reference_hash(bytes: &[u8]) -> u64 {
        let n = bytes.len();
        let mut sum: u64 = 0;
        for (j, &c) in bytes.iter().enumerate() {
            let mut power: u64 = 1;
            for _ in 0..(n - 1 - j) {
                power = power.wrapping_mul(B);
            }
            sum = sum.wrapping_add(u64::from(fold(c)).wrapping_mul(power));
        }
        sum
    }

    /// What the kernel program computes for a query name (wire format with
    /// the final zero): the hashes from each of the last `MAX_LABELS` label
    /// starts to the end, by the same prefix-hash arithmetic and the same
    /// ring of label starts (0, the whole name, where there are fewer).
    fn kernel_hashes(query: &[u8]) -> Option<[u64; MAX_LABELS]> {
        let mut name = [0u8; MAX_NAME];
        let len = query.len().min(MAX_NAME);
        name[..len].copy_from_slice(&query[..len]);
        let mut prefix = [0u64; MAX_NAME + 1];
        let mut pow = [0u64; MAX_NAME + 1];
        let mut inv_pow = [0u64; MAX_NAME + 1];
        let (mut h, mut pw, mut ipw) = (0u64, 1u64, 1u64);
        for k in 0..MAX_NAME {
            prefix[k] = h;
            pow[k] = pw;
            inv_pow[k] = ipw;
            h = h.wrapping_mul(B).wrapping_add(u64::from(fold(name[k])));
            pw = pw.wrapping_mul(B);
            ipw = ipw.wrapping_mul(INV_B);
        }
        let mut starts = [0usize; MAX_LABELS];
        let mut pos = 0;
        let mut end = None;
        for l in 0..64 {
            if pos >= len {
                return None;
            }
            let c = name[pos];
            if c == 0 {
                end = Some(pos);
                break;
            }
            if c > 63 {
                return None;
            }
            starts[l % MAX_LABELS] = pos;
            pos += usize::from(c) + 1;
        }
        let n = end?;
        Some(starts.map(|i| {
            prefix[n].wrapping_sub(prefix[i].wrapping_mul(pow[n]).wrapping_mul(inv_pow[i]))
        }))
    }

    /// Would a `dns_error` fault on `domain` hit a query for `query`?
    fn matches(query: &str, domain: &str) -> bool {
        let mut q = wire(query);
        q.push(0);
        let hashes = kernel_hashes(&q).expect("a well-formed query");
        hashes.contains(&suffix_hash(&wire(domain)))
    }

    #[test]
    fn inverse_of_the_multiplier() {
        assert_eq!(B.wrapping_mul(INV_B), 1);
        assert_eq!(INV_B, 0xce96_5057_aff6_957b);
    }

    #[test]
    fn hash_test_vectors() {
        // Computed by hand from the definition (Python: sum((c | 0x20) *
        // pow(B, n - 1 - j, 2**64) for j, c in enumerate(w)) % 2**64).
        assert_eq!(suffix_hash(b""), 0);
        assert_eq!(suffix_hash(b"\x01a"), 0x0000_2100_0000_3874);
        assert_eq!(suffix_hash(b"\x03com"), 0x307c_b200_acd6_6746);
        assert_eq!(suffix_hash(b"\x07example\x03com"), 0x2a56_38df_27de_3451);
        assert_eq!(suffix_hash(&wire("example.com")), 0x2a56_38df_27de_3451);
    }

    #[test]
    fn hash_agrees_with_the_definition() {
        for name in [
            "a",
            "com",
            "example.com",
            "a.b.example.com",
            "x-1_y.example.org",
            "very-long-label-with-many-characters-0123456789.example.net",
        ] {
            let w = wire(name);
            assert_eq!(suffix_hash(&w), reference_hash(&w), "{name}");
        }
    }

    #[test]
    fn a_domain_matches_itself_and_names_below_it() {
        assert!(matches("example.com", "example.com"));
        assert!(matches("a.example.com", "example.com"));
        assert!(matches("a.b.example.com", "example.com"));
        assert!(matches("a.b.example.com", "b.example.com"));
        assert!(matches("a.b.example.com", "a.b.example.com"));
        assert!(matches("a.b.example.com", "com"));
    }

    #[test]
    fn only_whole_labels_match() {
        // A byte suffix that is not a label suffix.
        assert!(!matches("a.b.example.com", "ample.com"));
        assert!(!matches("a.b.example.com", "xample.com"));
        assert!(!matches("a.b.example.com", "b.com"));
        assert!(!matches("a.b.example.com", "om"));
        // Other names, and a domain below the query.
        assert!(!matches("a.b.example.com", "example.org"));
        assert!(!matches("a.b.example.com", "example.co"));
        assert!(!matches("example.com", "a.example.com"));
        assert!(!matches("b.example.com", "a.b.example.com"));
    }

    #[test]
    fn case_is_folded_on_both_sides() {
        assert_eq!(
            suffix_hash(&wire("EXAMPLE.Com")),
            suffix_hash(&wire("example.com"))
        );
        assert!(matches("A.B.Example.COM", "example.com"));
        assert!(matches("a.b.example.com", "EXAMPLE.COM"));
    }

    #[test]
    fn fold_keeps_name_characters_distinct() {
        let chars: Vec<u8> = (b'a'..=b'z')
            .chain(b'0'..=b'9')
            .chain([b'-', b'_'])
            .collect();
        let mut folded: Vec<u8> = chars.iter().map(|&c| fold(c)).collect();
        folded.sort_unstable();
        folded.dedup();
        assert_eq!(folded.len(), chars.len());
        for c in b'A'..=b'Z' {
            assert_eq!(fold(c), fold(c.to_ascii_lowercase()));
        }
        assert_ne!(
            suffix_hash(&wire("ex-ample.com")),
            suffix_hash(&wire("ex_ample.com"))
        );
        assert_ne!(suffix_hash(&wire("a1.com")), suffix_hash(&wire("aq.com")));
    }

    #[test]
    fn domains_of_up_to_max_labels_match() {
        let labels: Vec<String> = (0..12).map(|i| format!("l{i}")).collect();
        let name = |from: usize| labels[from..].join(".");
        // The domain: the last MAX_LABELS labels of a 12-label query.
        let domain = name(12 - MAX_LABELS);
        assert!(matches(&name(0), &domain));
        assert!(matches(&domain, &domain));
        for from in (12 - MAX_LABELS)..12 {
            assert!(matches(&name(0), &name(from)), "{}", name(from));
        }
    }

    #[test]
    fn a_domain_of_more_labels_never_matches() {
        // The kernel remembers only the last MAX_LABELS label starts, so a
        // longer domain cannot match, not even the identical name (which is
        // why the agent refuses such domains).
        let labels: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}")).collect();
        let long = labels.join(".");
        assert!(!matches(&long, &long));
        let query = format!("x.{long}");
        assert!(!matches(&query, &long));
    }

    #[test]
    fn a_domain_longer_than_the_name_limit_never_matches() {
        // Dotted names of 126 and 127 characters: wire lengths 127 and 128.
        let name = |n: usize| format!("{}.{}", "x".repeat(63), "y".repeat(n - 64));
        let fits = name(MAX_DOMAIN_WIRE - 1);
        let too_long = name(MAX_DOMAIN_WIRE);
        assert_eq!(wire(&fits).len(), MAX_DOMAIN_WIRE);
        assert_eq!(wire(&too_long).len(), MAX_DOMAIN_WIRE + 1);
        // The query the longest domain can match: the identical name.
        let hashes = |q: &str| {
            let mut w = wire(q);
            w.push(0);
            kernel_hashes(&w)
        };
        assert!(hashes(&fits).is_some(), "read whole");
        assert_eq!(
            hashes(&too_long),
            None,
            "never read whole, so never matched"
        );
    }

    #[test]
    fn malformed_queries_give_no_hashes() {
        // No final zero within the name.
        assert_eq!(kernel_hashes(&wire("example.com")), None);
        // A compression pointer.
        assert_eq!(kernel_hashes(&[0xc0, 0x0c]), None);
    }
}
