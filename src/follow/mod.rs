//! Following links between tables: a reference (`x-references`) to the record it names, a
//! relation (`x-table.relations`) to the records that reference this one.
//!
//! Links are followed a level at a time for all the records of the level together: each link
//! of a level costs one batch of reads of its table, however many records the level has (a
//! relation reads its index once per distinct parent, then the records in one pass). Every
//! record read is noted in [`Reads`], with its version and, from a cache table, its remaining
//! freshness, so an answer built from them can be validated and invalidated. What a reader may
//! not see is not there: a record it may not read is a dangling reference, and hidden
//! properties are removed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

mod listing;

pub use listing::{expand_listing, steps};

use futures_util::StreamExt;
use serde_json::Value;

use crate::access::Identity;
use crate::cache::{Found, RequestDirectives};
use crate::catalog::{Catalog, Resource};
use crate::error::{Cause, Error, QueryError, Result};
use crate::query::evaluate::{by_keys, matches};
use crate::query::{Query, SortKey};
use crate::storage::{Envelope, IndexRange, Key, index};

/// The most records a relation reads for one parent record when it filters or sorts them
/// (without, it stops at its limit).
pub const MAX_RELATED_READ: usize = 10_000;
/// The most records one relation reads for a whole level.
pub const MAX_RELATED_LEVEL: usize = 100_000;
/// Origin requests one level of references to a cache table has in flight at once.
const ORIGIN_CONCURRENCY: usize = 16;

/// A record reached by a query or a link, with what was followed from it.
#[derive(Clone, Debug)]
pub struct Node {
    /// The record's table.
    pub table: Arc<str>,
    /// Its primary key.
    pub key: Key,
    /// The version that was read (0 for an origin answer that was not stored).
    pub version: u64,
    /// The record as the reader may see it.
    pub value: Value,
    /// What each step followed from it, by the step's name.
    pub linked: HashMap<String, Linked>,
}

impl Node {
    /// The record `key` of `table` at `version`, as read.
    pub fn read(table: &Arc<str>, key: Key, version: u64, value: Value) -> Node {
        Node {
            table: table.clone(),
            key,
            version,
            value,
            linked: HashMap::new(),
        }
    }

    /// The record `key` of `table` as `reader` may see its stored bytes; `None` if it may not.
    pub fn shown(
        table: &Arc<str>,
        key: Key,
        version: u64,
        stored: &bytes::Bytes,
        reader: &crate::access::Reader,
    ) -> Result<Option<Node>> {
        let Some(shown) = reader.show(stored)? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&shown).map_err(Error::stored_not_json)?;
        Ok(Some(Node::read(table, key, version, value)))
    }
}

/// What a step reached from one record.
#[derive(Clone, Debug)]
pub enum Linked {
    /// A reference: the record, or `None` if it dangles.
    One(Option<Box<Node>>),
    /// A relation: the related records.
    Many(Vec<Node>),
}

/// One link to follow from every record of a level, and the steps to take from what it reaches.
#[derive(Clone, Debug)]
pub struct Step {
    /// The reference property or relation name.
    pub link: String,
    /// Where its result goes in [`Node::linked`] (a GraphQL alias, or the link's name).
    pub name: String,
    /// For a relation: which related records, in which order (`filter`, `sort`, `limit`).
    pub related: Query,
    /// The steps from the records reached.
    pub then: Vec<Step>,
}

/// What an answer read: the basis of its `ETag`, its freshness and its invalidation.
#[derive(Clone, Debug, Default)]
pub struct Reads {
    /// Each record read: table, key and version.
    pub records: BTreeSet<(Arc<str>, Key, u64)>,
    /// Tables whose membership the answer depends on (listings, relations, counts): any change
    /// to them may change it.
    pub tables: BTreeSet<Arc<str>>,
    /// The least remaining freshness, in ms, of the cache entries read; `None` if none was.
    pub fresh_for: Option<i64>,
    /// Whether something read came from an origin without being stored (the answer must not
    /// be kept).
    pub unstored: bool,
    /// Batches of storage reads (one per table per level).
    pub batches: usize,
}

impl Reads {
    /// Notes `node` as read.
    pub fn record(&mut self, node: &Node) {
        self.records
            .insert((node.table.clone(), node.key.clone(), node.version));
    }

    /// Notes remaining freshness `ttl` (ms) of a cache entry read.
    pub fn fresh(&mut self, ttl: i64) {
        self.fresh_for = Some(self.fresh_for.map_or(ttl, |least| least.min(ttl)));
    }

    /// Takes in what `other` read.
    pub fn merge(&mut self, other: Reads) {
        self.records.extend(other.records);
        self.tables.extend(other.tables);
        if let Some(ttl) = other.fresh_for {
            self.fresh(ttl);
        }
        self.unstored |= other.unstored;
        self.batches += other.batches;
    }
}

/// Reads records and follows links for one identity.
pub struct Follower<'a> {
    pub catalog: &'a Catalog,
    pub identity: &'a Identity,
}

