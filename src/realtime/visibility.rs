//! What a subscriber may see of the changes it watches: only records its identity may read,
//! without the properties it may not read, on every transport alike.
//!
//! A record that leaves the subscriber's sight (an update its read rule no longer covers) is
//! delivered as a delete, and a delete is delivered only of a record the subscriber was shown:
//! to know which, a subscriber whose read rule is a condition remembers the ids it was shown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::access::{Identity, Reader};
use crate::catalog::Catalog;
use crate::error::{Chain, Result};
use crate::events::{ChangeEvent, ChangeKind};
use crate::storage::Key;

/// One subscriber's view.
pub struct Visibility {
    identity: Arc<Identity>,
    catalog: Arc<Catalog>,
    readers: HashMap<Arc<str>, Reader>,
    /// Records shown to the subscriber, where its read rule is a condition.
    shown: HashSet<(Arc<str>, Key)>,
}

impl Visibility {
    /// The view of `identity`; `None` if it sees everything.
    pub fn of(identity: Arc<Identity>, catalog: Arc<Catalog>) -> Option<Visibility> {
        (!identity.is_admin()).then(|| Visibility {
            identity,
            catalog,
            readers: HashMap::new(),
            shown: HashSet::new(),
        })
    }

    /// Forgets what was shown: the subscriber is about to be sent every current value again.
    pub fn reset(&mut self) {
        self.shown.clear();
    }

    /// `event` as the subscriber may see it; `None` if not at all.
    pub fn view(&mut self, event: &ChangeEvent) -> Option<ChangeEvent> {
        let reader = reader(
            &mut self.readers,
            &self.identity,
            &self.catalog,
            &event.table,
        )?;
        if reader.nothing() {
            return None;
        }
        let every_row = reader.rows_all();
        let key = (event.table.clone(), event.id.clone());
        match event.kind {
            ChangeKind::Delete | ChangeKind::Leave if every_row => Some(event.clone()),
            ChangeKind::Delete | ChangeKind::Leave => {
                self.shown.remove(&key).then(|| event.clone())
            }
            // A message is not a record a row rule can be checked on.
            ChangeKind::Message if every_row => shown(event, reader),
            ChangeKind::Message => None,
            ChangeKind::Put => match shown(event, reader) {
                Some(shown) => {
                    if !every_row {
                        self.shown.insert(key);
                    }
                    Some(shown)
                }
                None if self.shown.remove(&key) => Some(ChangeEvent {
                    kind: ChangeKind::Delete,
                    value: None,
                    ..event.clone()
                }),
                None => None,
            },
        }
    }
}

/// The reader of `table`, made when first needed.
fn reader<'a>(
    readers: &'a mut HashMap<Arc<str>, Reader>,
    identity: &Identity,
    catalog: &Catalog,
    table: &Arc<str>,
) -> Option<&'a Reader> {
    if !readers.contains_key(table) {
        let resource = catalog.resource(table).ok()?;
        readers.insert(table.clone(), identity.reader(resource.table()));
    }
    readers.get(table)
}

fn shown(event: &ChangeEvent, reader: &Reader) -> Option<ChangeEvent> {
    let value = event.value.as_ref()?;
    let shown: Result<_> = if event.kind == ChangeKind::Message {
        Ok(Some(reader.show_message(value)))
    } else {
        reader.show(value)
    };
    match shown {
        Ok(value) => value.map(|value| ChangeEvent {
            value: Some(value),
            ..event.clone()
        }),
        Err(error) => {
            tracing::error!(error = %Chain(&error), "a change could not be checked for a subscriber");
            None
        }
    }
}
