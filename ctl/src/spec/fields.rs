//! serde glue for the fields of the experiment file whose text has a unit
//! or a range: each one goes through the parser that the flags use too.

use std::{fmt, time::Duration};

use serde::{Deserializer, Serializer, de};

use super::units::{
    check_burst_length, check_probability, format_duration, parse_byte_rate, parse_duration,
    parse_ports, parse_rate, parse_size,
};

/// `rate: 10mbit` in a file; a plain number is bits per second.
pub fn deserialize_rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct Rate;
    impl de::Visitor<'_> for Rate {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a rate such as \"10mbit\" or a number of bits per second")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse_rate(text).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<u64, E> {
            parse_rate(&number.to_string()).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Rate)
}

pub fn deserialize_ports<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Ports;
    impl de::Visitor<'_> for Ports {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port such as 80 or a range such as \"8000-8100\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            parse_ports(text).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<String, E> {
            parse_ports(&number.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, number: i64) -> Result<String, E> {
            parse_ports(&number.to_string()).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(Ports)
}

pub fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl de::Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit, such as \"30s\", \"2m\" or \"1500ms\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(DurationVisitor)
}

pub fn deserialize_name_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    struct NameOrNumber;
    impl de::Visitor<'_> for NameOrNumber {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a signal name or number, such as \"KILL\", \"SIGSEGV\" or 9")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_owned())
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<String, E> {
            Ok(number.to_string())
        }
        fn visit_i64<E: de::Error>(self, number: i64) -> Result<String, E> {
            Ok(number.to_string())
        }
    }
    deserializer.deserialize_any(NameOrNumber)
}

/// `duration: 30s`, written back in the same form.
pub fn serialize_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*duration))
}

pub fn deserialize_probability<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<f64, D::Error> {
    deserializer.deserialize_f64(Number {
        expecting: "a probability between 0 and 1",
        check: check_probability,
    })
}

pub fn deserialize_burst_length<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<f64, D::Error> {
    deserializer.deserialize_f64(Number {
        expecting: "a mean burst length in packets",
        check: check_burst_length,
    })
}

/// A number, integer or not, that `check` accepts.
struct Number {
    expecting: &'static str,
    check: fn(f64) -> Result<f64, String>,
}

impl de::Visitor<'_> for Number {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_f64<E: de::Error>(self, number: f64) -> Result<f64, E> {
        (self.check)(number).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, number: u64) -> Result<f64, E> {
        self.visit_f64(number as f64)
    }
    fn visit_i64<E: de::Error>(self, number: i64) -> Result<f64, E> {
        self.visit_f64(number as f64)
    }
}

/// The default of the probabilities that may be left out: always.
pub fn always() -> f64 {
    1.0
}

/// A size in bytes (`size: 1GiB`) or a byte rate (`rate: 50MiB/s`) in a
/// file; a plain number is bytes (per second). Written back as a number.
fn deserialize_bytes_with<'de, D: Deserializer<'de>>(
    deserializer: D,
    parse: fn(&str) -> Result<u64, String>,
) -> Result<u64, D::Error> {
    struct Bytes(fn(&str) -> Result<u64, String>);
    impl de::Visitor<'_> for Bytes {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of bytes or a size such as \"256MiB\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            (self.0)(text).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<u64, E> {
            Ok(number)
        }
    }
    deserializer.deserialize_any(Bytes(parse))
}

pub fn deserialize_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserialize_bytes_with(deserializer, parse_size)
}

pub fn deserialize_byte_rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserialize_bytes_with(deserializer, parse_byte_rate)
}

/// An optional duration field (`interval: 30s`), absent = not set.
pub fn deserialize_opt_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize_duration(deserializer).map(Some)
}

/// An optional duration, written back as `30s` when set.
pub fn serialize_opt_duration<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => serialize_duration(d, serializer),
        None => serializer.serialize_none(),
    }
}
