//! Claims on origin requests, so that one node asks a cache's origin for a key while the others
//! wait for its fill (see [`crate::cache::Peers`]). A claim is a key of the cluster's claim
//! bucket, a JetStream key-value bucket in memory: creating a key succeeds on one node only.
//! The claimer deletes it once its fill is published, or, if it stored nothing (an origin 404
//! or failure), first overwrites it with [`UNSTORED`] so that the waiters ask for themselves at
//! once; a claim whose node died lapses after [`LIFETIME`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::{Failure, subject};
use crate::cache::{Claim, Peers};
use crate::storage::{Key, Store};

/// How long a claim lasts at most.
const LIFETIME: Duration = Duration::from_secs(30);

/// How long a node waits for the bucket to answer a claim before it asks the origin anyway.
const PATIENCE: Duration = Duration::from_secs(1);

/// How long a claimer waits for its fill to be published before it releases the claim anyway.
const PUBLICATION: Duration = Duration::from_secs(5);

/// What a claim says once its origin request stored nothing.
const UNSTORED: &[u8] = b"unstored";

/// This node's side of the claims; the bucket is there while a session is.
pub(crate) struct Claims {
    bucket: Mutex<Option<(kv::Store, async_nats::Client)>>,
    store: Arc<Store>,
    node: String,
}

impl Claims {
    pub fn new(store: Arc<Store>, node: &str) -> Claims {
        Claims {
            bucket: Mutex::new(None),
            store,
            node: node.to_owned(),
        }
    }

    /// Opens the claim bucket of `cluster` for a session; claims are made in it until
    /// [`Claims::close`]. Replication does without claims when the bucket cannot be had (an
    /// account that allows no memory streams, say): each node then asks its origins itself.
    pub async fn open(&self, jetstream: &jetstream::Context, cluster: &str) {
        match self.bucket_of(jetstream, cluster).await {
            Ok(bucket) => *self.bucket() = Some((bucket, jetstream.client())),
            Err(error) => {
                tracing::warn!(%error, "no claims on origin requests: every node asks its origins itself");
            }
        }
    }

    async fn bucket_of(
        &self,
        jetstream: &jetstream::Context,
        cluster: &str,
    ) -> Result<kv::Store, Failure> {
        let name = format!("{cluster}-claims");
        let bucket = match jetstream.get_key_value(&name).await {
            Ok(bucket) => bucket,
            Err(_) => jetstream
                .create_key_value(kv::Config {
                    bucket: name,
                    description: "tablecast: the origin requests under way".to_owned(),
                    history: 1,
                    max_age: LIFETIME,
                    storage: jetstream::stream::StorageType::Memory,
                    ..Default::default()
                })
                .await
                .map_err(Failure::of("cannot open the claim bucket"))?,
        };
        Ok(bucket)
    }

    /// The session ended: nodes ask their origins for themselves until the next one.
    pub fn close(&self) {
        *self.bucket() = None;
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Option<(kv::Store, async_nats::Client)>> {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Peers for Claims {
    fn claim(&self, table: &str, key: &Key) -> BoxFuture<'static, Claim> {
        // Without a connection, a claim would only wait for the bucket in vain.
        let bucket = match &*self.bucket() {
            Some((bucket, client))
                if client.connection_state() == async_nats::connection::State::Connected =>
            {
                bucket.clone()
            }
            _ => return Box::pin(async { Claim::Alone }),
        };
        let name = subject::claim(table, key);
        let (store, node) = (self.store.clone(), self.node.clone());
        Box::pin(async move {
            let claim = bucket.create(&name, node.clone().into());
            let created = tokio::time::timeout(PATIENCE, claim).await;
            match created {
                Ok(Ok(revision)) => Claim::Ours(Box::new(move |stored| {
                    Box::pin(release(bucket, name, revision, store, stored))
                })),
                Ok(Err(error)) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                    // This node's own claim, still waiting for its fill to be published, has
                    // nothing more to bring.
                    match bucket.get(&name).await {
                        Ok(Some(claimer)) if claimer == node.as_bytes() => Claim::Alone,
                        _ => Claim::Theirs(Box::pin(released(bucket, name))),
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "a claim could not be made; asking the origin");
                    Claim::Alone
                }
                Err(_) => Claim::Alone,
            }
        })
    }
}

/// Releases the claim `name` made at `revision`: once replication has published the fill at
/// change-log position `stored`, or at once if nothing was stored, saying so first.
async fn release(
    bucket: kv::Store,
    name: String,
    revision: u64,
    store: Arc<Store>,
    stored: Option<u64>,
) {
    let mut revision = revision;
    match stored {
        Some(seq) => {
            let _ = store.published_through(seq, PUBLICATION).await;
        }
        None => {
            if let Ok(said) = bucket.update(&name, UNSTORED.into(), revision).await {
                revision = said;
            }
        }
    }
    if let Err(error) = bucket.delete_expect_revision(&name, Some(revision)).await {
        tracing::debug!(%error, claim = name, "a claim could not be released; it lapses");
    }
}

/// Completes once the claim `name` is released or lapses, or the bucket cannot say: `false`
/// if the claimer said it stored nothing.
async fn released(bucket: kv::Store, name: String) -> bool {
    let Ok(mut watch) = bucket.watch_with_history(&name).await else {
        return true;
    };
    while let Some(Ok(entry)) = watch.next().await {
        if entry.operation != kv::Operation::Put {
            return true;
        }
        if entry.value == UNSTORED {
            return false;
        }
    }
    true
}
