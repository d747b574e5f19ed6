//! Replication over NATS JetStream: the only module that uses `async_nats`.
//!
//! One stream per cluster holds the latest version of every record, one subject per record
//! ([`subject`]), at most one message per subject, as NATS KV does: a node that starts empty
//! replays it and has everything. Each node publishes its own commits from the change log after
//! its fsync ([`publish`]), and applies everyone's through its own writer ([`apply`]), last
//! writer wins (see [`crate::table::wins`]). Cache tables replicate their fills with their
//! freshness, and claim each origin request so that one node makes it ([`claims`]).
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | [`Settings`], [`Replication`]: connecting, the stream, the tasks, [`Status`] |
//! | `subject.rs` | record subjects, with ids encoded as subject tokens |
//! | `message.rs` | a commit as a message: headers and payload, both ways |
//! | `publish.rs` | this node's commits, from the change log to the stream |
//! | `apply.rs` | the stream's messages, applied through this node's writer |
//! | `claims.rs` | claims on cache origin requests, so that one node asks while others wait |
//! | `status.rs` | what `GET /_cluster` and `/_health` report |

mod apply;
mod claims;
mod message;
mod publish;
mod status;
mod subject;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use status::Status;

use crate::catalog::Catalog;
use crate::storage::Store;
use claims::Claims;

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The NATS server (or one of a cluster's), `nats://host:port`.
    pub url: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// The cluster's name: the name of its stream and the first token of its subjects.
    pub cluster: String,
}

/// The cluster's stream: the latest version of every record, kept on disk.
fn stream_config(cluster: &str) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: cluster.to_owned(),
        subjects: vec![subject::all(cluster)],
        max_messages_per_subject: 1,
        storage: jetstream::stream::StorageType::File,
        description: Some("tablecast: the latest version of every record".to_owned()),
        ..Default::default()
    }
}

/// How long a failed session waits before it connects again.
const RETRY: Duration = Duration::from_millis(500);

/// How often the log tells what was applied of each peer's commits, and how late.
const LAG_LOG: Duration = Duration::from_secs(60);

/// Replication running: its tasks and what they report.
pub struct Replication {
    status: Arc<Status>,
    task: JoinHandle<()>,
}

impl Replication {
    /// Starts replicating the tables of `catalog` in `store` (opened as replicated) as
    /// `settings` say; `local_commit` is notified after every local commit. Connects in the
    /// background, again and again while NATS is unreachable: the node serves meanwhile, and its
    /// commits wait in the change log.
    pub fn start(
        settings: Settings,
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        local_commit: Arc<Notify>,
    ) -> Replication {
        let status = Arc::new(Status::new(&settings));
        let claims = Arc::new(Claims::new(store.clone(), &settings.node));
        for cache in catalog.caches() {
            cache.join(claims.clone());
        }
        let task = tokio::spawn(run(
            settings,
            Node {
                store,
                catalog,
                status: status.clone(),
                claims,
            },
            local_commit,
        ));
        Replication { status, task }
    }

    /// What replication reports.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Stops replicating; what is not yet published is published after the next start.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the publisher and the applier of one node share.
#[derive(Clone)]
pub(crate) struct Node {
    pub store: Arc<Store>,
    pub catalog: Arc<Catalog>,
    pub status: Arc<Status>,
    pub claims: Arc<Claims>,
}

/// Runs sessions until stopped, and tells the log how late peers' commits arrive.
async fn run(settings: Settings, node: Node, local_commit: Arc<Notify>) {
    let status = node.status.clone();
    tokio::select! {
        () = sessions(settings, node, local_commit) => {}
        () = async {
            let mut every = tokio::time::interval(LAG_LOG);
            every.tick().await;
            loop {
                every.tick().await;
                status.log_lag();
            }
        } => {}
    }
}

/// Connects, makes sure of the stream and this node's consumer, then publishes and applies
/// until either fails, and starts over; forever.
async fn sessions(settings: Settings, node: Node, local_commit: Arc<Notify>) {
    let client = loop {
        match async_nats::ConnectOptions::new()
            .name(format!("tablecast {}", settings.node))
            .retry_on_initial_connect()
            .connect(&settings.url)
            .await
        {
            Ok(client) => break client,
            Err(error) => {
                tracing::warn!(url = %settings.url, %error, "cannot reach NATS; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let jetstream = jetstream::new(client.clone());
    loop {
        let session = session(&settings, &node, &jetstream, &local_commit).await;
        node.status.set_connected(false);
        node.claims.close();
        if let Err(error) = session {
            tracing::warn!(url = %settings.url, error = %error, "replication interrupted; resuming");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One session: until the publisher or the applier fails.
async fn session(
    settings: &Settings,
    node: &Node,
    jetstream: &jetstream::Context,
    local_commit: &Notify,
) -> Result<(), Failure> {
    let stream = jetstream
        .get_or_create_stream(stream_config(&settings.cluster))
        .await
        .map_err(Failure::of("cannot open the cluster's stream"))?;
    let consumer = apply::consumer(&stream, &settings.node, node.store.id()).await?;
    node.claims.open(jetstream, &settings.cluster).await;
    node.status.set_connected(true);
    tracing::info!(url = %settings.url, node = %settings.node, cluster = %settings.cluster, "replicating");
    tokio::select! {
        published = publish::run(settings, node, jetstream, local_commit) => published,
        applied = apply::run(settings, node, jetstream, consumer) => applied,
    }
}

/// Why a session ended.
#[derive(Debug)]
pub(crate) struct Failure(String);

impl Failure {
    /// A mapper of any error to a failure described by `context` and the error.
    pub fn of<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Failure {
        move |error| Failure(format!("{context}: {error}"))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
