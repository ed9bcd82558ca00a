//! The values that flags and experiment files share, parsed by the same
//! functions: durations, probabilities, burst lengths, ports, rates and
//! bucket depths. Each error says what was wrong and gives an example.

use std::time::Duration;

/// Whole milliseconds, saturating; the agent caps durations far below `u64::MAX`.
pub fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Parses a human duration such as `30s`, `2m`, `1h30m` or `1500ms`.
///
/// The wire format counts milliseconds, so anything shorter than 1ms is
/// rejected here instead of silently becoming 0.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|err| format!("invalid duration {text:?}: {err}"))?;
    if duration < Duration::from_millis(1) {
        return Err(format!("invalid duration {text:?}: must be at least 1ms"));
    }
    Ok(duration)
}

/// Parses a delay such as `50ms`, `1.5ms` or `2s` (sub-millisecond allowed).
pub fn parse_short_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms")
        && let Ok(v) = ms.trim().parse::<f64>()
    {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("invalid duration {text:?}"));
        }
        return Ok(Duration::from_secs_f64(v / 1e3));
    }
    humantime::parse_duration(t).map_err(|err| format!("invalid duration {text:?}: {err}"))
}

/// Parses a port or an inclusive port range, `80` or `8000-8100`, into its
/// wire form; empty means any port.
pub fn parse_ports(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let invalid = |why: &str| {
        format!(
            "invalid ports {text:?}: {why}; expected a port such as 80 or a range such as 8000-8100"
        )
    };
    let port = |part: &str| {
        part.trim()
            .parse::<u16>()
            .map_err(|_| invalid(&format!("{:?} is not a port (0-65535)", part.trim())))
    };
    match text.split_once('-') {
        None => Ok(port(text)?.to_string()),
        Some((low, high)) => {
            let (low, high) = (port(low)?, port(high)?);
            if low > high {
                return Err(invalid("the range is empty"));
            }
            Ok(format!("{low}-{high}"))
        }
    }
}

/// Parses a rate in bits per second: a plain number (`64000`), or a number
/// with a decimal unit (×1000): `500kbit`, `10mbit`, `2.5gbit`. `bit`, `bps`,
/// `kbps`, `mbps` and `gbps` count bits per second too (`10mbps` is
/// `10mbit`, not megabytes as in `tc`). Units are case-insensitive.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let invalid = |why: &str| {
        format!(
            "invalid rate {text:?}: {why}; expected bits per second such as 64000, 500kbit, \
             10mbit or 2.5gbit (also kbps, mbps, gbps)"
        )
    };
    let (number, unit) = split_unit(text);
    if number.is_empty() {
        return Err(invalid("not a number"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" | "bps" => 1,
        "kbit" | "kbps" => 1_000,
        "mbit" | "mbps" => 1_000_000,
        "gbit" | "gbps" => 1_000_000_000,
        _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
    };
    let bits = scale(number, multiplier, "bit/s").map_err(|why| invalid(&why))?;
    match u64::try_from(bits) {
        Ok(0) => Err(invalid("must be more than 0")),
        Ok(bits) => Ok(bits),
        Err(_) => Err(invalid("too large")),
    }
}

/// Parses a bucket depth in bytes: a plain number (`1514`), or one with a
/// binary unit (×1024): `64k`, `1m`, `1.5m`. 0 lets the agent pick.
pub fn parse_burst(text: &str) -> Result<u32, String> {
    let invalid = |why: &str| {
        format!("invalid burst {text:?}: {why}; expected bytes such as 1514, 64k or 1m (×1024)")
    };
    let (number, unit) = split_unit(text);
    if number.is_empty() {
        return Err(invalid("not a number"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
    };
    let bytes = scale(number, multiplier, "bytes").map_err(|why| invalid(&why))?;
    u32::try_from(bytes).map_err(|_| invalid(&format!("more than {} bytes", u32::MAX)))
}

/// Parses a size in bytes: a plain number (`4096`), or one with a binary
/// unit (×1024: `k`, `KiB`, `m`, `MiB`, `g`, `GiB`, `t`, `TiB`) or a decimal
/// one (×1000: `kB`, `MB`, `GB`, `TB`): `1GiB`, `256MiB`, `1.5g`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = |why: &str| {
        format!("invalid size {text:?}: {why}; expected bytes such as 4096, 256MiB, 1GiB or 2GB")
    };
    let (number, unit) = split_unit(text);
    if number.is_empty() {
        return Err(invalid("not a number"));
    }
    let unit = unit
        .strip_suffix('B')
        .filter(|u| !u.is_empty())
        .map_or(unit, |u| {
            // `KB`, `MB`: decimal; `KiB`: binary (the `i` stays).
            if u.ends_with('i') { u } else { unit }
        });
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "k" | "K" | "Ki" => 1 << 10,
        "m" | "M" | "Mi" => 1 << 20,
        "g" | "G" | "Gi" => 1 << 30,
        "t" | "T" | "Ti" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
    };
    let bytes = scale(number, multiplier, "bytes").map_err(|why| invalid(&why))?;
    u64::try_from(bytes).map_err(|_| invalid("too large"))
}

