//! Primary key values and their order-preserving byte encoding.
//!
//! Integers are stored big-endian with the sign bit flipped and strings as their UTF-8 bytes, so
//! sled's byte order is the key order: `-2 < -1 < 0 < 1` and `"a" < "ab" < "b"` (code point order).

use std::fmt;

use serde_json::Value;

/// The longest string key accepted, in bytes; longer ids are rejected as invalid.
pub const MAX_STRING_KEY_BYTES: usize = 512;

/// The type of a table's primary key, fixed by its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Integer,
    String,
}

/// A primary key value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Int(i64),
    Str(String),
}

impl KeyType {
    /// The JSON Schema type name of this key type.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Integer => "integer",
            KeyType::String => "string",
        }
    }

    /// Parses an id as it appears in a URL path segment (already percent-decoded).
    ///
    /// Integers must be written canonically (`42`, not `042` or `+42`) so that one record has one URL.
    pub fn parse(self, text: &str) -> Result<Key, String> {
        match self {
            KeyType::Integer => match text.parse::<i64>() {
                Ok(n) if n.to_string() == text => Ok(Key::Int(n)),
                Ok(n) => Err(format!("write the integer as `{n}`")),
                Err(_) => Err("expected an integer between -2^63 and 2^63-1".to_owned()),
            },
            KeyType::String => Key::string(text.to_owned()),
        }
    }

    /// Reads a key from a record's primary key property.
    pub fn from_json(self, value: &Value) -> Result<Key, String> {
        match (self, value) {
            (KeyType::Integer, Value::Number(n)) => n
                .as_i64()
                .map(Key::Int)
                .ok_or_else(|| format!("{n} is not a 64-bit integer")),
            (KeyType::String, Value::String(s)) => Key::string(s.clone()),
            (_, other) => Err(format!("expected {}, found {other}", self.name())),
        }
    }

    /// A one-byte tag, persisted so a table's key type cannot change under existing data.
    pub(crate) fn tag(self) -> u8 {
        match self {
            KeyType::Integer => b'i',
            KeyType::String => b's',
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<KeyType> {
        match tag {
            b'i' => Some(KeyType::Integer),
            b's' => Some(KeyType::String),
            _ => None,
        }
    }
}

impl Key {
    fn string(s: String) -> Result<Key, String> {
        if s.is_empty() {
            Err("a string key cannot be empty".to_owned())
        } else if s.len() > MAX_STRING_KEY_BYTES {
            Err(format!(
                "a string key is at most {MAX_STRING_KEY_BYTES} bytes"
            ))
        } else {
            Ok(Key::Str(s))
        }
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self {
            Key::Int(_) => KeyType::Integer,
            Key::Str(_) => KeyType::String,
        }
    }

    /// The key as it appears in a record.
    pub fn to_json(&self) -> Value {
        match self {
            Key::Int(n) => Value::from(*n),
            Key::Str(s) => Value::from(s.as_str()),
        }
    }

    /// The order-preserving byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Key::Int(n) => flip_sign(*n).to_be_bytes().to_vec(),
            Key::Str(s) => s.as_bytes().to_vec(),
        }
    }

    /// Decodes bytes produced by [`Key::encode`] for a key of type `key_type`.
    pub fn decode(key_type: KeyType, bytes: &[u8]) -> Option<Key> {
        match key_type {
            KeyType::Integer => {
                let raw = u64::from_be_bytes(bytes.try_into().ok()?);
                Some(Key::Int(unflip_sign(raw)))
            }
            KeyType::String => std::str::from_utf8(bytes)
                .ok()
                .map(|s| Key::Str(s.to_owned())),
        }
    }
}

fn flip_sign(n: i64) -> u64 {
    u64::from_ne_bytes(n.to_ne_bytes()) ^ (1 << 63)
}

fn unflip_sign(raw: u64) -> i64 {
    i64::from_ne_bytes((raw ^ (1 << 63)).to_ne_bytes())
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(n) => write!(f, "{n}"),
            Key::Str(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn integer_encoding_preserves_order(a: i64, b: i64) {
            let (ka, kb) = (Key::Int(a), Key::Int(b));
            prop_assert_eq!(a.cmp(&b), ka.encode().cmp(&kb.encode()));
            prop_assert_eq!(Key::decode(KeyType::Integer, &ka.encode()), Some(ka));
        }

        #[test]
        fn string_encoding_preserves_order(a in "\\PC{1,20}", b in "\\PC{1,20}") {
            let (ka, kb) = (Key::Str(a.clone()), Key::Str(b.clone()));
            prop_assert_eq!(a.cmp(&b), ka.encode().cmp(&kb.encode()));
            prop_assert_eq!(Key::decode(KeyType::String, &ka.encode()), Some(ka));
        }
    }

    #[test]
    fn integer_extremes_order() {
        let keys = [i64::MIN, -1, 0, 1, i64::MAX].map(|n| Key::Int(n).encode());
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn url_ids_parse_canonically() {
        assert_eq!(KeyType::Integer.parse("42"), Ok(Key::Int(42)));
        assert_eq!(KeyType::Integer.parse("-7"), Ok(Key::Int(-7)));
        assert!(KeyType::Integer.parse("042").is_err());
        assert!(KeyType::Integer.parse("+42").is_err());
        assert!(KeyType::Integer.parse("4.2").is_err());
        assert!(KeyType::Integer.parse("99999999999999999999").is_err());
        assert_eq!(KeyType::String.parse("a/b c"), Ok(Key::Str("a/b c".into())));
        assert!(KeyType::String.parse("").is_err());
        assert!(
            KeyType::String
                .parse(&"x".repeat(MAX_STRING_KEY_BYTES + 1))
                .is_err()
        );
    }

    #[test]
    fn json_keys_must_match_the_type() {
        assert_eq!(KeyType::Integer.from_json(&Value::from(3)), Ok(Key::Int(3)));
        assert!(KeyType::Integer.from_json(&Value::from("3")).is_err());
        assert!(KeyType::Integer.from_json(&Value::from(3.5)).is_err());
        assert!(KeyType::String.from_json(&Value::from(3)).is_err());
    }
}
