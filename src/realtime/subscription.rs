//! One subscription, whatever the transport: its watches, the current values it owes, and the
//! changes that follow, under the one lag policy.
//!
//! A subscription listens to the event bus from the moment it is made. Each watch remembers the
//! change-log position `since` at which its current values were read: changes at or before it
//! are already in those values and are skipped, later ones are delivered. A subscription whose
//! reader falls more than the bus's buffer behind is told so by the bus; it then yields
//! [`Item::Resync`] and the current value of everything it watches, and carries on from there.
//! Writers never wait for a subscriber.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::TopicFilter;
use super::matching::Matching;
use super::visibility::Visibility;
use crate::bus::{self, RecvError};
use crate::catalog::Catalog;
use crate::error::{Chain, Result};
use crate::events::{ChangeEvent, ChangeKind};
use crate::storage::{Key, Store};
use crate::table::Table;

/// Records read per step of a snapshot, and changes per step of a replay.
const PAGE: usize = 256;

/// What a subscription delivers next.
#[derive(Clone, Debug)]
pub enum Item {
    /// A change that happened after the watch began (live, or replayed from the change log).
    Change(Arc<ChangeEvent>),
    /// A record's value as it was when its watch began (or was resynchronised).
    Current(ChangeEvent),
    /// Every current value of `filter` has been sent; changes after change-log position `seq`
    /// follow.
    Synced { filter: TopicFilter, seq: u64 },
    /// The subscriber fell behind and missed changes: what it knew may be stale. The current
    /// value of everything it watches follows (records deleted meanwhile do not appear).
    Resync,
}

struct Watch {
    filter: TopicFilter,
    /// Changes at or before this change-log position are already reflected.
    since: u64,
}

/// Reads still owed to the subscriber, done a page at a time.
enum Job {
    /// Current values of `filter`'s records in `table`, after key `after`.
    Snapshot {
        filter: TopicFilter,
        table: Table,
        after: Option<Key>,
    },
    /// Logged changes after `after`, up to `until`, that `filter` matches.
    Replay {
        filter: TopicFilter,
        after: u64,
        until: u64,
    },
    /// Tell the subscriber the watch is in sync.
    Synced { filter: TopicFilter, seq: u64 },
}

/// A live subscription; see the module documentation.
pub struct Subscription {
    catalog: Arc<Catalog>,
    store: Arc<Store>,
    events: bus::Receiver<ChangeEvent>,
    watches: Vec<Watch>,
    jobs: VecDeque<Job>,
    /// The step of a job being done on the blocking pool.
    running: Option<JoinHandle<Result<Step>>>,
    ready: VecDeque<Item>,
    /// What the subscriber may see; `None` if everything.
    visibility: Option<Visibility>,
    /// The query records must match to be delivered; `None` for every record watched.
    matching: Option<Matching>,
}

impl Subscription {
    pub(super) fn new(
        catalog: Arc<Catalog>,
        store: Arc<Store>,
        events: bus::Receiver<ChangeEvent>,
        visibility: Option<Visibility>,
    ) -> Subscription {
        Subscription {
            catalog,
            store,
            events,
            watches: Vec::new(),
            jobs: VecDeque::new(),
            running: None,
            ready: VecDeque::new(),
            visibility,
            matching: None,
        }
    }

    /// Delivers only the records that match `matching`'s query (see [`Matching`]).
    pub fn only_matching(&mut self, matching: Matching) {
        self.matching = Some(matching);
    }

    /// Whether the subscription watches anything or still owes something: one that does not
    /// need not be polled (its first watch starts it listening afresh).
    pub fn is_active(&self) -> bool {
        !self.watches.is_empty()
            || !self.jobs.is_empty()
            || !self.ready.is_empty()
            || self.running.is_some()
    }

    /// A subscription that watched nothing may not have been polled: it listens afresh (before
    /// the change-log position of its first watch is read, so that no later change is missed).
    fn wake(&mut self) {
        if !self.is_active() {
            self.events = self.events.resubscribe();
        }
    }

