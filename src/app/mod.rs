//! The composition root: builds every part, serves, and shuts down in order.

mod reload;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;

use crate::access::Access;
use crate::cache::Sweeper;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::{Config, ReplicationAck, SchemaCheck};
use crate::error::{Chain, Error};
use crate::events::EventBus;
use crate::intake::Intake;
use crate::realtime::{self, Realtime};
use crate::replication::{self, Replication};
use crate::schema::{self, LoadError};
use crate::storage::{self, Store};
use crate::table::Conformance;
use crate::tls::Tls;
use crate::{catalog, graphql, http, table};

/// Events buffered for the slowest in-process subscriber before it is told it lagged.
const EVENT_BUFFER: usize = 4096;
/// The most bytes of change events buffered for the slowest subscriber.
const EVENT_BUFFER_BYTES: usize = 64 << 20;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// One or more schema files are bad.
    Schemas(Vec<LoadError>),
    /// The store, or one of its tables, could not be opened.
    Store(Error),
    /// The access file is bad.
    Access(Vec<LoadError>),
    /// No access file, on an address others can reach.
    Unguarded(String),
    /// The certificate or its key cannot be used.
    Tls(String),
    /// Stored records break their tables' changed schemas, and `--schema-check refuse`.
    Nonconforming(Vec<(String, Conformance)>),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Schemas(errors) => {
                let problems = match errors.len() {
                    1 => "a problem".to_owned(),
                    n => format!("{n} problems"),
                };
                write!(f, "the schemas cannot be used, {problems}:")?;
                errors.iter().try_for_each(|e| write!(f, "\n  {e}"))
            }
            StartError::Store(error) => write!(f, "{}", Chain(error)),
            StartError::Access(errors) => {
                write!(f, "the access file has {} problem(s):", errors.len())?;
                errors.iter().try_for_each(|e| write!(f, "\n  {e}"))
            }
            StartError::Tls(reason) => write!(f, "cannot serve TLS: {reason}"),
            StartError::Nonconforming(tables) => {
                write!(f, "stored records break their table's schema:")?;
                for (table, report) in tables {
                    write!(
                        f,
                        "\n  {table}: {} of {} records, first:",
                        report.breaking, report.records
                    )?;
                    report
                        .lines(table)
                        .try_for_each(|line| write!(f, "\n    {line}"))?;
                }
                write!(
                    f,
                    "\nchange those records or the schema, or start with --schema-check warn to serve them as they are"
                )
            }
            StartError::Unguarded(address) => write!(
                f,
                "refusing to serve {address} without an access file: anyone who can reach it could read, change and delete every record; give --access FILE (see README, Security), listen on a loopback address, or pass --open to serve it open anyway"
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// A server ready to serve: schemas loaded, store open, tables resolved.
pub struct App {
    config: Config,
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    realtime: Realtime,
    access: Access,
    tls: Option<Tls>,
    /// Told of every local commit, for replication to publish it; `None` without `--nats`.
    local_commit: Option<Arc<Notify>>,
    /// Time, for cache freshness and commit times.
    clock: Clock,
    /// Recent GraphQL answers, dropped by the commits that change what they read.
    results: Arc<graphql::Results>,
    /// SIGHUP, listened for from the moment the app is open: a hang-up that comes once the
    /// listening line is printed reloads, rather than ending the process as by default.
    hangup: Option<Signal>,
}

/// The sockets a server listens on.
pub struct Listeners {
    pub http: TcpListener,
    /// `None` when MQTT is off.
    pub mqtt: Option<TcpListener>,
    /// MQTT over TLS; `None` without a certificate, or when off.
    pub mqtts: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses `config` names.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let bind = |address, what: &'static str, hint: &'static str| async move {
            TcpListener::bind(address).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {address} for {what}: {e}; {hint}"),
                )
            })
        };
        let http = bind(config.http, "HTTP", "choose another address with --http").await?;
        let mqtt = match config.mqtt.0 {
            Some(address) => Some(
                bind(
                    address,
                    "MQTT",
                    "choose another address with --mqtt, or turn MQTT off with --mqtt off",
                )
                .await?,
            ),
            None => None,
        };
        let mqtts = match config.mqtts() {
            Some(address) => Some(
                bind(
                    address,
                    "MQTT over TLS",
                    "choose another address with --mqtts, or turn it off with --mqtts off",
                )
                .await?,
            ),
            None => None,
        };
        Ok(Listeners { http, mqtt, mqtts })
    }
}

impl App {
    /// Loads the schemas and opens the store. Nothing listens yet.
    pub fn open(config: Config) -> Result<App, StartError> {
        App::open_with_clock(config, Clock::system())
    }

