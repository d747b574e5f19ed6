//! The domain core: a table validates, commits and publishes.
//!
//! Every mutation is decided against the current record on the storage writer thread (so
//! preconditions, patches and generated ids are atomic) or, for large records and for patches
//! and deletes (whose stored record may be large), ahead of it and confirmed on it, so that no
//! record's validation and indexing delay other writes; it is committed durably and announced
//! as a [`ChangeEvent`] in commit order.

mod conformance;
mod guard;
mod merge_patch;
mod precondition;
mod record;
mod replica;

use std::sync::{Arc, Mutex};

use serde_json::Value;

pub use conformance::{Breach, Conformance};
pub use guard::{Check, Guard};
pub use precondition::{Precondition, Tags, Verdict};
pub use record::Rejection;
pub use replica::{Replicated, wins};

use crate::error::{Error, Result};
use crate::events::{ChangeEvent, EventBus};
use crate::schema::TableSchema;
use crate::storage::{
    Change, Commit, Decide, DecideAhead, Envelope, IndexRange, Key, KeyType, OnDurable, Records,
    Stamp, Store, Target,
};

/// A table of our own: the system of record for its records. Cloning shares the table.
#[derive(Clone)]
pub struct Table {
    schema: Arc<TableSchema>,
    records: Records,
    store: Arc<Store>,
    /// What the last check of the stored records against the schema found.
    conformance: Arc<Mutex<Option<Conformance>>>,
}

/// Publishes every durable commit that changed a record on `bus`; install it as the store's
/// `on_durable` hook.
pub fn publish_to(bus: EventBus) -> OnDurable {
    Box::new(move |commit| {
        if !commit.restamp {
            bus.publish(ChangeEvent::from(commit));
        }
    })
}

