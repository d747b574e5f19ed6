//! A commit as a JetStream message: the record's JSON as the payload (empty for a delete), and
//! headers for the version, the node that made it, the operation and de-duplication.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::Value;

use super::subject;
use crate::storage::Key;

/// The commit's version (its hybrid-logical-clock value, decimal).
const VERSION: &str = "Tablecast-Version";
/// The node that made the commit.
const NODE: &str = "Tablecast-Node";
/// `put` or `delete`.
const OPERATION: &str = "Tablecast-Op";

/// A commit to publish.
pub struct Outgoing<'a> {
    pub table: &'a str,
    pub key: &'a Key,
    pub version: u64,
    /// The record's JSON; `None` for a delete.
    pub value: Option<&'a Bytes>,
}

impl Outgoing<'_> {
    /// The subject, headers and payload of this commit, published by `node` of `cluster`.
    /// `again` tells apart a republication of the same version (see
    /// [`apply`](super::apply)), which JetStream would otherwise take for a duplicate.
    pub fn encode(
        &self,
        cluster: &str,
        node: &str,
        again: Option<u64>,
    ) -> (String, HeaderMap, Bytes) {
        let subject = subject::of(cluster, self.table, self.key);
        let mut id = format!("{node}:{}:{subject}", self.version);
        if let Some(again) = again {
            id.push_str(&format!(":again-{again}"));
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert(VERSION, self.version.to_string().as_str());
        headers.insert(NODE, node);
        headers.insert(
            OPERATION,
            if self.value.is_some() {
                "put"
            } else {
                "delete"
            },
        );
        let payload = self.value.cloned().unwrap_or_default();
        (subject, headers, payload)
    }
}

/// A commit received from the stream.
#[derive(Debug)]
pub struct Incoming {
    pub table: String,
    pub key: Key,
    pub version: u64,
    /// The node that made it.
    pub node: String,
    /// The record; `None` for a delete.
    pub record: Option<Value>,
}

impl Incoming {
    /// Reads a message of `cluster`'s stream; says what is wrong with one that is not a commit.
    pub fn decode(cluster: &str, message: &async_nats::Message) -> Result<Incoming, String> {
        let (table, key) = subject::parse(cluster, message.subject.as_str())
            .ok_or_else(|| format!("`{}` is not a record's subject", message.subject))?;
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str().to_owned())
                .ok_or_else(|| format!("no {name} header"))
        };
        let version = header(VERSION)?
            .parse()
            .map_err(|_| format!("{VERSION} is not a version"))?;
        let record = match header(OPERATION)?.as_str() {
            "put" => Some(
                serde_json::from_slice(&message.payload)
                    .map_err(|error| format!("the record is not JSON: {error}"))?,
            ),
            "delete" => None,
            other => return Err(format!("unknown operation `{other}`")),
        };
        Ok(Incoming {
            table: table.to_owned(),
            key,
            version,
            node: header(NODE)?,
            record,
        })
    }
}