impl Follower<'_> {
    /// Takes `steps` from every node of `nodes` (all of one table), then from what they
    /// reach, a level at a time.
    pub async fn follow(
        &self,
        nodes: &mut [&mut Node],
        steps: &[Step],
        reads: &mut Reads,
    ) -> Result<()> {
        let Some(first) = nodes.first() else {
            return Ok(());
        };
        let table = first.table.clone();
        let settings = &self.catalog.resource(&table)?.table().schema().settings;
        for step in steps {
            if let Some(target) = settings.references.get(&step.link) {
                self.reference(nodes, step, target, reads).await?;
            } else if let Some(relation) = settings.relations.get(&step.link) {
                self.relation(nodes, step, (&relation.table, &relation.by), reads)?;
            } else {
                return Err(Error::BadQuery(QueryError {
                    position: 0,
                    token: step.link.clone(),
                    expected: format!(
                        "an `x-references` property or a relation of table `{table}` to expand"
                    ),
                }));
            }
            if step.then.is_empty() {
                continue;
            }
            let mut reached: Vec<&mut Node> = Vec::new();
            for node in nodes.iter_mut() {
                match node.linked.get_mut(&step.name) {
                    Some(Linked::One(Some(one))) => reached.push(one),
                    Some(Linked::Many(many)) => reached.extend(many.iter_mut()),
                    _ => {}
                }
            }
            Box::pin(self.follow(&mut reached, &step.then, reads)).await?;
        }
        Ok(())
    }

    async fn reference(
        &self,
        nodes: &mut [&mut Node],
        step: &Step,
        target: &str,
        reads: &mut Reads,
    ) -> Result<()> {
        let key_type = self
            .catalog
            .resource(target)?
            .table()
            .schema()
            .settings
            .key_type;
        let keys: Vec<Option<Key>> = nodes
            .iter()
            .map(|node| node_reference(node, &step.link).and_then(|v| key_type.from_json(v).ok()))
            .collect();
        let wanted: BTreeSet<Key> = keys.iter().flatten().cloned().collect();
        let found = self
            .load(target, wanted.into_iter().collect(), reads)
            .await?;
        for (node, key) in nodes.iter_mut().zip(keys) {
            let reached = key.and_then(|key| found.get(&key).cloned()).map(Box::new);
            node.linked.insert(step.name.clone(), Linked::One(reached));
        }
        Ok(())
    }

    /// Loads the records `keys` of `table` in one batch, as the identity sees them: by key,
    /// those that exist and it may read. A cache table reads through the cache, so a missing
    /// or stale entry is fetched from the origin (once for concurrent readers).
    pub async fn load(
        &self,
        table: &str,
        keys: Vec<Key>,
        reads: &mut Reads,
    ) -> Result<HashMap<Key, Node>> {
        let resource = self.catalog.resource(table)?;
        let reader = self.identity.reader(resource.table());
        let name: Arc<str> = resource.table().schema().name.clone();
        let mut found = HashMap::new();
        // What is absent matters too: an answer that found nothing changes when it appears.
        for key in &keys {
            reads.records.insert((name.clone(), key.clone(), 0));
        }
        if keys.is_empty() || reader.nothing() {
            return Ok(found);
        }
        reads.batches += 1;
        let records: Vec<(Key, Envelope)> = match resource {
            Resource::Local(table) => {
                let mut encoded: Vec<Vec<u8>> = keys.iter().map(Key::encode).collect();
                encoded.sort_unstable();
                table
                    .records_by_keys(encoded.into_iter().map(Ok))
                    .collect::<Result<_>>()?
            }
            Resource::Cached(cache) => {
                let served: Vec<_> = futures_util::stream::iter(keys.clone())
                    .map(|key| {
                        let cache = cache.clone();
                        async move { cache.get(key, &RequestDirectives::default()).await }
                    })
                    .buffered(ORIGIN_CONCURRENCY)
                    .collect()
                    .await;
                let mut records = Vec::new();
                for (key, served) in keys.into_iter().zip(served) {
                    match served.outcome {
                        Ok(Found::Stored(record, _)) => {
                            reads.fresh(served.status.ttl.unwrap_or(0));
                            records.push((key, record));
                        }
                        Ok(Found::Unstored(body)) => {
                            reads.unstored = true;
                            let record = Envelope {
                                version: 0,
                                created: 0,
                                updated: 0,
                                expires_at: None,
                                meta: Default::default(),
                                value: body,
                            };
                            records.push((key, record));
                        }
                        Err(Error::RecordNotFound { .. }) => {
                            reads.fresh(served.status.ttl.unwrap_or(0));
                        }
                        Err(error) => return Err(error),
                    }
                }
                records
            }
        };
        for (key, record) in records {
            let Some(node) =
                Node::shown(&name, key.clone(), record.version, &record.value, &reader)?
            else {
                continue;
            };
            reads.records.remove(&(name.clone(), key.clone(), 0));
            reads.record(&node);
            found.insert(key, node);
        }
        Ok(found)
    }

    /// The records of `table` whose `by` holds each node's key (or, an array, has it).
    fn relation(
        &self,
        nodes: &mut [&mut Node],
        step: &Step,
        (table, by): (&str, &str),
        reads: &mut Reads,
    ) -> Result<()> {
        let resource = self.catalog.resource(table)?;
        let related = resource.table();
        let reader = self.identity.reader(related);
        let name: Arc<str> = related.schema().name.clone();
        reads.tables.insert(name.clone());
        if reader.hides(by) {
            // Which records are related would show what `by` holds.
            return Err(Error::Forbidden(format!(
                "the property `{table}.{by}` is not readable with your roles, so the relation `{}` through it cannot be followed",
                step.link
            )));
        }
        let mut query = step.related.clone();
        reader.check_query(&query)?;
        reader.restrict(&mut query);
        let limit = query.limit.unwrap_or(usize::MAX);
        let reads_all = query.filter.is_some() || !query.sort.is_empty();
        // Each distinct parent once; index entries of one value are in key order.
        let parents: BTreeSet<Key> = nodes.iter().map(|node| node.key.clone()).collect();
        let mut pages: HashMap<Key, Vec<Node>> = HashMap::new();
        if !reader.nothing() && !parents.is_empty() {
            reads.batches += 1;
            let path = [by.to_owned()];
            let mut wanted: Vec<Vec<u8>> = Vec::new();
            for parent in &parents {
                let Some(encoded) = index::encode(&parent.to_json()) else {
                    continue;
                };
                let entries = related
                    .index_keys(&path, &IndexRange::Value(encoded))
                    .ok_or_else(|| {
                        Error::Internal(Cause::new(format!("`{table}.{by}` is not indexed")))
                    })?;
                let cap = match reads_all {
                    true => MAX_RELATED_READ + 1,
                    false => limit.saturating_add(query.offset),
                };
                let entries: Vec<Vec<u8>> = entries.take(cap).collect::<Result<_>>()?;
                if entries.len() > MAX_RELATED_READ || wanted.len() > MAX_RELATED_LEVEL {
                    return Err(Error::BadQuery(QueryError {
                        position: 0,
                        token: step.link.clone(),
                        expected: format!(
                            "a relation that reads at most {MAX_RELATED_READ} records for one record and {MAX_RELATED_LEVEL} in all: filter the parents, or page with a limit and no sort or filter"
                        ),
                    }));
                }
                wanted.extend(entries);
            }
            wanted.sort_unstable();
            wanted.dedup();
            let key_type = self
                .catalog
                .resource(&nodes[0].table)?
                .table()
                .schema()
                .settings
                .key_type;
            let mut groups: HashMap<Key, Vec<(Value, Node)>> = HashMap::new();
            for entry in related.records_by_keys(wanted.into_iter().map(Ok)) {
                let (key, record) = entry?;
                let value: Value =
                    serde_json::from_slice(&record.value).map_err(Error::stored_not_json)?;
                if query.filter.as_ref().is_some_and(|f| !matches(f, &value)) {
                    continue;
                }
                let holders: Vec<Key> = match value.get(by) {
                    Some(Value::Array(elements)) => elements
                        .iter()
                        .filter_map(|e| key_type.from_json(e).ok())
                        .collect(),
                    Some(one) => key_type.from_json(one).ok().into_iter().collect(),
                    None => Vec::new(),
                };
                let mut shown = value.clone();
                reader.strip(&mut shown);
                let node = Node::read(&name, key, record.version, shown);
                for parent in holders.into_iter().filter(|p| parents.contains(p)) {
                    groups
                        .entry(parent)
                        .or_default()
                        .push((value.clone(), node.clone()));
                }
            }
            for (parent, mut group) in groups {
                sort(&mut group, &query.sort);
                let page: Vec<Node> = group
                    .into_iter()
                    .skip(query.offset)
                    .take(limit)
                    .map(|(_, node)| node)
                    .collect();
                for related in &page {
                    reads.record(related);
                }
                pages.insert(parent, page);
            }
        }
        // A parent that appears more than once in the level gets its page each time.
        for node in nodes.iter_mut() {
            let page = pages.get(&node.key).cloned().unwrap_or_default();
            node.linked.insert(step.name.clone(), Linked::Many(page));
        }
        Ok(())
    }
}

/// The value of `node`'s reference property `link`, unless it is null or missing.
fn node_reference<'a>(node: &'a Node, link: &str) -> Option<&'a Value> {
    node.value.get(link).filter(|v| !v.is_null())
}

/// Orders related records by `sort` (key order, as read, without one).
fn sort(group: &mut [(Value, Node)], sort: &[SortKey]) {
    if !sort.is_empty() {
        group.sort_by(|(a, _), (b, _)| by_keys(sort, a, b));
    }
}
