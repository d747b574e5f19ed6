//! Server configuration: every setting is a command-line flag and a `TABLECAST_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default address of the HTTP listener.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9926";
/// Default request body limit, in bytes (1 MiB).
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default of the longest a request body may take to arrive.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of the memory all request bodies being received may hold at once.
pub const DEFAULT_BODY_MEMORY: usize = 64 << 20;
/// Default size of the store's page cache, in bytes (256 MiB).
pub const DEFAULT_STORE_CACHE: u64 = 256 << 20;
/// Default wait for a request head, and idle time allowed between requests.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default limit of WebSocket and SSE streams plus MQTT connections.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 10_000;
/// Default number of commits kept in the change log (for SSE `Last-Event-ID` resume).
pub const DEFAULT_CHANGE_LOG: u64 = 100_000;
/// Default of the most index entries one record may have, over all its table's indexes.
pub const DEFAULT_MAX_INDEX_ENTRIES: usize = 1_000;
/// Default memory for messages retained on plain MQTT topics.
pub const DEFAULT_MQTT_RETAINED_MEMORY: usize = 64 << 20;
/// Default of what one client id's retained messages may hold of it.
pub const DEFAULT_MQTT_RETAINED_PER_CLIENT: usize = 8 << 20;
/// The longest an MQTT persistent session outlives its connection.
pub const DEFAULT_MQTT_SESSION_EXPIRY: Duration = Duration::from_secs(7 * 86_400);
/// Messages an MQTT persistent session keeps for its absent client, at most.
pub const DEFAULT_MQTT_MAX_QUEUED: usize = 1000;
/// MQTT persistent sessions kept at most.
pub const DEFAULT_MQTT_MAX_SESSIONS: usize = 100_000;
/// Default of how long a WebSocket subscriber may neither read nor answer pings.
pub const DEFAULT_SUBSCRIBER_SILENCE: Duration = Duration::from_secs(60);
/// Default address of the MQTT-over-TLS listener.
pub const DEFAULT_MQTTS: &str = "127.0.0.1:8883";
/// Default of how long a write waits for the cluster's stream with `--replication-ack cluster`.
pub const DEFAULT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Default name of a cluster (and of its JetStream stream).
pub const DEFAULT_CLUSTER: &str = "tablecast";
/// Default address of the MQTT listener.
pub const DEFAULT_MQTT: &str = "127.0.0.1:1883";
/// Default wait, on shutdown, for requests in flight.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of the deepest nesting of a GraphQL operation.
pub const DEFAULT_GRAPHQL_MAX_DEPTH: usize = 16;
/// Default of the most fields of a GraphQL operation.
pub const DEFAULT_GRAPHQL_MAX_COMPLEXITY: usize = 1000;
/// Default of the most aliases of a GraphQL operation.
pub const DEFAULT_GRAPHQL_MAX_ALIASES: usize = 30;
/// Default number of GraphQL answers kept.
pub const DEFAULT_GRAPHQL_RESULT_CACHE: usize = 10_000;
/// Default interval between sweeps of cache entries past their last usable moment.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How a server is configured.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Directory of table schemas: one JSON Schema file per table, `<Table>.json`.
    #[arg(long, env = "TABLECAST_SCHEMAS", default_value = "schemas")]
    pub schemas: PathBuf,

    /// Directory of the database (created if missing).
    #[arg(long, env = "TABLECAST_DATA", default_value = "data")]
    pub data: PathBuf,

    /// What a start does when stored records break a table's changed schema: `warn` (serve,
    /// and log and show in `GET /T` how many and where) or `refuse` (do not start).
    #[arg(long, env = "TABLECAST_SCHEMA_CHECK", value_enum, default_value_t = SchemaCheck::Warn)]
    pub schema_check: SchemaCheck,

    /// Address of the HTTP listener (REST); port 0 picks a free port.
    #[arg(long, env = "TABLECAST_HTTP", default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,

    /// Largest request body accepted, e.g. `1MiB`, `512KiB`, `65536`.
    #[arg(long, env = "TABLECAST_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: usize,

    /// The longest a request body may take to arrive once its head has, e.g. `30s`; slower
    /// bodies are answered 408.
    #[arg(long, env = "TABLECAST_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Memory all the request bodies being received may hold at once, e.g. `64MiB`; a body that
    /// would take more is answered 503.
    #[arg(long, env = "TABLECAST_BODY_MEMORY", default_value = "64MiB", value_parser = parse_size)]
    pub body_memory: usize,

    /// Memory for records: a quarter holds recently read records ready to serve, the rest is
    /// the store's page cache; records beyond it are read from disk (the OS page cache) when
    /// needed.
    #[arg(long, env = "TABLECAST_STORE_CACHE", default_value = "256MiB", value_parser = parse_bytes)]
    pub store_cache: u64,

    /// Longest wait for a complete request head, and longest idle time of a kept-alive
    /// connection, e.g. `30s`, `500ms`.
    #[arg(long, env = "TABLECAST_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, env = "TABLECAST_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// On shutdown, how long requests in flight may take to finish before their connections are
    /// closed, e.g. `10s`.
    #[arg(long, env = "TABLECAST_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Address of the MQTT listener (MQTT 3.1.1 and 5); `off` disables MQTT; port 0 picks a free
    /// port.
    #[arg(long, env = "TABLECAST_MQTT", default_value = DEFAULT_MQTT, value_parser = parse_listener)]
    pub mqtt: Listener,

    /// Memory for the messages retained on plain (non-table) MQTT topics, topics included, e.g.
    /// `64MiB`; a retained publish past it is refused (MQTT 5: Quota exceeded; 3.1.1: the
    /// connection is closed).
    #[arg(long, env = "TABLECAST_MQTT_RETAINED_MEMORY", default_value = "64MiB", value_parser = parse_size)]
    pub mqtt_retained_memory: usize,

    /// Of that memory, what the messages one client id retained may hold, e.g. `8MiB`.
    #[arg(long, env = "TABLECAST_MQTT_RETAINED_PER_CLIENT", default_value = "8MiB", value_parser = parse_size)]
    pub mqtt_retained_per_client: usize,

    /// The longest an MQTT persistent session outlives its connection (MQTT 5 clients may ask
    /// for less; MQTT 3.1.1 sessions with `cleanSession=0` get this), e.g. `7d`. Sessions are
    /// kept in the data directory and survive restarts.
    #[arg(long, env = "TABLECAST_MQTT_SESSION_EXPIRY", default_value = "7d", value_parser = parse_duration)]
    pub mqtt_session_expiry: Duration,

    /// Messages on plain topics an MQTT persistent session keeps for its absent client, at
    /// most (QoS 1 and 2); past it the oldest are dropped, and counted.
    #[arg(long, env = "TABLECAST_MQTT_MAX_QUEUED", default_value_t = DEFAULT_MQTT_MAX_QUEUED)]
    pub mqtt_max_queued: usize,

    /// MQTT persistent sessions kept at most, away or connected; a client asking for a new one
    /// past it is refused (MQTT 5: Quota exceeded; 3.1.1: Server unavailable).
    #[arg(long, env = "TABLECAST_MQTT_MAX_SESSIONS", default_value_t = DEFAULT_MQTT_MAX_SESSIONS)]
    pub mqtt_max_sessions: usize,

    /// The longest keep-alive an MQTT client may have, in seconds: an MQTT 5 client that asks
    /// for more (or none) is told to use this one (Server Keep Alive); an MQTT 3.1.1 client,
    /// which cannot be told, is refused. 65535 allows any.
    #[arg(long, env = "TABLECAST_MQTT_MAX_KEEPALIVE", default_value_t = u16::MAX)]
    pub mqtt_max_keepalive: u16,

    /// How many of the latest commits the change log keeps, so a Server-Sent Events client that
    /// reconnects with `Last-Event-ID` gets what it missed; older resumes get a `resync`.
    #[arg(long, env = "TABLECAST_CHANGE_LOG", default_value_t = DEFAULT_CHANGE_LOG)]
    pub change_log: u64,

    /// How long an HTTP client (a WebSocket or SSE subscriber, or one downloading a listing) may
    /// read nothing, or a WebSocket peer answer no ping, before its connection is closed
    /// (freeing its place under --max-subscribers), e.g. `60s`.
    #[arg(long, env = "TABLECAST_SUBSCRIBER_SILENCE", default_value = "60s", value_parser = parse_duration)]
    pub subscriber_silence: Duration,

    /// The most index entries one record may have, over all its table's indexes (an array
    /// attribute has one per distinct element); a write past it is refused (422).
    #[arg(long, env = "TABLECAST_MAX_INDEX_ENTRIES", default_value_t = DEFAULT_MAX_INDEX_ENTRIES)]
    pub max_index_entries: usize,

    /// WebSocket and SSE streams plus MQTT connections served at once; more are refused (503,
    /// or an MQTT CONNACK "server busy").
    #[arg(long, env = "TABLECAST_MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Whether `/graphql` is served (`true` or `false`).
    #[arg(long, env = "TABLECAST_GRAPHQL", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphql: bool,

    /// Whether `/graphql` answers introspection queries (`__schema`, `__type`).
    #[arg(long, env = "TABLECAST_GRAPHQL_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphql_introspection: bool,

    /// The deepest nesting of selections a GraphQL operation may have.
    #[arg(long, env = "TABLECAST_GRAPHQL_MAX_DEPTH", default_value_t = DEFAULT_GRAPHQL_MAX_DEPTH)]
    pub graphql_max_depth: usize,

    /// The most fields (counted in every selection) a GraphQL operation may have.
    #[arg(long, env = "TABLECAST_GRAPHQL_MAX_COMPLEXITY", default_value_t = DEFAULT_GRAPHQL_MAX_COMPLEXITY)]
    pub graphql_max_complexity: usize,

    /// The most aliased fields a GraphQL operation may have.
    #[arg(long, env = "TABLECAST_GRAPHQL_MAX_ALIASES", default_value_t = DEFAULT_GRAPHQL_MAX_ALIASES)]
    pub graphql_max_aliases: usize,

    /// How many recent GraphQL answers are kept, each dropped when a record it read changes;
    /// 0 keeps none.
    #[arg(long, env = "TABLECAST_GRAPHQL_RESULT_CACHE", default_value_t = DEFAULT_GRAPHQL_RESULT_CACHE)]
    pub graphql_result_cache: usize,

    /// How often cache tables are swept of entries past their last usable moment, e.g. `1s`.
    #[arg(long, env = "TABLECAST_SWEEP_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub sweep_interval: Duration,

    /// Origins whose web pages may use the API from a browser (CORS), comma-separated, e.g.
    /// `https://app.example.com`; `*` allows any origin. None by default.
    #[arg(long, env = "TABLECAST_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    /// The access file: users, token verification and roles (JSON; `${VAR}` reads the
    /// environment). Without one, everyone may do everything, which is allowed only while
    /// every listener is on a loopback address (or with --open). Reloaded on SIGHUP or when the
    /// file changes.
    #[arg(long, env = "TABLECAST_ACCESS")]
    pub access: Option<PathBuf>,
    /// Serve without an access file on addresses other than loopback: anyone who can reach the
    /// server may read, change and delete every record.
    #[arg(long, env = "TABLECAST_OPEN")]
    pub open: bool,
    /// Certificate chain (PEM, leaf first) for HTTPS and WSS on --http and MQTT over TLS on
    /// --mqtts; reloaded on SIGHUP.
    #[arg(long, env = "TABLECAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TABLECAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address of the MQTT-over-TLS listener, served with --tls-cert (default
    /// 127.0.0.1:8883); `off` disables it.
    #[arg(long, env = "TABLECAST_MQTTS", value_parser = parse_listener)]
    pub mqtts: Option<Listener>,
    /// A NATS server with JetStream (`nats://host:4222`) through which this node replicates
    /// with the others of its cluster; without it the node stands alone.
    #[arg(long, env = "TABLECAST_NATS", requires = "node")]
    pub nats: Option<String>,
    /// This node's name, unique in its cluster (letters, digits, `-` and `_`).
    #[arg(long, env = "TABLECAST_NODE", value_parser = parse_name)]
    pub node: Option<String>,
    /// The cluster's name: the JetStream stream that holds its records, and their subjects'
    /// first token (letters, digits, `-` and `_`).
    #[arg(long, env = "TABLECAST_CLUSTER", default_value = DEFAULT_CLUSTER, value_parser = parse_name)]
    pub cluster: String,
    /// When a write is answered: `local`, once durable on this node; `cluster`, once the
    /// cluster's JetStream stream has stored it too.
    #[arg(long, env = "TABLECAST_REPLICATION_ACK", value_enum, default_value_t = ReplicationAck::Local)]
    pub replication_ack: ReplicationAck,
    /// With `--replication-ack cluster`, how long a write waits for the stream before it is
    /// answered 504 `not-replicated` (it stays durable here and is published later).
    #[arg(long, env = "TABLECAST_REPLICATION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub replication_timeout: Duration,
}

