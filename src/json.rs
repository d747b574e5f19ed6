//! JSON from clients (HTTP bodies, MQTT payloads): parsed, and refused if it holds a number
//! that would not be stored as its value was written.
//!
//! Numbers are kept as 64-bit integers when they are integers that fit, otherwise as IEEE-754
//! doubles, which hold about 15 to 17 significant digits: `123456789012345678901234567890`
//! would silently become `1.2345678901234568e29`. A client's data is never changed without
//! saying so, so such a number is a 422 naming it; a client that needs every digit sends it as a
//! string.

use serde_json::Value;

use crate::error::Error;

/// Parses `raw`; fails on malformed JSON, or on a number a double cannot hold exactly.
pub fn parse(raw: &[u8]) -> Result<Value, Error> {
    let value = serde_json::from_slice(raw).map_err(|e| Error::malformed_json(&e))?;
    if let Some((offset, number)) = numbers(raw).find(|(_, number)| !exact(number)) {
        return Err(Error::InexactNumber {
            number: number.to_owned(),
            offset,
        });
    }
    Ok(value)
}

/// The number tokens of valid JSON `raw`, with their byte offsets.
fn numbers(raw: &[u8]) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    let mut in_string = false;
    std::iter::from_fn(move || {
        while at < raw.len() {
            let byte = raw[at];
            if in_string {
                match byte {
                    b'\\' => at += 2,
                    b'"' => {
                        in_string = false;
                        at += 1;
                    }
                    _ => at += 1,
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'-' | b'0'..=b'9' => {
                    let start = at;
                    while at < raw.len()
                        && matches!(raw[at], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                    {
                        at += 1;
                    }
                    // Valid JSON: the token is ASCII.
                    let token = std::str::from_utf8(&raw[start..at]).unwrap_or_default();
                    return Some((start, token));
                }
                _ => {}
            }
            at += 1;
        }
        None
    })
}

/// Whether the number written as `token` is stored with exactly that value.
fn exact(token: &str) -> bool {
    let integer = !token.contains(['.', 'e', 'E']);
    if integer && (token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok()) {
        return true;
    }
    let Ok(double) = token.parse::<f64>() else {
        return false;
    };
    // Rust writes the shortest digits that read back as the same double.
    double.is_finite() && decimal(token) == decimal(&format!("{double:e}"))
}

/// A decimal number as its sign, its significant digits, and the power of ten of its first
/// significant digit; zero (of either sign) is `(false, "", 0)`.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{whole}{fraction}");
    let significant = all.trim_start_matches('0');
    let leading_zeros = i64::try_from(all.len() - significant.len()).ok()?;
    let digits = significant.trim_end_matches('0');
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    let first = i64::try_from(whole.len()).ok()? + exponent - leading_zeros;
    Some((negative, digits.to_owned(), first))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn numbers_a_double_holds_are_kept_and_others_refused() {
        for kept in [
            "0",
            "-0",
            "-0.0",
            "1",
            "1.5",
            "1.50",
            "0.1",
            "-12.25e-3",
            "1E3",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "1e300",
            "2.5e-308",
            "123.456",
        ] {
            assert!(exact(kept), "{kept}");
        }
        for refused in [
            "123456789012345678901234567890",
            "0.1000000000000000000001",
            "3.14159265358979323846264338327950288",
            "18446744073709551617",
            "1e400",
        ] {
            assert!(!exact(refused), "{refused}");
        }
    }

    #[test]
    fn numbers_inside_strings_are_text() {
        let raw = br#"{"a":"123456789012345678901234567890 \" 1e999","b":[1,-2.5e3]}"#;
        let found: Vec<&str> = numbers(raw).map(|(_, n)| n).collect();
        assert_eq!(found, ["1", "-2.5e3"]);
        assert!(parse(raw).is_ok());
        let refused = parse(br#"{"big": 123456789012345678901234567890}"#);
        match refused {
            Err(Error::InexactNumber { number, offset }) => {
                assert_eq!(
                    (number.as_str(), offset),
                    ("123456789012345678901234567890", 8)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        /// Whatever a double prints as is kept.
        #[test]
        fn every_double_as_rust_writes_it_is_exact(double in any::<f64>().prop_filter("finite", |d| d.is_finite())) {
            let (plain, scientific) = (double.to_string(), format!("{double:e}"));
            prop_assert!(exact(&plain), "{}", plain);
            prop_assert!(exact(&scientific), "{}", scientific);
        }
    }
}