/// Parses a throughput in bytes per second: a size followed by `/s`
/// (`50MiB/s`, `256MiB/s`); a plain number is bytes per second.
pub fn parse_byte_rate(text: &str) -> Result<u64, String> {
    let size = text.trim().strip_suffix("/s").unwrap_or(text);
    parse_size(size).map_err(|e| format!("{e} per second (e.g. 50MiB/s)"))
}

/// `10mbit` → (`10`, `mbit`): the number is everything up to the first
/// character that cannot be part of it; both halves trimmed.
fn split_unit(text: &str) -> (&str, &str) {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    (number, unit.trim())
}

/// `number × multiplier`, exactly: `number` is decimal digits with at most
/// one `.`, and the product must be a whole number of `units`.
fn scale(number: &str, multiplier: u64, units: &str) -> Result<u128, String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let fraction = fraction.trim_end_matches('0');
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return Err("not a number".to_owned());
    }
    let too_large = || "too large".to_owned();
    let multiplier = u128::from(multiplier);
    let whole = match whole {
        "" => 0,
        _ => whole.parse::<u128>().map_err(|_| too_large())?,
    }
    .checked_mul(multiplier)
    .ok_or_else(too_large)?;
    if fraction.is_empty() {
        return Ok(whole);
    }
    // Without its trailing zeros, a fraction too long for u128 cannot come
    // out whole.
    let fraction = u32::try_from(fraction.len())
        .ok()
        .and_then(|len| 10_u128.checked_pow(len))
        .zip(fraction.parse::<u128>().ok())
        .and_then(|(denominator, fraction)| {
            let scaled = fraction.checked_mul(multiplier)?;
            (scaled % denominator == 0).then_some(scaled / denominator)
        })
        .ok_or_else(|| format!("not a whole number of {units}"))?;
    whole.checked_add(fraction).ok_or_else(too_large)
}

/// A probability in [0, 1].
pub fn check_probability(probability: f64) -> Result<f64, String> {
    if !(0.0..=1.0).contains(&probability) {
        return Err(format!(
            "expected a number between 0 and 1, found {probability}"
        ));
    }
    Ok(probability)
}

pub fn parse_probability(text: &str) -> Result<f64, String> {
    let probability: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number between 0 and 1, found {text:?}"))?;
    check_probability(probability)
}

/// A mean burst length in packets: 0 or more, where 0 and 1 both mean
/// independent losses.
pub fn check_burst_length(length: f64) -> Result<f64, String> {
    if !length.is_finite() || length < 0.0 {
        return Err(format!(
            "expected a number of packets (0 or more), found {length}"
        ));
    }
    Ok(length)
}

pub fn parse_burst_length(text: &str) -> Result<f64, String> {
    let length: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of packets, found {text:?}"))?;
    check_burst_length(length)
}