    /// Starts watching `filter`: its current values first, then its changes. A filter that
    /// names no table's records simply yields nothing from the tables.
    pub fn watch(&mut self, filter: TopicFilter) {
        self.wake();
        let since = self.store.last_seq();
        self.snapshot(&filter, since);
        self.add(filter, since);
    }

    /// Starts watching `filter`'s changes from now on, without its current values.
    pub fn watch_changes(&mut self, filter: TopicFilter) {
        self.wake();
        let since = self.store.last_seq();
        self.add(filter, since);
    }

    fn add(&mut self, filter: TopicFilter, since: u64) {
        self.watches.retain(|w| w.filter != filter);
        self.watches.push(Watch { filter, since });
    }

    /// Starts watching `filter` from change-log position `after`: the changes since then,
    /// replayed from the log, then live ones. If the log no longer holds them all, or the
    /// subscription has a query, a [`Item::Resync`] and the current values come instead.
    pub fn resume(&mut self, filter: TopicFilter, after: u64) -> Result<()> {
        self.wake();
        let until = self.store.last_seq();
        // What a query's subscriber held is not known here, so which records left its result
        // while it was away is not either: it starts again from the current matches.
        let available = self.matching.is_none() && self.store.changes_after(after, 1)?.is_some();
        if available {
            self.jobs.push_back(Job::Replay {
                filter: filter.clone(),
                after,
                until,
            });
            self.jobs.push_back(Job::Synced {
                filter: filter.clone(),
                seq: until,
            });
            self.add(filter, until);
        } else {
            self.ready.push_back(Item::Resync);
            self.watch(filter);
        }
        Ok(())
    }

    /// Stops watching `filter`, and drops the reads still owed for it.
    pub fn unwatch(&mut self, filter: &TopicFilter) {
        self.watches.retain(|w| &w.filter != filter);
        self.jobs.retain(|job| match job {
            Job::Snapshot { filter: f, .. }
            | Job::Replay { filter: f, .. }
            | Job::Synced { filter: f, .. } => f != filter,
        });
    }

