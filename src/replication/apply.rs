//! The stream's messages, applied through this node's writer, so its indexes, change log, hot
//! records and subscribers see them exactly like local writes.
//!
//! Each node reads the stream with a durable consumer of its own name: after a restart it
//! resumes where it stopped, and a new node starts from the first message, which is the whole
//! dataset. Messages are applied several at once and acknowledged in order, once applied (or
//! found superseded, or refused): one acknowledgement covers every message before it (at most
//! [`ACK_EVERY`] of them, or those up to the stream's end), and what a crash interrupted is
//! delivered again.
//!
//! The stream keeps the message that arrived last for each record, which is not always the
//! newest version: a node may publish an older version after another node's newer one. The
//! nodes that hold the newer version then publish it again, so the stream ends with it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use futures_util::StreamExt;

use super::message::Incoming;
use super::publish;
use super::{Failure, Node, Settings};
use crate::catalog::Resource;
use crate::error::{Chain, Error};
use crate::storage::Stamp;
use crate::table::Replicated;

/// How many messages are applied at once: the writer commits them together.
const CONCURRENT: usize = 256;

/// How many applied messages one acknowledgement covers at most.
const ACK_EVERY: u64 = 128;

/// The consumer metadata that names the store a consumer delivers to.
const STORE: &str = "tablecast-store";

/// This node's durable consumer of the stream, delivering to the store `store_id`: created on
/// first use, and created again, from the stream's first message, when the node's store is not
/// the one it delivered to (its data directory was wiped or replaced), so that the node gets
/// every record again.
pub(super) async fn consumer(
    stream: &jetstream::stream::Stream,
    node: &str,
    store_id: &str,
) -> Result<PullConsumer, Failure> {
    let config = |deliver_policy| pull::Config {
        durable_name: Some(node.to_owned()),
        description: Some(format!("tablecast node {node}")),
        ack_policy: jetstream::consumer::AckPolicy::All,
        deliver_policy,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 20_000,
        metadata: [(STORE.to_owned(), store_id.to_owned())].into(),
        ..Default::default()
    };
    let mut deliver = jetstream::consumer::DeliverPolicy::All;
    if let Ok(mut existing) = stream.get_consumer::<pull::Config>(node).await {
        let info = existing
            .info()
            .await
            .map_err(Failure::of("cannot read this node's consumer"))?;
        // A consumer made before consumers named their store is taken for this store's.
        let named = info.config.metadata.get(STORE).map(String::as_str);
        let ours = named.is_none_or(|named| named == store_id);
        let current = info.config.ack_policy == jetstream::consumer::AckPolicy::All;
        if ours && current && named.is_some() {
            return Ok(existing);
        }
        if ours {
            // Made by an earlier version: made again, resuming where it was.
            let start_sequence = info.ack_floor.stream_sequence + 1;
            deliver = jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence };
        } else {
            tracing::info!(
                node,
                "this node's data is new to the cluster: reading the stream from its first message"
            );
        }
        stream
            .delete_consumer(node)
            .await
            .map_err(Failure::of("cannot replace this node's consumer"))?;
    }
    stream
        .create_consumer(config(deliver))
        .await
        .map_err(Failure::of("cannot open this node's consumer"))
}

/// Applies the consumer's messages until the stream fails.
pub(super) async fn run(
    settings: &Settings,
    node: &Node,
    jetstream: &jetstream::Context,
    mut consumer: PullConsumer,
) -> Result<(), Failure> {
    let backlog = consumer
        .info()
        .await
        .map_err(Failure::of("cannot read this node's consumer"))?
        .num_pending;
    let mut done = 0;
    if backlog == 0 {
        node.status.set_caught_up();
    }
    let messages = consumer
        .messages()
        .await
        .map_err(Failure::of("cannot read the stream"))?;
    let mut applied = messages
        .map(|message| async {
            let message = message.map_err(Failure::of("the stream failed"))?;
            apply(settings, node, jetstream, &message).await?;
            Ok::<_, Failure>(message)
        })
        .buffered(CONCURRENT);
    let mut unacknowledged = 0;
    while let Some(message) = applied.next().await {
        let message = message?;
        unacknowledged += 1;
        let info = message.info().ok();
        if let Some(info) = &info {
            node.status.at(info.stream_sequence, info.pending);
        }
        let at_end = info.is_some_and(|info| info.pending == 0);
        if at_end || unacknowledged >= ACK_EVERY {
            message
                .ack()
                .await
                .map_err(Failure::of("messages could not be acknowledged"))?;
            unacknowledged = 0;
        }
        done += 1;
        if done >= backlog {
            node.status.set_caught_up();
        }
    }
    Err(Failure("the stream's messages ended".to_owned()))
}

