//! Automatic persisted queries, as Apollo clients send them: a query is first asked for by the
//! SHA-256 of its text alone (`extensions.persistedQuery.sha256Hash`), so that a GET's URL is
//! short and a CDN can cache it; an unknown hash is answered `PERSISTED_QUERY_NOT_FOUND`, and
//! the client sends the text with its hash once, which is checked and remembered.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;
use serde_json::Value;

/// Query texts remembered at most.
const CAPACITY: usize = 10_000;
/// What the remembered texts may hold in all.
const MAX_BYTES: usize = 16 << 20;

/// Why a persisted query cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The hash is not known: send the query with it.
    NotFound,
    /// The query's SHA-256 is not the hash sent with it.
    Mismatch,
    /// `persistedQuery` is not `{"version": 1, "sha256Hash": "<64 hex digits>"}`.
    Malformed(String),
}

/// The queries remembered by hash.
pub struct Persisted {
    queries: Mutex<Remembered>,
}

struct Remembered {
    texts: LruCache<String, Arc<str>>,
    bytes: usize,
}

impl Default for Persisted {
    fn default() -> Persisted {
        Persisted {
            queries: Mutex::new(Remembered {
                texts: LruCache::new(NonZeroUsize::new(CAPACITY).expect("not zero")),
                bytes: 0,
            }),
        }
    }
}

impl Persisted {
    /// The query text of a request with `extensions.persistedQuery`: the one sent (checked
    /// against the hash; [`Persisted::remember`] it once it parses), or the one remembered
    /// under the hash.
    pub fn resolve(&self, persisted: &Value, query: Option<&str>) -> Result<Arc<str>, Refusal> {
        let version = persisted.get("version").and_then(Value::as_u64);
        let hash = persisted.get("sha256Hash").and_then(Value::as_str);
        let hash = match (version, hash) {
            (Some(1), Some(hash))
                if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                hash.to_ascii_lowercase()
            }
            (Some(1), _) => {
                return Err(Refusal::Malformed(
                    "`persistedQuery.sha256Hash` must be the SHA-256 of the query, in 64 hex digits".to_owned(),
                ));
            }
            _ => {
                return Err(Refusal::Malformed(
                    "`persistedQuery.version` must be 1".to_owned(),
                ));
            }
        };
        match query {
            Some(query) if sha256_hex(query.as_bytes()) != hash => Err(Refusal::Mismatch),
            Some(query) => Ok(query.into()),
            None => self
                .lock()
                .texts
                .get(&hash)
                .cloned()
                .ok_or(Refusal::NotFound),
        }
    }

    /// Remembers `query` under its hash, forgetting the least recently used beyond the bounds.
    pub fn remember(&self, query: Arc<str>) {
        let mut remembered = self.lock();
        remembered.bytes += query.len();
        if let Some((_, old)) = remembered.texts.push(sha256_hex(query.as_bytes()), query) {
            remembered.bytes -= old.len();
        }
        while remembered.bytes > MAX_BYTES {
            match remembered.texts.pop_lru() {
                Some((_, old)) => remembered.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.queries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_query_is_found_by_its_hash_once_registered() {
        let persisted = Persisted::default();
        let query = "{ product(id: 1) { name } }";
        let hash = sha256_hex(query.as_bytes());
        let extension = json!({"version": 1, "sha256Hash": hash});
        assert_eq!(persisted.resolve(&extension, None), Err(Refusal::NotFound));
        assert_eq!(&*persisted.resolve(&extension, Some(query)).unwrap(), query);
        assert_eq!(persisted.resolve(&extension, None), Err(Refusal::NotFound));
        persisted.remember(query.into());
        assert_eq!(&*persisted.resolve(&extension, None).unwrap(), query);
        assert_eq!(
            persisted.resolve(&extension, Some("{ other }")),
            Err(Refusal::Mismatch)
        );
        assert!(matches!(
            persisted.resolve(&json!({"version": 2, "sha256Hash": hash}), None),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn hashes_are_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