    /// The next item the subscriber may see; `None` once the server is shutting down.
    ///
    /// Cancel-safe: a read of current values in progress when the caller stops waiting is kept
    /// and finished on the next call.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            let item = self.next_item().await?;
            let item = match &mut self.matching {
                Some(matching) => match matching.view(item) {
                    Some(item) => item,
                    None => continue,
                },
                None => item,
            };
            let Some(visibility) = &mut self.visibility else {
                return Some(item);
            };
            let visible = match item {
                Item::Change(event) => visibility.view(&event).map(|e| Item::Change(Arc::new(e))),
                Item::Current(event) => visibility.view(&event).map(Item::Current),
                Item::Resync => {
                    visibility.reset();
                    Some(Item::Resync)
                }
                synced @ Item::Synced { .. } => Some(synced),
            };
            if visible.is_some() {
                return visible;
            }
        }
    }

    /// The next item, whoever the subscriber is.
    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if let Some(running) = &mut self.running {
                let step = running.await;
                self.running = None;
                match step {
                    Ok(Ok(Step::Page { items, rest })) => {
                        self.ready.extend(items);
                        if let Some(rest) = rest {
                            self.jobs.push_front(rest);
                        }
                    }
                    Ok(Ok(Step::Trimmed)) => self.resync(),
                    Ok(Err(error)) => {
                        tracing::error!(error = %Chain(&error), "a subscription could not read current values");
                        return None;
                    }
                    Err(error) => {
                        tracing::error!(%error, "a subscription read failed");
                        return None;
                    }
                }
                continue;
            }
            if let Some(job) = self.jobs.pop_front() {
                let store = self.store.clone();
                self.running = Some(tokio::task::spawn_blocking(move || job.step(&store)));
                continue;
            }
            match self.events.recv().await {
                Ok(event) => {
                    if self.wants(&event) {
                        return Some(Item::Change(event));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a subscriber fell behind; resynchronising");
                    self.resync();
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn wants(&self, event: &ChangeEvent) -> bool {
        self.watches.iter().any(|watch| {
            event.seq.is_none_or(|seq| seq > watch.since)
                && watch.filter.matches_record(&event.table, &event.id)
        })
    }

    fn resync(&mut self) {
        self.events = self.events.resubscribe();
        self.jobs.clear();
        // A step under way reads what is about to be read again; its result is not wanted.
        self.running = None;
        self.ready.clear();
        self.ready.push_back(Item::Resync);
        let since = self.store.last_seq();
        let filters: Vec<TopicFilter> = self.watches.iter().map(|w| w.filter.clone()).collect();
        for filter in &filters {
            self.snapshot(filter, since);
        }
        for watch in &mut self.watches {
            watch.since = since;
        }
    }

    /// Queues the reads of `filter`'s current values as of change-log position `since`.
    fn snapshot(&mut self, filter: &TopicFilter, since: u64) {
        for resource in self.catalog.resources() {
            let table = resource.table();
            if filter.may_match_table(table.name()) {
                self.jobs.push_back(Job::Snapshot {
                    filter: filter.clone(),
                    table: table.clone(),
                    after: None,
                });
            }
        }
        self.jobs.push_back(Job::Synced {
            filter: filter.clone(),
            seq: since,
        });
    }
}

/// What one step of a job produced, and what remains of it.
enum Step {
    Page {
        items: Vec<Item>,
        rest: Option<Job>,
    },
    /// The change log no longer holds what a replay needs.
    Trimmed,
}

impl Job {
    /// Does one page of the job (on the blocking pool: it reads the store).
    fn step(self, store: &Store) -> Result<Step> {
        match self {
            Job::Synced { filter, seq } => Ok(Step::Page {
                items: vec![Item::Synced { filter, seq }],
                rest: None,
            }),
            Job::Snapshot {
                filter,
                table,
                after,
            } => {
                let (items, next) = read_current(&table, &filter, after)?;
                Ok(Step::Page {
                    items: items.into_iter().map(Item::Current).collect(),
                    rest: next.map(|after| Job::Snapshot {
                        filter,
                        table,
                        after: Some(after),
                    }),
                })
            }
            Job::Replay {
                filter,
                after,
                until,
            } => {
                let Some(changes) = store.changes_after(after, PAGE)? else {
                    return Ok(Step::Trimmed);
                };
                let last = changes.last().map_or(until, |c| c.seq);
                let items = changes
                    .into_iter()
                    .filter(|c| {
                        c.seq <= until && !c.restamp && filter.matches_record(&c.table, &c.key)
                    })
                    .map(|c| Item::Change(Arc::new(c.into())))
                    .collect();
                Ok(Step::Page {
                    items,
                    rest: (last < until).then_some(Job::Replay {
                        filter,
                        after: last,
                        until,
                    }),
                })
            }
        }
    }
}

/// One page of the current values of `filter`'s records in `table` after `after`, and the key to
/// continue after if there may be more.
fn read_current(
    table: &Table,
    filter: &TopicFilter,
    after: Option<Key>,
) -> Result<(Vec<ChangeEvent>, Option<Key>)> {
    let current = |key: Key, record: crate::storage::Envelope| ChangeEvent {
        kind: ChangeKind::Put,
        table: table.schema().name.clone(),
        id: key,
        version: record.version,
        value: Some(record.value),
        seq: None,
    };
    if let Some(id) = filter.exact_id() {
        // One record: a direct read (an id that is not valid for the table names nothing).
        let Ok(key) = table.parse_id(&id) else {
            return Ok((Vec::new(), None));
        };
        let record = table.get(&key)?;
        return Ok((record.map(|r| current(key, r)).into_iter().collect(), None));
    }
    let mut items = Vec::new();
    let mut scanned = 0;
    let mut last = None;
    for entry in table.scan(false, after.as_ref()).take(PAGE) {
        let (key, record) = entry?;
        scanned += 1;
        last = Some(key.clone());
        if filter.matches_record(table.name(), &key) {
            items.push(current(key, record));
        }
    }
    Ok((items, last.filter(|_| scanned == PAGE)))
}
