//! This node's commits, from the change log to the stream.
//!
//! The store keeps every change-log entry after its published cursor, so what was committed
//! while NATS was unreachable, or before a crash between the fsync and the publication, is
//! published once the stream can be reached again. A change is published again at worst (a
//! crash between the stream's acknowledgement and the cursor's update): JetStream drops it as
//! a duplicate of its `Nats-Msg-Id`, or a receiver finds it already holds it.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::Notify;

use super::message::Outgoing;
use super::{Failure, Node, Settings};
use crate::storage::{Key, LoggedChange, Scope};
use crate::table::Table;

/// The most changes published before their acknowledgements are awaited.
const BATCH: usize = 512;

/// How often the change log is looked at when no local commit says so.
const IDLE: Duration = Duration::from_secs(1);

/// Publishes the change log's unpublished entries, then every new one as it is committed,
/// until the stream fails.
pub(super) async fn run(
    settings: &Settings,
    node: &Node,
    jetstream: &jetstream::Context,
    local_commit: &Notify,
) -> Result<(), Failure> {
    loop {
        while publish_next(settings, node, jetstream).await? {}
        tokio::select! {
            () = local_commit.notified() => {}
            () = tokio::time::sleep(IDLE) => {}
        }
    }
}

/// Publishes the next changes after the cursor and moves it past them; `false` if there were
/// none.
async fn publish_next(
    settings: &Settings,
    node: &Node,
    jetstream: &jetstream::Context,
) -> Result<bool, Failure> {
    let after = node.store.published();
    let store = node.store.clone();
    let changes = tokio::task::spawn_blocking(move || store.changes_after(after, BATCH))
        .await
        .map_err(Failure::of("the change log could not be read"))?
        .map_err(Failure::of("the change log could not be read"))?;
    let Some(changes) = changes else {
        // The log no longer holds every change after the cursor: this node has records from
        // before it replicated. Publish them all as they are now.
        snapshot(settings, node, jetstream).await?;
        return Ok(true);
    };
    let Some(last) = changes.last().map(|change| change.seq) else {
        return Ok(false);
    };
    let mut acks = Vec::with_capacity(changes.len());
    for change in changes.iter().filter(|change| published(node, change)) {
        let outgoing = Outgoing {
            table: &change.table,
            key: &change.key,
            version: change.version,
            value: change.value.as_ref(),
            meta: &change.meta,
        };
        acks.push(send(settings, jetstream, &outgoing, None).await?);
    }
    for ack in acks {
        ack.await
            .map_err(Failure::of("the stream did not store a commit"))?;
    }
    node.store
        .set_published(last)
        .map_err(Failure::of("the published cursor could not be stored"))?;
    Ok(true)
}

/// Whether a logged change is this node's own, for the cluster, of a table the node serves
/// (not of one dropped from the schemas since).
fn published(node: &Node, change: &LoggedChange) -> bool {
    change.scope == Scope::Cluster && node.catalog.resource(&change.table).is_ok()
}

/// Publishes one commit; returns the acknowledgement to await.
async fn send(
    settings: &Settings,
    jetstream: &jetstream::Context,
    outgoing: &Outgoing<'_>,
    again: Option<u64>,
) -> Result<jetstream::context::PublishAckFuture, Failure> {
    let (subject, headers, payload) = outgoing.encode(&settings.cluster, &settings.node, again);
    jetstream
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(Failure::of("a commit could not be published"))
}

/// Publishes the version of `key` of `table` this node holds, alive or deleted, once more: a
/// node sent an older one, which the stream now holds in its place. `again` (the older one's
/// stream sequence) makes this publication distinct from the first one.
pub(super) async fn again(
    settings: &Settings,
    jetstream: &jetstream::Context,
    table: &Table,
    key: &Key,
    again: u64,
) -> Result<(), Failure> {
    let unreadable = Failure::of("a record could not be read");
    let (version, value, meta) = match table.get(key).map_err(unreadable)? {
        Some(record) => (record.version, Some(record.value), record.meta),
        None => match table
            .deleted(key)
            .map_err(Failure::of("a tombstone could not be read"))?
        {
            Some(version) => (version, None, Bytes::new()),
            None => return Ok(()),
        },
    };
    let outgoing = Outgoing {
        table: table.name(),
        key,
        version,
        value: value.as_ref(),
        meta: &meta,
    };
    let ack = send(settings, jetstream, &outgoing, Some(again)).await?;
    ack.await
        .map_err(Failure::of("the stream did not store a commit"))?;
    Ok(())
}

/// Publishes every record of every replicated table as it is now, then moves the cursor to the
/// change-log entry that was last when it began (the changes after it are published next).
async fn snapshot(
    settings: &Settings,
    node: &Node,
    jetstream: &jetstream::Context,
) -> Result<(), Failure> {
    let upto = node.store.last_seq();
    tracing::info!(node = %settings.node, "publishing every record: this node has records from before it replicated");
    let tables = node
        .catalog
        .resources()
        .map(|resource| resource.table().clone());
    let mut published = 0u64;
    for table in tables {
        let mut after: Option<Key> = None;
        loop {
            let (scanned, start) = (table.clone(), after.clone());
            let chunk = tokio::task::spawn_blocking(move || {
                scanned
                    .scan(false, start.as_ref())
                    .take(BATCH)
                    .collect::<crate::error::Result<Vec<_>>>()
            })
            .await
            .map_err(Failure::of("a table could not be read"))?
            .map_err(Failure::of("a table could not be read"))?;
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            let mut acks = Vec::with_capacity(chunk.len());
            for (key, record) in &chunk {
                let outgoing = Outgoing {
                    table: table.name(),
                    key,
                    version: record.version,
                    value: Some(&record.value),
                    meta: &record.meta,
                };
                acks.push(send(settings, jetstream, &outgoing, None).await?);
            }
            for ack in acks {
                ack.await
                    .map_err(Failure::of("the stream did not store a commit"))?;
            }
            published += chunk.len() as u64;
        }
    }
    node.store
        .set_published(upto)
        .map_err(Failure::of("the published cursor could not be stored"))?;
    tracing::info!(node = %settings.node, records = published, "every record published");
    Ok(())
}