    /// [`App::open`], with time read from `clock` (a manual clock in tests): cache freshness and
    /// commit times.
    pub fn open_with_clock(config: Config, clock: Clock) -> Result<App, StartError> {
        if config.access.is_none() && !config.open {
            let reachable = std::iter::once(config.http)
                .chain(config.mqtt.0)
                .chain(config.mqtts())
                .find(|address| !address.ip().is_loopback());
            if let Some(address) = reachable {
                return Err(StartError::Unguarded(address.to_string()));
            }
        }
        let schemas = schema::load_dir(&config.schemas).map_err(StartError::Schemas)?;
        let events = EventBus::new(EVENT_BUFFER, EVENT_BUFFER_BYTES);
        let options = storage::Options {
            cache_bytes: config.store_cache,
            change_log: config.change_log,
            max_index_entries: config.max_index_entries,
            clock: clock.clone(),
            replicated: config.nats.is_some(),
            await_published: config.replication_ack == ReplicationAck::Cluster,
            publish_patience: config.replication_timeout,
        };
        let local_commit = config.nats.is_some().then(|| Arc::new(Notify::new()));
        let results = Arc::new(graphql::Results::new(
            config.graphql_result_cache,
            schemas.iter().map(|schema| schema.name.clone()),
        ));
        let on_durable = {
            let (announce, local_commit) =
                (table::publish_to(events.clone()), local_commit.clone());
            let results = results.clone();
            Box::new(move |commit: &storage::Commit| {
                // Before the write is acknowledged: no answer it changes is served after.
                results.invalidate(&commit.table, &commit.key);
                announce(commit);
                if let Some(local_commit) = &local_commit {
                    local_commit.notify_one();
                }
            })
        };
        let store =
            Arc::new(Store::open(&config.data, options, on_durable).map_err(StartError::Store)?);
        let changed_keys = catalog::key_types_kept(&schemas, &store).map_err(StartError::Store)?;
        if !changed_keys.is_empty() {
            return Err(StartError::Schemas(changed_keys));
        }
        let catalog = Arc::new(
            Catalog::open(schemas, &store, &clock, config.max_body).map_err(StartError::Store)?,
        );
        check_records(&catalog, clock.now_ms(), config.schema_check)?;
        tracing::info!(
            tables = catalog.resources().count(),
            schemas = %config.schemas.display(),
            data = %config.data.display(),
            "opened"
        );
        let access = match &config.access {
            Some(path) => {
                let access = Access::load(path, catalog.clone()).map_err(StartError::Access)?;
                tracing::info!(file = %path.display(), "access rules in force");
                access
            }
            None => Access::open(),
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(cert, key).map_err(StartError::Tls)?),
            _ => None,
        };
        let realtime = Realtime::new(
            catalog.clone(),
            store.clone(),
            events,
            (config.max_subscribers, config.subscriber_silence),
        );
        // Outside a runtime (a program that opens the app before starting one) there is no
        // signal to listen for yet; `serve` listens then.
        let hangup = tokio::runtime::Handle::try_current()
            .ok()
            .and_then(|_| signal(SignalKind::hangup()).ok());
        Ok(App {
            config,
            store,
            catalog,
            realtime,
            access,
            tls,
            local_commit,
            clock,
            results,
            hangup,
        })
    }

    /// The configuration the server was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The bus on which every durable commit is announced.
    pub fn events(&self) -> &EventBus {
        self.realtime.events()
    }

    /// Serves HTTP (and MQTT, if it has a listener) until `shutdown` completes, then closes
    /// subscriptions, stops accepting, lets requests in flight and origin requests finish, stops
    /// the cache sweeper, commits what is queued and flushes the store.
    pub async fn serve(
        mut self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let replication = self.local_commit.clone().map(|local_commit| {
            let settings = replication::Settings {
                url: self.config.nats.clone().unwrap_or_default(),
                node: self.config.node.clone().unwrap_or_default(),
                cluster: self.config.cluster.clone(),
            };
            Replication::start(
                settings,
                self.store.clone(),
                self.catalog.clone(),
                local_commit,
            )
        });
        let intake = Intake::new(self.config.body_memory, self.config.body_timeout);
        let bodies = http::BodyLimits {
            max_body: self.config.max_body,
            intake: intake.clone(),
        };
        let mqtt_listeners = realtime::mqtt::Listeners {
            plain: listeners.mqtt,
            tls: listeners
                .mqtts
                .zip(self.tls.as_ref().map(|tls| tls.acceptor().clone())),
        };
        let serves_mqtt = mqtt_listeners.plain.is_some() || mqtt_listeners.tls.is_some();
        let mqtt_settings = realtime::mqtt::Settings {
            max_body: self.config.max_body,
            intake: intake.clone(),
            retained: realtime::mqtt::RetainedLimits {
                bytes: self.config.mqtt_retained_memory,
                bytes_per_client: self.config.mqtt_retained_per_client,
            },
            sessions: realtime::mqtt::SessionLimits {
                max_queued: self.config.mqtt_max_queued,
                max_expiry: self.config.mqtt_session_expiry,
                max_sessions: self.config.mqtt_max_sessions,
            },
            max_keepalive: self.config.mqtt_max_keepalive,
            drain_timeout: self.config.drain_timeout,
            access: self.access.clone(),
        };
        let mqtt_server = match serves_mqtt {
            true => Some(
                realtime::mqtt::Mqtt::open(self.realtime.clone(), mqtt_settings).map_err(
                    |error| std::io::Error::other(crate::error::Chain(&error).to_string()),
                )?,
            ),
            false => None,
        };
        let graphql = match self.config.graphql {
            true => {
                let settings = graphql::Settings {
                    introspection: self.config.graphql_introspection,
                    max_depth: self.config.graphql_max_depth,
                    max_complexity: self.config.graphql_max_complexity,
                    max_aliases: self.config.graphql_max_aliases,
                };
                let engine = graphql::GraphQl::new(
                    self.realtime.clone(),
                    self.results.clone(),
                    self.clock.clone(),
                    settings,
                    self.access.is_guarded(),
                )
                .map_err(std::io::Error::other)?;
                Some(engine)
            }
            false => None,
        };
        let router = http::router(
            self.realtime.clone(),
            http::Settings {
                access: self.access.clone(),
                bodies,
                cors_origins: self.config.cors_origins.clone(),
                tls: self.tls.is_some(),
                replication: replication.as_ref().map(|r| r.status().clone()),
                mqtt: mqtt_server.clone(),
                graphql,
            },
        );
        let hangup = self
            .hangup
            .take()
            .or_else(|| signal(SignalKind::hangup()).ok());
        let reloader = tokio::spawn(reload::on_change(
            hangup,
            self.catalog.clone(),
            self.config.schemas.clone(),
            self.config
                .access
                .clone()
                .map(|path| (self.access.clone(), path)),
            self.tls.clone(),
            self.results.clone(),
        ));
        let acceptor = self.tls.as_ref().map(|tls| tls.acceptor().clone());
        let mqtt = mqtt_server.map(|mqtt| tokio::spawn(mqtt.serve(mqtt_listeners)));
        // Subscriptions never end by themselves: they are closed as soon as shutdown begins.
        let realtime = self.realtime.clone();
        let shutdown = async move {
            shutdown.await;
            realtime.close();
        };
        let limits = http::Limits {
            header_timeout: self.config.header_timeout,
            max_connections: self.config.max_connections,
            drain_timeout: self.config.drain_timeout,
            write_stall: self.config.subscriber_silence,
        };
        let sweeper = Sweeper::start(
            self.catalog.caches().cloned().collect(),
            self.config.sweep_interval,
        );
        http::serve(listeners.http, router, limits, acceptor, shutdown).await;
        if let Some(mqtt) = mqtt
            && let Ok(Err(error)) = mqtt.await
        {
            tracing::error!(error = %crate::error::Chain(&error), "MQTT stopped");
        }
        sweeper.stop().await;
        reloader.abort();
        // Caches first: their last fills are published, and their claims released, while
        // replication still runs.
        for cache in self.catalog.caches() {
            cache.close(self.config.drain_timeout).await;
        }
        // What it had not published yet, it publishes after the next start.
        drop(replication);
        tracing::info!("stopped serving; flushing the store");
        let App {
            store,
            catalog,
            realtime,
            ..
        } = self;
        drop((catalog, realtime));
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(std::io::Error::other)
    }
}

/// Checks the stored records of every table whose schema changed (see [`Conformance`]): logs
/// how many break it and where, and with `--schema-check refuse` stops the start.
fn check_records(catalog: &Catalog, now: u64, check: SchemaCheck) -> Result<(), StartError> {
    let mut breaking = Vec::new();
    for resource in catalog.resources() {
        let table = resource.table();
        let report = table.check_at_start(now).map_err(StartError::Store)?;
        if report.breaking == 0 {
            continue;
        }
        tracing::warn!(
            table = table.name(),
            breaking = report.breaking,
            records = report.records,
            file = %table.schema().file.display(),
            "stored records break the table's schema; they are served as stored, and a write to one must make it valid"
        );
        for line in report.lines(table.name()) {
            tracing::warn!("  {line}");
        }
        breaking.push((table.name().to_owned(), report));
    }
    match check {
        SchemaCheck::Refuse if !breaking.is_empty() => Err(StartError::Nonconforming(breaking)),
        SchemaCheck::Warn | SchemaCheck::Refuse => Ok(()),
    }
}