/// What a start does when stored records break their table's schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaCheck {
    /// Serve, with a warning in the log and in `GET /T`.
    Warn,
    /// Refuse to start.
    Refuse,
}

/// When a write is answered, with replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplicationAck {
    /// Once durable on this node.
    Local,
    /// Once the cluster's stream has stored it too.
    Cluster,
}

impl Config {
    /// The MQTT-over-TLS listener's address: only with a certificate.
    pub fn mqtts(&self) -> Option<SocketAddr> {
        self.tls_cert.as_ref()?;
        match self.mqtts {
            Some(listener) => listener.0,
            None => DEFAULT_MQTTS.parse().ok(),
        }
    }
}

impl Config {
    /// The defaults, with the given schema and data directories, and MQTT off.
    pub fn new(schemas: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Config {
        Config {
            schemas: schemas.into(),
            data: data.into(),
            schema_check: SchemaCheck::Warn,
            http: DEFAULT_HTTP.parse().expect("the default address parses"),
            max_body: DEFAULT_MAX_BODY,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_memory: DEFAULT_BODY_MEMORY,
            store_cache: DEFAULT_STORE_CACHE,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            mqtt: Listener(None),
            mqtt_retained_memory: DEFAULT_MQTT_RETAINED_MEMORY,
            mqtt_retained_per_client: DEFAULT_MQTT_RETAINED_PER_CLIENT,
            mqtt_session_expiry: DEFAULT_MQTT_SESSION_EXPIRY,
            mqtt_max_queued: DEFAULT_MQTT_MAX_QUEUED,
            mqtt_max_keepalive: u16::MAX,
            mqtt_max_sessions: DEFAULT_MQTT_MAX_SESSIONS,
            change_log: DEFAULT_CHANGE_LOG,
            subscriber_silence: DEFAULT_SUBSCRIBER_SILENCE,
            max_index_entries: DEFAULT_MAX_INDEX_ENTRIES,
            cors_origins: Vec::new(),
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            graphql: true,
            graphql_introspection: true,
            graphql_max_depth: DEFAULT_GRAPHQL_MAX_DEPTH,
            graphql_max_complexity: DEFAULT_GRAPHQL_MAX_COMPLEXITY,
            graphql_max_aliases: DEFAULT_GRAPHQL_MAX_ALIASES,
            graphql_result_cache: DEFAULT_GRAPHQL_RESULT_CACHE,
            access: None,
            open: false,
            tls_cert: None,
            tls_key: None,
            mqtts: None,
            nats: None,
            node: None,
            cluster: DEFAULT_CLUSTER.to_owned(),
            replication_ack: ReplicationAck::Local,
            replication_timeout: DEFAULT_REPLICATION_TIMEOUT,
        }
    }
}

/// Checks a node or cluster name: it names a JetStream stream and consumer and is a subject
/// token, so it holds only letters, digits, `-` and `_`.
pub fn parse_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match valid {
        true => Ok(text.to_owned()),
        false => Err(format!(
            "`{text}` is not a name: use 1 to 64 letters, digits, `-` or `_`"
        )),
    }
}