impl Table {
    /// Opens the table described by `schema` in `store`.
    pub fn open(schema: TableSchema, store: Arc<Store>) -> Result<Table> {
        let settings = &schema.settings;
        let records = store.records(&schema.name, settings.key_type, &settings.indexes)?;
        Ok(Table {
            schema: Arc::new(schema),
            records,
            store,
            conformance: Arc::default(),
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.schema.name
    }

    /// Parses a record id from a URL path segment.
    pub fn parse_id(&self, text: &str) -> Result<Key> {
        let key_type = self.schema.settings.key_type;
        key_type.parse(text).map_err(|reason| Error::InvalidId {
            id: text.to_owned(),
            key_type: key_type.name(),
            reason,
        })
    }

    /// Completes and validates `record` as a write of `key` at `now` would, without storing it.
    pub fn check(&self, key: &Key, record: Value, now: u64) -> Result<Value, Rejection> {
        record::compose(&self.schema, key, record, now, now)
    }

    /// Reads one record.
    pub fn get(&self, key: &Key) -> Result<Option<Envelope>> {
        self.records.get(key)
    }

    /// Records in key order (descending if `reverse`), after `after` if given, read lazily.
    pub fn scan(
        &self,
        reverse: bool,
        after: Option<&Key>,
    ) -> impl Iterator<Item = Result<(Key, Envelope)>> + Send + use<> {
        self.records.scan(reverse, after)
    }

    /// Encoded primary keys from the index on `path` (see [`Records::index_keys`]).
    pub fn index_keys(
        &self,
        path: &[String],
        range: &IndexRange,
    ) -> Option<impl DoubleEndedIterator<Item = Result<Vec<u8>>> + Send + use<>> {
        self.records.index_keys(path, range)
    }

    /// The records with these encoded keys, read lazily in the order given (absent ones skipped).
    pub fn records_by_keys<K>(
        &self,
        keys: K,
    ) -> impl Iterator<Item = Result<(Key, Envelope)>> + Send + use<K>
    where
        K: Iterator<Item = Result<Vec<u8>>> + Send,
    {
        let records = self.records.clone();
        keys.filter_map(move |key| key.and_then(|key| records.get_encoded(&key)).transpose())
    }

    /// The version of the delete that removed the absent record `key`, if the store keeps
    /// tombstones (it does when it replicates) and one did.
    pub fn deleted(&self, key: &Key) -> Result<Option<u64>> {
        self.records.deleted(&key.encode())
    }

    /// The version this node holds of record `key`: the record's, or that of the delete that
    /// removed it (see [`Table::deleted`]); `None` if it holds neither.
    pub fn held_version(&self, key: &Key) -> Result<Option<u64>> {
        match self.get(key)? {
            Some(record) => Ok(Some(record.version)),
            None => self.deleted(key),
        }
    }

    /// How many records the table holds.
    pub fn count(&self) -> u64 {
        self.records.count()
    }

    /// Creates or replaces the record `key` with `record`.
    pub async fn put(&self, key: Key, record: Value, precondition: Precondition) -> Result<Commit> {
        self.put_stamped(key, record, precondition, Stamp::default())
            .await
    }

    /// Creates or replaces the record `key` with `record`, stored with `stamp`.
    pub async fn put_stamped(
        &self,
        key: Key,
        record: Value,
        precondition: Precondition,
        stamp: Stamp,
    ) -> Result<Commit> {
        let schema = self.schema.clone();
        let weight = weight(&record);
        self.write(
            Target::Key(key),
            weight,
            Arc::new(move |current, context| {
                check(&precondition, current)?;
                let mut record =
                    guarded(&precondition, &schema, context.key, current, record.clone())?;
                // After the guard: a default is the server's, not a property the client set.
                if current.is_none() {
                    schema.complete(&mut record);
                }
                let created = current.map_or(context.now_ms, |c| c.created);
                compose(&schema, context.key, record, created, context.now_ms)
                    .map(|record| Change::Put(record, stamp.clone()))
            }),
        )
        .await
    }

    /// Stores `record` under `key` with `stamp` unconditionally, as a refresh from elsewhere would.
    /// When the composed record equals the stored one, only the stamp is replaced: the version
    /// stays, and no change is announced.
    pub async fn refresh(&self, key: Key, record: Value, stamp: Stamp) -> Result<Commit> {
        let schema = self.schema.clone();
        let weight = weight(&record);
        self.write(
            Target::Key(key),
            weight,
            Arc::new(move |current, context| {
                let created = current.map_or(context.now_ms, |c| c.created);
                let record = compose(
                    &schema,
                    context.key,
                    record.clone(),
                    created,
                    context.now_ms,
                )?;
                let unchanged = current.is_some_and(|current| {
                    serde_json::from_slice::<Value>(&current.value).is_ok_and(|v| v == record)
                });
                Ok(if unchanged {
                    Change::Restamp(stamp.clone())
                } else {
                    Change::Put(record, stamp.clone())
                })
            }),
        )
        .await
    }

    /// Replaces the stamp of the record `key` with what `restamp` makes of the current record.
    pub async fn restamp(
        &self,
        key: Key,
        restamp: impl FnOnce(&Envelope) -> Stamp + Send + 'static,
    ) -> Result<Commit> {
        self.change_existing(key, move |current| Ok(Change::Restamp(restamp(current))))
            .await
    }

    /// Removes the record `key` from this node only (see [`Change::Evict`]) if `due` holds for
    /// it when the write is decided; otherwise fails with [`Error::PreconditionFailed`].
    pub async fn evict_if(
        &self,
        key: Key,
        due: impl FnOnce(&Envelope) -> bool + Send + 'static,
    ) -> Result<Commit> {
        self.change_existing(key, move |current| {
            if due(current) {
                Ok(Change::Evict)
            } else {
                Err(Error::PreconditionFailed(
                    "the record changed since it was chosen for removal".to_owned(),
                ))
            }
        })
        .await
    }

    /// Commits what `decide` makes of the existing record `key`; 404 if there is none.
    async fn change_existing(
        &self,
        key: Key,
        decide: impl FnOnce(&Envelope) -> Result<Change> + Send + 'static,
    ) -> Result<Commit> {
        let schema = self.schema.clone();
        self.commit(
            Target::Key(key),
            Box::new(move |current, context| {
                decide(existing(
                    &schema,
                    &Precondition::default(),
                    current,
                    context.key,
                )?)
            }),
        )
        .await
    }

    /// Keys of records whose expiry time is at or before `now`, at most `limit`, earliest first.
    pub fn expired(&self, now: u64, limit: usize) -> Result<Vec<Key>> {
        self.records.expired(now, limit)
    }

    /// Applies a JSON merge patch (RFC 7396) to the record `key`, then validates the result.
    pub async fn patch(
        &self,
        key: Key,
        patch: Value,
        precondition: Precondition,
    ) -> Result<Commit> {
        let schema = self.schema.clone();
        self.commit_ahead(
            Target::Key(key),
            Arc::new(move |current, context| {
                let current = existing(&schema, &precondition, current, context.key)?;
                if let Some(value) = patch.get(&schema.settings.primary_key) {
                    record::check_key(&schema, context.key, value)
                        .map_err(|rejection| rejection.into_error(&schema.name))?;
                }
                let mut record: Value =
                    serde_json::from_slice(&current.value).map_err(Error::stored_not_json)?;
                merge_patch::apply(&mut record, &patch);
                let record = guarded(&precondition, &schema, context.key, Some(current), record)?;
                let stamp = Stamp {
                    expires_at: current.expires_at,
                    meta: current.meta.clone(),
                };
                compose(
                    &schema,
                    context.key,
                    record,
                    current.created,
                    context.now_ms,
                )
                .map(|record| Change::Put(record, stamp))
            }),
        )
        .await
    }

    /// Removes the record `key`.
    pub async fn delete(&self, key: Key, precondition: Precondition) -> Result<Commit> {
        let schema = self.schema.clone();
        self.commit_ahead(
            Target::Key(key),
            Arc::new(move |current, context| {
                let current = existing(&schema, &precondition, current, context.key)?;
                if let Some(guard) = &precondition.guard {
                    guard.check(context.key, Some(&parsed(current)?), None)?;
                }
                Ok(Change::Delete)
            }),
        )
        .await
    }

    /// Creates a record under a generated key: a UUIDv7 for string keys, one above the highest
    /// integer key ever used for integer keys.
    pub async fn create(&self, record: Value, guard: Option<Guard>) -> Result<Commit> {
        let settings = &self.schema.settings;
        if record.get(&settings.primary_key).is_some() {
            return Err(Error::KeyInBody {
                table: self.schema.name.to_string(),
                field: settings.primary_key.clone(),
            });
        }
        let target = match settings.key_type {
            KeyType::String => Target::Key(Key::Str(uuid::Uuid::now_v7().to_string())),
            KeyType::Integer => Target::NextInteger,
        };
        let schema = self.schema.clone();
        let weight = weight(&record);
        self.write(
            target,
            weight,
            Arc::new(move |_, context| {
                let mut record = record.clone();
                if let Some(guard) = &guard {
                    with_key(&schema, context.key, &mut record);
                    guard.check(context.key, None, Some(&mut record))?;
                }
                schema.complete(&mut record);
                compose(&schema, context.key, record, context.now_ms, context.now_ms)
                    .map(|record| Change::Put(record, Stamp::default()))
            }),
        )
        .await
    }

    async fn commit(&self, target: Target, decide: Decide) -> Result<Commit> {
        let commit = self.store.commit(&self.records, target, decide).await?;
        self.acknowledged(commit, false).await
    }

    async fn commit_ahead(&self, target: Target, decide: DecideAhead) -> Result<Commit> {
        let commit = self
            .store
            .commit_ahead(&self.records, target, decide)
            .await?;
        self.acknowledged(commit, false).await
    }

    /// `commit` of this table once the cluster's stream stores it, whatever the store's
    /// setting (`Prefer: durability=cluster`); `false` beside it if the store does not
    /// replicate, and there is no cluster to wait for.
    pub async fn durable_in_cluster(&self, commit: Commit) -> Result<(Commit, bool)> {
        let replicated = self.store.replicated();
        Ok((self.acknowledged(commit, true).await?, replicated))
    }

    /// `commit` once its writer may be told of it (see [`Store::acknowledged`]). A cache
    /// table's writes are copies of its origin: told at once, whatever replication does.
    async fn acknowledged(&self, commit: Commit, cluster: bool) -> Result<Commit> {
        match self.schema.settings.cache {
            Some(_) => Ok(commit),
            None => self.store.acknowledged(commit, cluster).await,
        }
    }

    /// Commits a write carrying a record of about `weight` bytes: decided ahead of the writer if
    /// the record is large enough for its validation and indexing to delay other writes, on the
    /// writer otherwise (there, a small record costs less than deciding twice and a thread hop:
    /// 12-13k durable PUTs/s against 10-11k on one core, with p99 2.7 ms against 4.4 ms).
    async fn write(&self, target: Target, weight: usize, decide: DecideAhead) -> Result<Commit> {
        if weight >= AHEAD_WEIGHT {
            return self.commit_ahead(target, decide).await;
        }
        let decide: Decide = Box::new(move |current, context| decide(current, context));
        self.commit(target, decide).await
    }
}

/// The size (about that of its JSON) from which a record is prepared ahead of the writer.
const AHEAD_WEIGHT: usize = 16 << 10;

/// About the length of `value`'s JSON, counted up to [`AHEAD_WEIGHT`] only.
fn weight(value: &Value) -> usize {
    fn add(value: &Value, total: &mut usize) {
        if *total >= AHEAD_WEIGHT {
            return;
        }
        match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => *total += 8,
            Value::String(text) => *total += text.len() + 2,
            Value::Array(items) => {
                *total += 2;
                items.iter().for_each(|item| add(item, total));
            }
            Value::Object(fields) => {
                *total += 2;
                for (name, item) in fields {
                    *total += name.len() + 4;
                    add(item, total);
                }
            }
        }
    }
    let mut total = 0;
    add(value, &mut total);
    total
}

/// [`record::compose`], rejected as the domain error of a write to the table.
fn compose(
    schema: &TableSchema,
    key: &Key,
    record: Value,
    created: u64,
    now: u64,
) -> Result<Value> {
    record::compose(schema, key, record, created, now)
        .map_err(|rejection| rejection.into_error(&schema.name))
}

/// `record` as the precondition's guard lets it be stored over `current`.
fn guarded(
    precondition: &Precondition,
    schema: &TableSchema,
    key: &Key,
    current: Option<&Envelope>,
    mut record: Value,
) -> Result<Value> {
    let Some(guard) = &precondition.guard else {
        return Ok(record);
    };
    let before = current.map(parsed).transpose()?;
    with_key(schema, key, &mut record);
    guard.check(key, before.as_ref(), Some(&mut record))?;
    Ok(record)
}

/// A rule may name the primary key, which a body may leave to the URL.
fn with_key(schema: &TableSchema, key: &Key, record: &mut Value) {
    if let Value::Object(fields) = record {
        let name = &schema.settings.primary_key;
        if !fields.contains_key(name) {
            fields.shift_insert(0, name.clone(), key.to_json());
        }
    }
}

fn parsed(record: &Envelope) -> Result<Value> {
    serde_json::from_slice(&record.value).map_err(Error::stored_not_json)
}

fn check(precondition: &Precondition, current: Option<&Envelope>) -> Result<()> {
    match precondition.evaluate(current.map(|c| c.version), false) {
        Verdict::Proceed => Ok(()),
        Verdict::NotModified | Verdict::Failed => Err(Error::PreconditionFailed(match current {
            Some(_) => {
                "the record's current ETag does not satisfy If-Match / If-None-Match".to_owned()
            }
            None => "the record does not exist, so If-Match cannot be satisfied".to_owned(),
        })),
    }
}

/// The record a PATCH or DELETE changes. A missing one is 404 whatever the preconditions: they
/// are ignored when the answer without them would not be 2xx (RFC 9110 section 13.2.1).
fn existing<'a>(
    schema: &TableSchema,
    precondition: &Precondition,
    current: Option<&'a Envelope>,
    key: &Key,
) -> Result<&'a Envelope> {
    let current = current.ok_or_else(|| Error::RecordNotFound {
        table: schema.name.to_string(),
        id: key.to_string(),
    })?;
    check(precondition, Some(current))?;
    Ok(current)
}
