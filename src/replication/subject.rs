//! One NATS subject per record: `<cluster>.<table>.<id token>`.
//!
//! A subject token may not hold `.`, `*`, `>` or white space, and ids may hold anything, so an
//! id becomes a token that holds none of them: `i` and the decimal digits of an integer key,
//! `s` and the unpadded base64url of a string key's UTF-8 bytes. Table names (a letter, then
//! letters, digits or `_`) and cluster names are tokens as they are.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::storage::Key;

/// The subject of record `key` of `table` in `cluster`.
pub fn of(cluster: &str, table: &str, key: &Key) -> String {
    format!("{cluster}.{table}.{}", token(key))
}

/// The key of record `key` of `table` in the cluster's claim bucket.
pub fn claim(table: &str, key: &Key) -> String {
    format!("{table}.{}", token(key))
}

/// Every subject of `cluster`.
pub fn all(cluster: &str) -> String {
    format!("{cluster}.>")
}

/// The table and key a subject of `cluster` names; `None` if it is not one.
pub fn parse<'a>(cluster: &str, subject: &'a str) -> Option<(&'a str, Key)> {
    let rest = subject.strip_prefix(cluster)?.strip_prefix('.')?;
    let (table, token) = rest.split_once('.')?;
    Some((table, key(token)?))
}

fn token(key: &Key) -> String {
    match key {
        Key::Int(n) => format!("i{n}"),
        Key::Str(text) => format!("s{}", URL_SAFE_NO_PAD.encode(text)),
    }
}

fn key(token: &str) -> Option<Key> {
    match token.split_at_checked(1)? {
        ("i", digits) => digits.parse().ok().map(Key::Int),
        ("s", encoded) => {
            let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
            String::from_utf8(bytes).ok().map(Key::Str)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn examples() {
        assert_eq!(of("tc", "Product", &Key::Int(-5)), "tc.Product.i-5");
        assert_eq!(of("tc", "Tag", &Key::Str(String::new())), "tc.Tag.s");
        assert_eq!(
            of("tc", "Tag", &Key::Str("a.b *>".into())),
            "tc.Tag.sYS5iICo-"
        );
        assert_eq!(
            parse("tc", "tc.Tag.sYS5iICo-"),
            Some(("Tag", Key::Str("a.b *>".into())))
        );
        assert_eq!(parse("tc", "other.Tag.i1"), None);
        assert_eq!(parse("tc", "tc.Tag.x1"), None);
        assert_eq!(parse("tc", "tc.Tag"), None);
        assert_eq!(parse("tc", "tcx.Tag.i1"), None);
    }

    proptest! {
        #[test]
        fn any_key_is_one_valid_token_and_comes_back(text in any::<String>(), n in any::<i64>()) {
            for key in [Key::Str(text.clone()), Key::Int(n)] {
                let subject = of("tablecast", "T", &key);
                let token = subject.strip_prefix("tablecast.T.").expect("prefix");
                prop_assert!(!token.is_empty());
                prop_assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
                prop_assert_eq!(parse("tablecast", &subject), Some(("T", key)));
            }
        }

        #[test]
        fn parsing_any_subject_never_panics(subject in any::<String>()) {
            let _ = parse("tablecast", &subject);
        }
    }
}
