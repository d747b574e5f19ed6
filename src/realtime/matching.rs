//! A subscription that takes a query (`GET /Order/?status=pending` as SSE or WebSocket): only
//! the records that match, kept as a live result.
//!
//! The current matching records come first; then a change of a record that matches is
//! delivered, and one of a record that matched and no longer does (or was deleted) tells the
//! subscriber the record left the result (`leave`, or `delete` if it was deleted). To know which
//! records matched, it remembers the ids it delivered. A subscriber that resumes (SSE's
//! `Last-Event-ID`) is sent `resync` and the current matches: which of the records it held left
//! meanwhile is not known here.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::subscription::Item;
use crate::events::{ChangeEvent, ChangeKind};
use crate::query::{Filter, evaluate};
use crate::storage::Key;

/// The records of one table that match a query's conditions.
pub struct Matching {
    table: Arc<str>,
    filter: Filter,
    /// Records delivered as matching, and not since left.
    inside: HashSet<Key>,
}

impl Matching {
    pub fn new(table: Arc<str>, filter: Filter) -> Matching {
        Matching {
            table,
            filter,
            inside: HashSet::new(),
        }
    }

    /// `item` as the query's subscriber sees it; `None` if not at all.
    pub fn view(&mut self, item: Item) -> Option<Item> {
        match item {
            Item::Change(event) => self.change(&event).map(Item::Change),
            Item::Current(event) => self.matches(&event).then(|| {
                self.inside.insert(event.id.clone());
                Item::Current(event)
            }),
            Item::Resync => {
                // Every current match follows, and what left meanwhile is not among them.
                self.inside.clear();
                Some(Item::Resync)
            }
            synced @ Item::Synced { .. } => Some(synced),
        }
    }

    fn change(&mut self, event: &Arc<ChangeEvent>) -> Option<Arc<ChangeEvent>> {
        if *event.table != *self.table {
            return None;
        }
        match event.kind {
            ChangeKind::Put if self.matches(event) => {
                self.inside.insert(event.id.clone());
                Some(event.clone())
            }
            ChangeKind::Put | ChangeKind::Leave => self.inside.remove(&event.id).then(|| {
                Arc::new(ChangeEvent {
                    kind: ChangeKind::Leave,
                    value: None,
                    ..ChangeEvent::clone(event)
                })
            }),
            ChangeKind::Delete => self.inside.remove(&event.id).then(|| event.clone()),
            // A message to a record's topic is for those who see the record.
            ChangeKind::Message => self.inside.contains(&event.id).then(|| event.clone()),
        }
    }

    fn matches(&self, event: &ChangeEvent) -> bool {
        let Some(value) = &event.value else {
            return false;
        };
        match serde_json::from_slice::<Value>(value) {
            Ok(record) => evaluate::matches(&self.filter, &record),
            Err(error) => {
                tracing::error!(%error, table = %self.table, "a stored record is not JSON");
                false
            }
        }
    }
}