/// Parses a byte size: a number with an optional `B`, `KiB`, `MiB` or `GiB` suffix.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" | "k" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KiB, MiB or GiB"
            ));
        }
    };
    let number: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 1MiB or 65536"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration: a number with `ms`, `s`, `m`, `h` or `d`, e.g. `250ms`, `30s`, `10m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 250ms, 30s, 10m, 1h or 7d"))?;
    let millis_per_unit = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("`{text}` needs a unit: ms, s, m, h or d")),
        other => {
            return Err(format!(
                "unknown duration unit `{other}`; use ms, s, m, h or d"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// A duration longer than zero (a timer's period).
fn parse_interval(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|interval| {
        if interval.is_zero() {
            Err(format!("`{text}` must be longer than 0"))
        } else {
            Ok(interval)
        }
    })
}

/// Checks a `--cors-origins` entry: `*`, or an origin such as `https://app.example.com:8443`.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(text.to_owned());
    }
    let host = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`{text}` is not an origin such as https://app.example.com, or `*`")
        })?;
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
    {
        return Err(format!(
            "`{text}` is not an origin: a scheme and a host (and port), with no path"
        ));
    }
    Ok(text.to_owned())
}

/// An optional listener: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener(pub Option<SocketAddr>);

fn parse_listener(text: &str) -> Result<Listener, String> {
    match text.trim() {
        "off" => Ok(Listener(None)),
        address => address.parse().map(|a| Listener(Some(a))).map_err(|e| {
            format!("`{address}` is not an address such as 127.0.0.1:1883 or `off`: {e}")
        }),
    }
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size(text).and_then(|n| u64::try_from(n).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_size};
    use std::time::Duration;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1MB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn origins() {
        for good in ["*", "https://app.example.com", "http://127.0.0.1:8080"] {
            assert_eq!(super::parse_origin(good).as_deref(), Ok(good));
        }
        for bad in [
            "app.example.com",
            "https://",
            "https://a.com/",
            "ftp://a.com",
            "https://a b",
        ] {
            assert!(super::parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("s").is_err());
    }
}
