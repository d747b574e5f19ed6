//! tablecast: schema-defined tables in an embedded store, served over REST.
//!
//! A user writes one JSON Schema file per table; tablecast stores the records in sled and serves
//! REST CRUD and URL queries for every table, answering every error with
//! `application/problem+json`. A table whose schema names an origin is a cache of that HTTP API.
//!
//! # Modules (dependencies point down)
//!
//! | module | role |
//! | --- | --- |
//! | [`app`] | composition root: [`App::open`](app::App::open) builds everything, [`App::serve`](app::App::serve) runs and shuts down in order |
//! | [`http`] | axum router, handlers (`records_get`, `records_put`, ...), extractors, problem+json, the connection loop and its limits |
//! | [`realtime`] | subscriptions over WebSocket, Server-Sent Events and MQTT: one core, one lag policy; MQTT sessions over rumqttd's codecs (`realtime/mqtt/`, its only user) |
//! | [`graphql`] | `/graphql`: a schema generated from the table schemas (the only user of async-graphql), a result cache invalidated by commits, persisted queries, subscriptions over `graphql-transport-ws` |
//! | [`follow`] | references (`x-references`) and relations between tables, followed a level at a time: one batch of reads per table per level (GraphQL, and `select()` in REST) |
//! | [`replication`] | the only user of async-nats: each node's commits published to the cluster's JetStream stream from the change log, everyone's applied through the node's own writer, last writer wins |
//! | [`catalog`] | table name -> [`Resource`](catalog::Resource): a table of our own or a cache table; the schema reload on SIGHUP |
//! | [`cache`] | cache tables: the read path, [`freshness()`](cache::freshness), the fill path (single-flight origin requests), active caching (push, invalidate, warm, sweep); the only user of reqwest |
//! | [`query`] | the URL query language of `GET /T/?...`: parser, binding to the schema, planner, executor, evaluation |
//! | [`table`] | the domain core: validate, commit, publish a [`ChangeEvent`](events::ChangeEvent); whether stored records meet a changed schema |
//! | [`schema`] | schema files, `x-table` settings, compiled rules (validator, defaults) |
//! | [`storage`] | the only user of sled: a table's records, the mutation contract and the group-commit writer, the change log, table metadata and indexes, the hot records, key and index encodings |
//! | [`events`] | [`ChangeEvent`](events::ChangeEvent) and the [`EventBus`](events::EventBus) |
//! | [`bus`] | a broadcast bounded in values and in bytes (the event bus, the plain broker) |
//! | [`intake`] | the memory and time that request bodies and MQTT packets being received may take |
//! | [`json`] | client JSON: parsed, refused if a number in it would not be stored exactly |
//! | [`warm`] | the `tablecast warm` command: a client of a running server |
//! | [`check`] | the `tablecast check` command: schema files and a stopped server's records |
//! | [`error`] | the domain [`Error`](error::Error) and its stable [`ErrorCode`](error::ErrorCode), which every transport maps exhaustively |
//! | [`config`], [`clock`] | leaves |
//!
//! # Write path (`PUT /Product/42`)
//!
//! handler (the body read under the [`intake`] limits, [`json::parse`]) ->
//! [`Table::put`](table::Table::put) -> the write is decided against the record as it is now
//! (precondition, merge patch, primary key, timestamps from the [`Clock`](clock::Clock), schema
//! validation), serialised and indexed, ahead of the writer -> the storage writer thread takes
//! every queued write, confirms each was decided against the current record (or decides it
//! again), assigns a hybrid-logical-clock version, applies the batch (records, values above
//! 4 KB in pieces, their index entries, change-log entries, table metadata) in one sled
//! transaction and fsyncs once -> publishes one `ChangeEvent` per commit in commit order ->
//! replies. A 2xx on a write means the write survives `kill -9`. With `--nats`, [`replication`]
//! then publishes the commit from the change log, and other nodes apply it with
//! [`Table::replicate`](table::Table::replicate).
//!
//! # Read path (`GET /Product/42`)
//!
//! handler -> catalog -> [`Table::get`](table::Table::get) -> the hot records (recently read
//! envelopes, kept decoded in memory and invalidated by the writer before its fsync) or sled ->
//! the stored JSON bytes are the response body as they are (no parse, no re-serialisation), with
//! `ETag` from the version.
//!
//! # Cache read path (`GET /Quote/ACME`)
//!
//! handler -> catalog -> [`CachedTable::get`](cache::CachedTable::get) -> the stored envelope and
//! its cache [`Entry`](cache::Entry) -> [`freshness()`](cache::freshness): fresh -> the stored
//! bytes as they are; usable stale -> served, one background refresh; otherwise one origin
//! request per key however many wait (conditional when validators are stored) -> stored as a
//! normal commit -> served; on origin failure within stale-if-error, the stale entry is served.
//!
//! # MQTT publish path (`mosquitto_pub -r -t Product/42 -m '{...}'`)
//!
//! the session reads the PUBLISH -> `realtime/mqtt/publish.rs` decides what it is: a retained
//! JSON payload on `<Table>/<id>` -> [`Resource::put`](catalog::Resource::put) ->
//! [`Table::put`](table::Table::put) (or a push on a cache table) -> the writer, as for a `PUT` ->
//! PUBACK once durable; a retained empty payload deletes; a non-retained one is a `message` to
//! the record's subscribers; other topics are a plain broker. A refused PUBLISH is acknowledged
//! with the reason code of its [`ErrorCode`](error::ErrorCode).
//!
//! # Errors
//!
//! Every failure is an [`Error`](error::Error) with a stable code; `http/error.rs` maps codes to
//! statuses and problem details, the MQTT publish path to reason codes, each in one exhaustive
//! match. Failures inside the server are told as one safe sentence; their cause goes to the log.
//!
//! # Change path (`PUT /Product/42` seen by a subscriber)
//!
//! the writer publishes the `ChangeEvent` on the bus -> every [`Subscription`](realtime::Subscription)
//! whose filter matches (`Product/42`, `Product/+`, `Product/#`), and whose query if it has one
//! (`GET /Product/?price=lt=50`), receives it -> WebSocket text frame, SSE event with the
//! change-log sequence as its id, or MQTT PUBLISH to `Product/42`. A
//! subscriber that falls behind the bus's buffer gets `resync` and current values, read from the
//! tables; writers never wait.
//!
//! # Query path (`GET /Product/?category=lighting&price=lt=50`)
//!
//! handler (on the blocking pool) -> [`query::parse`] -> [`query::bind`] to the schema ->
//! [`query::planner`] picks an index range or a scan -> [`query::executor`] streams records in key
//! order through the filter, paging and `select` -> JSON, NDJSON or CSV chunks, each produced when
//! the client can take it.

pub mod access;
pub mod app;
pub mod bus;
pub mod cache;
pub mod catalog;
pub mod check;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod follow;
pub mod graphql;
pub mod http;
pub mod intake;
pub mod json;
pub mod query;
pub mod realtime;
pub mod replication;
pub mod schema;
pub mod storage;
pub mod table;
pub mod tls;
pub mod warm;

pub use app::{App, Listeners};
pub use config::Config;