/// Applies one message, or counts it as refused; fails only if this node could not store it.
async fn apply(
    settings: &Settings,
    node: &Node,
    jetstream: &jetstream::Context,
    message: &jetstream::Message,
) -> Result<(), Failure> {
    let subject = message.subject.as_str();
    let incoming = match Incoming::decode(&settings.cluster, message) {
        Ok(incoming) => incoming,
        Err(reason) => {
            node.status.refused(subject, None, &reason);
            return Ok(());
        }
    };
    let Ok(resource) = node.catalog.resource(&incoming.table) else {
        let reason = format!("this node has no table named `{}`", incoming.table);
        node.status.refused(subject, Some(&incoming.node), &reason);
        return Ok(());
    };
    let table = resource.table();
    let (key, version) = (&incoming.key, incoming.version);
    // Most messages need no more than a look at the version held here: this node's own
    // commits coming back, and versions it has already gone past.
    let held = match table.held_version(key) {
        Ok(held) => held,
        Err(error) => {
            return Err(Failure(format!(
                "a record could not be read: {}",
                Chain(&error)
            )));
        }
    };
    let replicated = match held {
        Some(held) if held > version => Ok(Replicated::Superseded),
        Some(held) if held == version && incoming.node == settings.node => Ok(Replicated::Held),
        _ => {
            let record = match incoming.record() {
                Ok(record) => record,
                Err(reason) => {
                    node.status.refused(subject, Some(&incoming.node), &reason);
                    return Ok(());
                }
            };
            let key = key.clone();
            match resource {
                Resource::Local(table) => {
                    let record = record.map(|record| (record, Stamp::default()));
                    table.replicate(key, version, record, |_, _| false).await
                }
                Resource::Cached(cache) => {
                    cache.replicate(key, version, record, &incoming.meta).await
                }
            }
        }
    };
    match replicated {
        Ok(Replicated::Applied(_)) => {
            // From the stream storing it: a revalidation or a republication carries an old
            // version, but is news all the same.
            let stored_ms = message.info().map_or(0, |info| {
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
            });
            let lag_ms = crate::clock::Clock::system()
                .now_ms()
                .saturating_sub(stored_ms);
            node.status
                .applied(&incoming.node, incoming.version, lag_ms);
        }
        Ok(Replicated::Held) => node.status.held(),
        // This node's own older versions are followed in the stream by its newer ones, and
        // a newer version it applied from another node is published again by that node.
        Ok(Replicated::Superseded) if incoming.node == settings.node => node.status.held(),
        Ok(Replicated::Superseded) => {
            node.status.superseded();
            let sequence = message.info().map_or(0, |info| info.stream_sequence);
            publish::again(settings, jetstream, table, key, sequence).await?;
        }
        Err(error @ (Error::SchemaViolation { .. } | Error::KeyMismatch { .. })) => {
            let reason = match &error {
                Error::SchemaViolation { violations, .. } => violations
                    .iter()
                    .map(|v| format!("{}/{key}#{}: {}", table.name(), v.pointer, v.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => error.to_string(),
            };
            node.status.refused(subject, Some(&incoming.node), &reason);
        }
        Err(error) => {
            return Err(Failure(format!(
                "a replicated commit could not be stored: {}",
                Chain(&error)
            )));
        }
    }
    Ok(())
}