/// The form [`parse_duration`] reads back: `30s`, `2m`, `1h 30m`, `1s 500ms`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_to_bits_per_second() {
        for (text, bits) in [
            ("1", 1),
            ("64000", 64_000),
            (" 64000bit ", 64_000),
            ("8000bps", 8_000),
            ("500kbit", 500_000),
            ("500kbps", 500_000),
            ("10mbit", 10_000_000),
            ("10 mbit", 10_000_000),
            ("10Mbit", 10_000_000),
            ("10MBPS", 10_000_000),
            ("1.5mbit", 1_500_000),
            ("2.5gbit", 2_500_000_000),
            ("0.001kbit", 1),
            ("80gbps", 80_000_000_000),
            (".5kbit", 500),
            ("7.kbit", 7_000),
            (
                "1.000000000000000000000000000000000000000000gbit",
                1_000_000_000,
            ),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_rate(text), Ok(bits), "{text:?}");
        }
    }

    #[test]
    fn bad_rates_are_rejected_with_the_reason() {
        for (text, reason) in [
            ("", "not a number"),
            ("mbit", "not a number"),
            ("fast", "not a number"),
            ("-1mbit", "not a number"),
            (".mbit", "not a number"),
            ("1.2.3mbit", "not a number"),
            ("0", "must be more than 0"),
            ("0.0mbit", "must be more than 0"),
            ("10mb", "unknown unit \"mb\""),
            ("10MB/s", "unknown unit \"MB/s\""),
            ("10 mbit/s", "unknown unit \"mbit/s\""),
            ("1e6", "unknown unit \"e6\""),
            ("1.5", "not a whole number of bit/s"),
            ("0.0001kbit", "not a whole number of bit/s"),
            ("1.0000000001gbit", "not a whole number of bit/s"),
            ("18446744073709551616", "too large"),
            ("18446744073.709551616gbit", "too large"),
            ("99999999999999999999999999999999999999999gbit", "too large"),
        ] {
            match parse_rate(text) {
                Ok(bits) => panic!("expected {text:?} to be rejected, got {bits}"),
                Err(err) => assert!(
                    err.starts_with(&format!("invalid rate {text:?}: {reason}"))
                        && err.contains("10mbit"),
                    "expected {reason:?} and an example in the error for {text:?}, got: {err}"
                ),
            }
        }
    }

    #[test]
    fn bursts_parse_to_bytes() {
        for (text, bytes) in [
            ("0", 0),
            ("1514", 1_514),
            ("64k", 65_536),
            ("64K", 65_536),
            (" 64 k ", 65_536),
            ("1m", 1_048_576),
            ("1.5m", 1_572_864),
            ("0.5k", 512),
            ("4294967295", u32::MAX),
        ] {
            assert_eq!(parse_burst(text), Ok(bytes), "{text:?}");
        }
        for (text, reason) in [
            ("", "not a number"),
            ("k", "not a number"),
            ("-1", "not a number"),
            ("64kb", "unknown unit \"kb\""),
            ("64kib", "unknown unit \"kib\""),
            ("1g", "unknown unit \"g\""),
            ("0.3k", "not a whole number of bytes"),
            ("4294967296", "more than 4294967295 bytes"),
            ("4194304k", "more than 4294967295 bytes"),
        ] {
            match parse_burst(text) {
                Ok(bytes) => panic!("expected {text:?} to be rejected, got {bytes}"),
                Err(err) => assert!(
                    err.starts_with(&format!("invalid burst {text:?}: {reason}"))
                        && err.contains("64k"),
                    "expected {reason:?} and an example in the error for {text:?}, got: {err}"
                ),
            }
        }
    }

    #[test]
    fn ports_parse_to_their_wire_form() {
        for (text, expected) in [
            ("", ""),
            ("80", "80"),
            (" 8000-8100 ", "8000-8100"),
            ("8000 - 8100", "8000-8100"),
            ("0-65535", "0-65535"),
            ("22-22", "22-22"),
        ] {
            assert_eq!(parse_ports(text).as_deref(), Ok(expected), "{text:?}");
        }
        for text in ["http", "65536", "-80", "80-", "90-80", "1-2-3"] {
            if let Ok(ports) = parse_ports(text) {
                panic!("expected {text:?} to be rejected, got {ports:?}");
            }
        }
    }

    #[test]
    fn durations_parse() {
        for (text, ms) in [
            ("30s", 30_000),
            ("2m", 120_000),
            ("1500ms", 1_500),
            ("1h 30m", 5_400_000),
        ] {
            match parse_duration(text) {
                Ok(duration) => assert_eq!(duration_ms(duration), ms, "{text:?} in milliseconds"),
                Err(err) => panic!("expected {text:?} to parse, got error: {err}"),
            }
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in ["30", "soon", "", "0s", "500us", "-1s"] {
            if let Ok(duration) = parse_duration(text) {
                panic!("expected {text:?} to be rejected, got {duration:?}");
            }
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for ms in [
            1,
            999,
            1_000,
            1_500,
            30_000,
            120_000,
            5_400_000,
            86_400_000 + 1,
        ] {
            let duration = Duration::from_millis(ms);
            let text = format_duration(duration);
            assert_eq!(
                parse_duration(&text),
                Ok(duration),
                "{ms}ms printed as {text:?}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s 500ms");
    }

    #[test]
    fn probabilities_and_burst_lengths_are_checked() {
        assert_eq!(parse_probability(" 0.25 "), Ok(0.25));
        assert_eq!(parse_probability("1"), Ok(1.0));
        for text in ["1.5", "-0.1", "NaN", "half"] {
            assert!(parse_probability(text).is_err(), "{text:?}");
        }
        assert_eq!(parse_burst_length("4"), Ok(4.0));
        for text in ["-2", "inf", "many"] {
            assert!(parse_burst_length(text).is_err(), "{text:?}");
        }
    }
}
