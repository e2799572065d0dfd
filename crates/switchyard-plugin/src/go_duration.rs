//! Durations as Go writes and reads them: the text of Go's `time.Duration.String()` (`"1m30s"`,
//! `"1.5s"`, `"250ms"`) on the HTTP envelope, and the integer nanoseconds Go's `encoding/json`
//! writes for a `time.Duration` field. A serde module ([`serde`]) reads both, and humane text
//! (`"30 seconds"`) too; it writes Go's text.

use std::time::Duration;

/// Go's text for `duration`: `"0s"`, `"750ns"`, `"1.5µs"`, `"250ms"`, `"1.5s"`, `"1m30s"`,
/// `"2h0m0s"`, as `time.Duration.String()` writes it.
pub fn format(duration: Duration) -> String {
    let ns = duration.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return decimal(ns, 1_000, "µs");
    }
    if ns < 1_000_000_000 {
        return decimal(ns, 1_000_000, "ms");
    }
    let (hours, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = decimal(rest, 1_000_000_000, "s");
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// `value / unit` with its fraction, trailing zeros dropped, then `suffix`.
fn decimal(value: u128, unit: u128, suffix: &str) -> String {
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return format!("{whole}{suffix}");
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}{suffix}", digits.trim_end_matches('0'))
}

/// Reads Go's duration text (`"1h30m"`, `"1.5s"`, `"300ms"`, `"2us"`), or humane text
/// (`"30 seconds"`, `"1m 30s"`).
///
/// # Errors
///
/// Negative durations, unknown units, and text that is neither.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    parse_go(text)
        .or_else(|| humantime::parse_duration(text).ok())
        .ok_or_else(|| {
            format!("{text:?} is not a duration (like \"1m30s\", \"1.5s\" or \"250ms\")")
        })
}

/// Go's grammar: one or more `<decimal><unit>`, units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
fn parse_go(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        total = total.checked_add(whole.checked_mul(scale)?)?;
        let mut place = scale;
        for digit in fraction.chars() {
            place /= 10;
            total = total.checked_add(u128::from(digit.to_digit(10)?) * place)?;
        }
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `#[serde(with = "switchyard_plugin::go_duration::serde")]`: writes Go's text, reads Go's
/// text, humane text, or Go's JSON integer nanoseconds.
pub mod serde {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    /// Writes Go's text.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*duration))
    }

    /// Reads Go's text, humane text, or integer nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(GoDuration)
    }

    struct GoDuration;

    impl Visitor<'_> for GoDuration {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration: text like \"1m30s\" or integer nanoseconds")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<Duration, E> {
            Ok(Duration::from_nanos(nanos))
        }

        fn visit_i64<E: de::Error>(self, nanos: i64) -> Result<Duration, E> {
            u64::try_from(nanos)
                .map(Duration::from_nanos)
                .map_err(|_| E::custom(format!("{nanos} nanoseconds is negative")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_go_does() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(750), "750ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(7_200), "2h0m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format(duration), text, "{duration:?}");
            assert_eq!(parse(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn parses_go_text_humane_text_and_refuses_the_rest() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30 seconds"), Ok(Duration::from_secs(30)));
        assert!(parse("-1s").unwrap_err().contains("negative"));
        for bad in ["", "5", "1x", "s", "1..5s", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_reads_nanoseconds_and_text_and_writes_text() {
        #[derive(::serde::Serialize, ::serde::Deserialize, Debug, PartialEq)]
        struct Call {
            #[serde(with = "super::serde")]
            timeout: Duration,
        }
        let from_go: Call = serde_json::from_str(r#"{"timeout": 30000000000}"#).unwrap();
        assert_eq!(from_go.timeout, Duration::from_secs(30));
        let from_text: Call = serde_json::from_str(r#"{"timeout": "1m30s"}"#).unwrap();
        assert_eq!(from_text.timeout, Duration::from_secs(90));
        assert_eq!(
            serde_json::to_string(&from_text).unwrap(),
            r#"{"timeout":"1m30s"}"#
        );
        let negative = serde_json::from_str::<Call>(r#"{"timeout": -5}"#).unwrap_err();
        assert!(negative.to_string().contains("negative"), "{negative}");
    }
}
