//! Commits made on other nodes, applied here: last writer wins.

use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{self, AtomicBool};

use serde_json::Value;

use super::{Table, record};
use crate::error::{Error, Result};
use crate::storage::{Change, Commit, Key, Stamp, Target};

/// What became of a commit from another node.
#[derive(Debug)]
pub enum Replicated {
    /// It was newer than what this node held, and is now stored (or the record removed).
    Applied(Commit),
    /// This node already held it.
    Held,
    /// This node holds a newer version, which the sender had not seen yet.
    Superseded,
}

/// The record this node holds as replication compares it: its version, then its JSON bytes
/// (empty for a delete).
type Held<'a> = (u64, &'a [u8]);

/// Whether the commit at version `remote` wins over `local`: the higher version wins; two
/// nodes can issue the same version in the same millisecond, and then the greater JSON wins
/// (`remote_json`, made only then), a delete being the least, so every node chooses alike
/// without knowing who wrote what it holds.
pub fn wins(remote: u64, remote_json: impl FnOnce() -> Vec<u8>, local: Held) -> Ordering {
    remote
        .cmp(&local.0)
        .then_with(|| remote_json().as_slice().cmp(local.1))
}

impl Table {
    /// Applies a commit another node made at `version`: `record` stored with `stamp`, or the
    /// record removed (`None`), if it wins over what this node holds, alive or deleted (see
    /// [`wins`]). When this node holds the same version, the other node's stamp replaces its
    /// own if `newer_stamp(theirs, ours)` (metadata of both) says so. The record is checked
    /// against this node's schema first; one that does not validate is refused with the
    /// violations and changes nothing.
    pub async fn replicate(
        &self,
        key: Key,
        version: u64,
        record: Option<(Value, Stamp)>,
        newer_stamp: fn(&[u8], &[u8]) -> bool,
    ) -> Result<Replicated> {
        if let Some((record, _)) = &record {
            self.validate_replica(&key, record)?;
        }
        let superseded = Arc::new(AtomicBool::new(false));
        let verdict = superseded.clone();
        let committed = self
            .commit(
                Target::Key(key),
                Box::new(move |current, context| {
                    let local = match (current, context.deleted) {
                        (Some(current), _) => Some((current.version, current.value.as_ref())),
                        (None, Some(deleted)) => Some((deleted, &b""[..])),
                        (None, None) => None,
                    };
                    let json = || match &record {
                        Some((record, _)) => {
                            serde_json::to_vec(record).expect("a JSON value serialises")
                        }
                        None => Vec::new(),
                    };
                    match local.map(|local| wins(version, json, local)) {
                        None | Some(Ordering::Greater) => Ok(Change::Replicate(version, record)),
                        Some(Ordering::Equal) => match (&record, current) {
                            (Some((_, stamp)), Some(current))
                                if newer_stamp(&stamp.meta, &current.meta) =>
                            {
                                Ok(Change::RestampReplica(stamp.clone()))
                            }
                            _ => Err(Error::PreconditionFailed(
                                "this node holds this version".to_owned(),
                            )),
                        },
                        Some(order) => {
                            verdict.store(order == Ordering::Less, atomic::Ordering::Relaxed);
                            Err(Error::PreconditionFailed(
                                "this node holds this version or a newer one".to_owned(),
                            ))
                        }
                    }
                }),
            )
            .await;
        match committed {
            Ok(commit) => Ok(Replicated::Applied(commit)),
            Err(Error::PreconditionFailed(_)) => {
                Ok(match superseded.load(atomic::Ordering::Relaxed) {
                    true => Replicated::Superseded,
                    false => Replicated::Held,
                })
            }
            Err(error) => Err(error),
        }
    }

    /// Checks a record another node stored under `key` as this node's schema would.
    fn validate_replica(&self, key: &Key, record: &Value) -> Result<()> {
        let schema = self.schema();
        let found = record.get(&schema.settings.primary_key);
        let checked = match found {
            Some(value) => record::check_key(schema, key, value),
            None => Err(record::Rejection::Violations(vec![
                crate::error::Violation {
                    pointer: format!("/{}", schema.settings.primary_key),
                    message: "the record has no primary key".to_owned(),
                },
            ])),
        };
        checked
            .and_then(|()| {
                schema
                    .validate(record)
                    .map_err(record::Rejection::Violations)
            })
            .map_err(|rejection| rejection.into_error(&schema.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_higher_version_wins_then_the_greater_record_and_a_delete_loses_ties() {
        let json = |text: &str| text.as_bytes().to_vec();
        assert_eq!(
            wins(2, || json("{}"), (1, br#"{"a":1}"#)),
            Ordering::Greater
        );
        assert_eq!(wins(1, || json(r#"{"a":1}"#), (2, b"")), Ordering::Less);
        assert_eq!(
            wins(5, || json(r#"{"b":1}"#), (5, br#"{"a":1}"#)),
            Ordering::Greater
        );
        assert_eq!(wins(5, || json(""), (5, b"{}")), Ordering::Less);
        assert_eq!(wins(5, || json("{}"), (5, b"{}")), Ordering::Equal);
    }
}
