//! Secondary indexes: an order-preserving encoding of JSON scalars, and the entries a record puts
//! in an index.
//!
//! An index is a sled tree of `encode(value) ++ encoded primary key` -> empty. The value encoding
//! is self-delimiting, so the primary key is whatever follows it, and it orders
//! `null < false < true < numbers < strings` with numbers numerically and strings by code point.
//! Missing and `null` are both stored as null; array elements are indexed one by one (null
//! elements and nested objects or arrays are not indexed, as no condition can match them).
//!
//! A string is indexed by its first [`MAX_STRING_BYTES`] bytes, so that no entry is too large
//! for a sled page (see `storage/pieces.rs`): strings that share those bytes share an entry
//! value, and a query reads them all and keeps those that match, so the index only ever finds
//! more candidates, never fewer. Byte order is code point order, so truncation keeps the order.

use std::collections::BTreeSet;

use serde_json::Value;

const NULL: u8 = 0x10;
const FALSE: u8 = 0x20;
const TRUE: u8 = 0x21;
const NUMBER: u8 = 0x30;
const STRING: u8 = 0x40;

/// How much of a string its index entries hold.
pub const MAX_STRING_BYTES: usize = 256;

/// The encoding of a scalar JSON value; `None` for objects and arrays.
pub fn encode(value: &Value) -> Option<Vec<u8>> {
    Some(match value {
        Value::Null => vec![NULL],
        Value::Bool(false) => vec![FALSE],
        Value::Bool(true) => vec![TRUE],
        Value::Number(n) => {
            let mut out = vec![NUMBER];
            out.extend_from_slice(&order_f64(n.as_f64()?));
            out
        }
        Value::String(s) => {
            let mut out = string_prefix(s);
            out.extend_from_slice(&[0x00, 0x00]);
            out
        }
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// The encoding every string starting with `prefix` begins with (as far as an index entry holds
/// it).
pub fn string_prefix(prefix: &str) -> Vec<u8> {
    let held = &prefix.as_bytes()[..prefix.len().min(MAX_STRING_BYTES)];
    let mut out = Vec::with_capacity(held.len() + 3);
    out.push(STRING);
    for &byte in held {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out
}

/// The bounds of every string: from the empty string up to anything of a higher tag.
pub fn all_strings() -> (Vec<u8>, Vec<u8>) {
    (vec![STRING], vec![STRING + 1])
}

/// The bounds of every number.
pub fn all_numbers() -> (Vec<u8>, Vec<u8>) {
    (vec![NUMBER], vec![NUMBER + 1])
}

/// The bounds of both booleans.
pub fn all_booleans() -> (Vec<u8>, Vec<u8>) {
    (vec![FALSE], vec![TRUE + 1])
}

/// IEEE-754 bits reordered so that byte order is numeric order (`-0.0` is `0.0`).
fn order_f64(n: f64) -> [u8; 8] {
    let n = if n == 0.0 { 0.0 } else { n };
    let bits = n.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

/// The encoded values `record` puts in the index on `path`.
pub fn values(record: &Value, path: &[String]) -> BTreeSet<Vec<u8>> {
    let found = path
        .iter()
        .try_fold(record, |value, segment| value.get(segment));
    match found {
        None | Some(Value::Null) => BTreeSet::from([vec![NULL]]),
        Some(Value::Array(elements)) => elements
            .iter()
            .filter(|e| !e.is_null())
            .filter_map(encode)
            .collect(),
        Some(value) => encode(value).into_iter().collect(),
    }
}

/// The index entry for `value` (encoded) in the record with key `key` (encoded).
pub fn entry(value: &[u8], key: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(value.len() + key.len());
    entry.extend_from_slice(value);
    entry.extend_from_slice(key);
    entry
}

/// The length of the value encoding at the start of an index entry (so the rest is the key).
pub fn value_len(entry: &[u8]) -> Option<usize> {
    match *entry.first()? {
        NULL | FALSE | TRUE => Some(1),
        NUMBER => (entry.len() >= 9).then_some(9),
        STRING => {
            let mut i = 1;
            loop {
                match (entry.get(i)?, entry.get(i + 1)) {
                    (0x00, Some(0x00)) => return Some(i + 2),
                    (0x00, Some(0xFF)) => i += 2,
                    _ => i += 1,
                }
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
            "[a\\x00b]{0,4}".prop_map(Value::from),
        ]
    }

    fn rank(value: &Value) -> u8 {
        match value {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            _ => 3,
        }
    }

    fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
        rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .unwrap()
                .partial_cmp(&y.as_f64().unwrap())
                .unwrap(),
            (Value::String(x), Value::String(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        })
    }

    proptest! {
        #[test]
        fn encoding_preserves_order_and_delimits_itself(a in scalar(), b in scalar(), key in proptest::collection::vec(any::<u8>(), 0..10)) {
            let (ea, eb) = (encode(&a).unwrap(), encode(&b).unwrap());
            prop_assert_eq!(order(&a, &b), ea.cmp(&eb), "{} vs {}", a, b);
            // With any primary key appended, the value part is recovered and the order holds.
            let mut entry = ea.clone();
            entry.extend_from_slice(&key);
            prop_assert_eq!(value_len(&entry), Some(ea.len()));
        }
    }

    #[test]
    fn prefixes_and_values() {
        assert!(
            encode(&json!("abc"))
                .unwrap()
                .starts_with(&string_prefix("ab"))
        );
        assert!(
            !encode(&json!("acb"))
                .unwrap()
                .starts_with(&string_prefix("ab"))
        );
        let record = json!({"tags": ["a", null, "b", {"x": 1}], "n": 2, "o": {"p": null}});
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(values(&record, &path("tags")).len(), 2);
        assert_eq!(
            values(&record, &path("n")),
            BTreeSet::from([encode(&json!(2)).unwrap()])
        );
        assert_eq!(
            values(&record, &path("missing")),
            BTreeSet::from([vec![NULL]])
        );
        assert_eq!(values(&record, &path("o.p")), BTreeSet::from([vec![NULL]]));
        assert_eq!(values(&record, &path("o")), BTreeSet::new());
        assert_eq!(encode(&json!(-0.0)), encode(&json!(0)));
    }

    #[test]
    fn long_strings_share_the_entry_value_of_their_first_bytes() {
        let held = "é".repeat(MAX_STRING_BYTES / 2);
        let long = format!("{held}and more");
        assert_eq!(encode(&json!(long)), encode(&json!(held)));
        assert!(encode(&json!(long)).unwrap().len() <= MAX_STRING_BYTES + 3);
        assert!(encode(&json!(format!("{held}z"))) > encode(&json!("é")));
    }
}
