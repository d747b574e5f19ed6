//! Model-based test of the store: random puts, patches, deletes, reads, listings and reopens,
//! checked against a `BTreeMap` after every step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};
use tablecast::error::Error;
use tablecast::schema::TableSchema;
use tablecast::storage::{Key, Options, Store};
use tablecast::table::{Precondition, Table};

const SCHEMA: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "n" },
  "properties": { "n": { "type": "integer" }, "v": { "type": "integer" }, "p": { "type": "integer" } },
  "additionalProperties": false
}"#;

#[derive(Clone, Debug)]
enum Op {
    Put(i64, u8),
    Patch(i64, u8),
    Delete(i64),
    Get(i64),
    List(usize, usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = -6i64..6;
    prop_oneof![
        4 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (key.clone(), any::<u8>()).prop_map(|(k, p)| Op::Patch(k, p)),
        2 => key.clone().prop_map(Op::Delete),
        2 => key.prop_map(Op::Get),
        1 => (0usize..14, 0usize..14).prop_map(|(o, l)| Op::List(o, l)),
        1 => Just(Op::Reopen),
    ]
}

fn open(schema_file: &Path, data: &Path) -> Table {
    let schema = TableSchema::load(schema_file).expect("schema loads");
    let store =
        Arc::new(Store::open(data, Options::default(), Box::new(|_| {})).expect("store opens"));
    Table::open(schema, store).expect("table opens")
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("stored JSON")
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let schema_file = dir.path().join("Model.json");
    std::fs::write(&schema_file, SCHEMA).expect("write schema");
    let data = dir.path().join("data");
    let mut table = open(&schema_file, &data);
    let mut model: BTreeMap<i64, Value> = BTreeMap::new();
    let mut last_version = 0;

    for op in ops {
        let committed = match op {
            Op::Put(k, v) => {
                let commit = table
                    .put(Key::Int(k), json!({"v": v}), Precondition::default())
                    .await;
                model.insert(k, json!({"n": k, "v": v}));
                Some(commit.expect("put"))
            }
            Op::Patch(k, p) => {
                let commit = table
                    .patch(Key::Int(k), json!({"p": p}), Precondition::default())
                    .await;
                match model.get_mut(&k) {
                    Some(record) => {
                        record["p"] = json!(p);
                        Some(commit.expect("patch"))
                    }
                    None => {
                        prop_assert!(
                            matches!(commit, Err(Error::RecordNotFound { .. })),
                            "expected not found, got {:?}",
                            commit
                        );
                        None
                    }
                }
            }
            Op::Delete(k) => {
                let commit = table.delete(Key::Int(k), Precondition::default()).await;
                match model.remove(&k) {
                    Some(_) => Some(commit.expect("delete")),
                    None => {
                        prop_assert!(
                            matches!(commit, Err(Error::RecordNotFound { .. })),
                            "expected not found, got {:?}",
                            commit
                        );
                        None
                    }
                }
            }
            Op::Get(k) => {
                let stored = table
                    .get(&Key::Int(k))
                    .expect("get")
                    .map(|e| parse(&e.value));
                prop_assert_eq!(stored.as_ref(), model.get(&k));
                None
            }
            Op::List(offset, limit) => {
                let listed: Vec<(Key, Value)> = table
                    .scan(false, None)
                    .skip(offset)
                    .take(limit)
                    .map(|r| r.map(|(k, e)| (k, parse(&e.value))))
                    .collect::<Result<_, _>>()
                    .expect("scan");
                let expected: Vec<(Key, Value)> = model
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|(k, v)| (Key::Int(*k), v.clone()))
                    .collect();
                prop_assert_eq!(listed, expected);
                None
            }
            Op::Reopen => {
                drop(table);
                table = open(&schema_file, &data);
                None
            }
        };
        if let Some(commit) = committed {
            prop_assert!(commit.version > last_version, "versions strictly increase");
            last_version = commit.version;
        }
        prop_assert_eq!(table.count(), model.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap(ops in vec(op(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run(ops))?;
    }
}
