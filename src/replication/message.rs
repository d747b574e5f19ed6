//! A commit as a JetStream message: the record's JSON as the payload (empty for a delete), and
//! headers for the version, the node that made it, the operation, the record's stamp (a cache
//! entry's freshness and origin validators) and de-duplication.

use async_nats::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
/// The metadata of the record's stamp, base64url, if it has any.
const STAMP: &str = "Tablecast-Stamp";

/// A commit to publish.
pub struct Outgoing<'a> {
    pub table: &'a str,
    pub key: &'a Key,
    pub version: u64,
    /// The record's JSON; `None` for a delete.
    pub value: Option<&'a Bytes>,
    /// The metadata of the record's stamp; empty if none.
    pub meta: &'a [u8],
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
        if !self.meta.is_empty() {
            // A revalidation keeps the version and changes only the stamp.
            id.push_str(&format!(":{:016x}", fnv1a(self.meta)));
        }
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
        if !self.meta.is_empty() {
            headers.insert(STAMP, URL_SAFE_NO_PAD.encode(self.meta).as_str());
        }
        let payload = self.value.cloned().unwrap_or_default();
        (subject, headers, payload)
    }
}

/// The 64-bit FNV-1a hash of `bytes`: stable, so a node that publishes one stamp again
/// (after a crash, say) gives it the same message id.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A commit received from the stream.
#[derive(Debug)]
pub struct Incoming {
    pub table: String,
    pub key: Key,
    pub version: u64,
    /// The node that made it.
    pub node: String,
    /// The record's JSON, not yet parsed (see [`Incoming::record`]); `None` for a delete.
    pub json: Option<Bytes>,
    /// The metadata of the record's stamp; empty if none.
    pub meta: Bytes,
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
        let json = match header(OPERATION)?.as_str() {
            "put" => Some(message.payload.clone()),
            "delete" => None,
            other => return Err(format!("unknown operation `{other}`")),
        };
        let meta = match header(STAMP) {
            Ok(stamp) => URL_SAFE_NO_PAD
                .decode(stamp)
                .map_err(|_| format!("{STAMP} is not base64url"))?
                .into(),
            Err(_) => Bytes::new(),
        };
        Ok(Incoming {
            table: table.to_owned(),
            key,
            version,
            node: header(NODE)?,
            json,
            meta,
        })
    }

    /// The record, parsed; `None` for a delete.
    pub fn record(&self) -> Result<Option<Value>, String> {
        self.json
            .as_ref()
            .map(|json| {
                serde_json::from_slice(json)
                    .map_err(|error| format!("the record is not JSON: {error}"))
            })
            .transpose()
    }
}
