//! Differential test of the query engine: random records and random queries; tablecast's answer,
//! with and without indexes, equals a naive in-memory filter, sort and limit.

use std::cmp::Ordering;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};
use tablecast::query::executor::{Content, execute};
use tablecast::query::{bind, parse};
use tablecast::schema::TableSchema;
use tablecast::storage::{Key, Options, Store};
use tablecast::table::{Precondition, Table};

const SCHEMA: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "id", "indexes": INDEXES },
  "properties": {
    "id": { "type": "integer" },
    "n": { "type": ["number", "null"] },
    "c": { "type": ["string", "null"] },
    "tags": { "type": "array", "items": { "type": "string" } },
    "flag": { "type": ["boolean", "null"] }
  },
  "additionalProperties": false
}"#;

/// A precondition as the test sees it: attribute, operator text, value text.
#[derive(Clone, Debug)]
struct Cond {
    attr: &'static str,
    op: &'static str,
    value: String,
}

#[derive(Clone, Debug)]
enum Expr {
    One(Cond),
    Range(Cond, Cond),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Clone, Debug)]
struct Case {
    filter: Option<Expr>,
    sort: Option<(&'static str, bool)>,
    /// `after(id)`, only where the answer is in key order.
    after: Option<i64>,
    limit: Option<(usize, usize)>,
}

fn field(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![1 => Just(None), 1 => Just(Some(Value::Null)), 4 => values.prop_map(Some)]
}

/// `short` and strings around the length an index entry holds of a string (256 bytes), which
/// share their entries' values.
fn words(short: &[&str]) -> Vec<String> {
    let held = "l".repeat(256);
    let long = [&held[1..], &held, &format!("{held}a"), &format!("{held}b")].map(|s| s.to_owned());
    short.iter().map(|&s| s.to_owned()).chain(long).collect()
}

fn record() -> impl Strategy<Value = Value> {
    let word = prop::sample::select(words(&["", "a", "ab", "b", "ba", "abc"]));
    (
        field(prop_oneof![
            (-3i64..4).prop_map(Value::from),
            (-30i64..30).prop_map(|n| Value::from(f64::from(i32::try_from(n).unwrap()) / 10.0))
        ]),
        field(word.clone().prop_map(Value::from)),
        prop::option::of(vec(word, 0..3)),
        field(any::<bool>().prop_map(Value::from)),
    )
        .prop_map(|(n, c, tags, flag)| {
            let mut record = serde_json::Map::new();
            if let Some(n) = n {
                record.insert("n".into(), n);
            }
            if let Some(c) = c {
                record.insert("c".into(), c);
            }
            if let Some(tags) = tags {
                record.insert("tags".into(), json!(tags));
            }
            if let Some(flag) = flag {
                record.insert("flag".into(), flag);
            }
            Value::Object(record)
        })
}

fn precondition() -> impl Strategy<Value = Cond> {
    let number = prop_oneof![
        (-3i64..4).prop_map(|n| n.to_string()),
        Just("0.5".to_owned()),
        Just("null".to_owned())
    ];
    let word = prop::sample::select(words(&["a", "ab", "b", "ba", "abc", "null"]));
    let cmp = prop::sample::select(vec![
        "=", "==", "!=", "=ne=", "=lt=", "=le=", "=gt=", "=ge=",
    ]);
    prop_oneof![
        (cmp.clone(), number).prop_map(|(op, value)| Cond {
            attr: "n",
            op,
            value
        }),
        (
            prop::sample::select(vec!["=", "!=", "=lt=", "=gt=", "=sw=", "=ct=", "=ew="]),
            word.clone()
        )
            .prop_map(|(op, value)| Cond {
                attr: "c",
                op,
                value
            }),
        (prop::sample::select(vec!["=", "!="]), word).prop_map(|(op, value)| Cond {
            attr: "tags",
            op,
            value
        }),
        (
            prop::sample::select(vec!["=", "!="]),
            prop::sample::select(vec!["true", "false", "null"])
        )
            .prop_map(|(op, value)| Cond {
                attr: "flag",
                op,
                value: value.to_owned()
            }),
    ]
    .prop_filter("null compares only with = and !=", |c| {
        c.value != "null" || matches!(c.op, "=" | "==" | "!=")
    })
    .prop_filter("sw/ct/ew take text", |c| {
        c.value != "null" || !c.op.ends_with("w=") && c.op != "=ct="
    })
}

/// `n=ge=-1&lt=2`: a range on one attribute, written with range chaining.
fn range() -> impl Strategy<Value = Expr> {
    let bound = (-3i64..4).prop_map(|n| n.to_string());
    (
        prop::sample::select(vec!["=gt=", "=ge="]),
        bound.clone(),
        prop::sample::select(vec!["=lt=", "=le="]),
        bound,
    )
        .prop_map(|(low_op, low, high_op, high)| {
            Expr::Range(
                Cond {
                    attr: "n",
                    op: low_op,
                    value: low,
                },
                Cond {
                    attr: "n",
                    op: high_op,
                    value: high,
                },
            )
        })
}

fn expr() -> impl Strategy<Value = Expr> {
    let one = || precondition().prop_map(Expr::One).boxed();
    let nested = one().prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 2..4).prop_map(Expr::And),
            vec(inner, 2..3).prop_map(Expr::Or)
        ]
    });
    prop_oneof![
        3 => one(),
        2 => range(),
        2 => vec(prop_oneof![one(), range()], 2..4).prop_map(Expr::And),
        2 => nested,
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::option::of(expr()),
        prop::option::of((
            prop::sample::select(vec!["id", "n", "c", "flag"]),
            any::<bool>(),
        )),
        prop::option::of(-1i64..42),
        prop::option::of((0usize..6, 0usize..12).prop_map(|(a, b)| (a.min(b), a.max(b)))),
    )
        .prop_map(|(filter, sort, after, limit)| Case {
            filter,
            sort,
            after: after.filter(|_| sort.is_none_or(|(attr, _)| attr == "id")),
            limit,
        })
}

fn render(expr: &Expr, top: bool) -> String {
    match expr {
        Expr::One(c) => format!("{}{}{}", c.attr, c.op, c.value),
        Expr::Range(low, high) => {
            let chained = format!(
                "{}{}{}&{}={}",
                low.attr,
                low.op,
                low.value,
                high.op.trim_matches('='),
                high.value
            );
            if top { chained } else { format!("({chained})") }
        }
        Expr::And(parts) => {
            let inner = parts
                .iter()
                .map(|p| render(p, false))
                .collect::<Vec<_>>()
                .join("&");
            if top { inner } else { format!("({inner})") }
        }
        Expr::Or(parts) => format!(
            "[{}]",
            parts
                .iter()
                .map(|p| render(p, false))
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

fn query_string(case: &Case) -> String {
    let mut parts = Vec::new();
    if let Some(filter) = &case.filter {
        parts.push(render(filter, true));
    }
    if let Some((attr, descending)) = case.sort {
        parts.push(format!(
            "sort({}{attr})",
            if descending { "-" } else { "+" }
        ));
    }
    if let Some(after) = case.after {
        parts.push(format!("after({after})"));
    }
    if let Some((start, end)) = case.limit {
        parts.push(format!("limit({start},{end})"));
    }
    parts.join("&")
}

// --- the naive model -------------------------------------------------------------------------

fn literal(c: &Cond) -> Value {
    match (c.attr, c.value.as_str()) {
        (_, "null") => Value::Null,
        ("n", v) => json!(v.parse::<f64>().unwrap()),
        ("flag", v) => json!(v == "true"),
        (_, v) => json!(v),
    }
}

fn same_kind_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn holds(op: &str, value: &Value, lit: &Value) -> bool {
    let order = same_kind_cmp(value, lit);
    match op {
        "=" | "==" => order == Some(Ordering::Equal),
        "!=" | "=ne=" => order != Some(Ordering::Equal),
        "=lt=" => order == Some(Ordering::Less),
        "=le=" => matches!(order, Some(Ordering::Less | Ordering::Equal)),
        "=gt=" => order == Some(Ordering::Greater),
        "=ge=" => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
        text_op => match (value, lit) {
            (Value::String(s), Value::String(part)) => match text_op {
                "=sw=" => s.starts_with(part.as_str()),
                "=ct=" => s.contains(part.as_str()),
                _ => s.ends_with(part.as_str()),
            },
            _ => false,
        },
    }
}

fn naive_matches(expr: &Expr, record: &Value) -> bool {
    match expr {
        Expr::And(parts) => parts.iter().all(|p| naive_matches(p, record)),
        Expr::Or(parts) => parts.iter().any(|p| naive_matches(p, record)),
        Expr::Range(low, high) => {
            naive_matches(&Expr::One(low.clone()), record)
                && naive_matches(&Expr::One(high.clone()), record)
        }
        Expr::One(c) => {
            let lit = literal(c);
            let negated = matches!(c.op, "!=" | "=ne=");
            match record.get(c.attr) {
                None | Some(Value::Null) => {
                    if lit.is_null() {
                        !negated
                    } else {
                        negated
                    }
                }
                Some(_) if lit.is_null() => negated,
                Some(Value::Array(items)) if negated => !items.iter().any(|i| holds("=", i, &lit)),
                Some(Value::Array(items)) => items.iter().any(|i| holds(c.op, i, &lit)),
                Some(value) => holds(c.op, value, &lit),
            }
        }
    }
}

fn naive_sort_key(value: Option<&Value>) -> (u8, Option<&Value>) {
    match value {
        Some(v @ Value::Number(_)) => (0, Some(v)),
        Some(v @ Value::String(_)) => (1, Some(v)),
        Some(v @ Value::Bool(_)) => (2, Some(v)),
        _ => (4, None),
    }
}

fn naive(records: &[Value], case: &Case) -> Vec<i64> {
    let mut matching: Vec<&Value> = records
        .iter()
        .filter(|r| case.filter.as_ref().is_none_or(|f| naive_matches(f, r)))
        .collect();
    if let Some((attr, descending)) = case.sort {
        matching.sort_by(|a, b| {
            let (ka, kb) = (naive_sort_key(a.get(attr)), naive_sort_key(b.get(attr)));
            let order = ka.0.cmp(&kb.0).then_with(|| match (ka.1, kb.1) {
                (Some(x), Some(y)) => same_kind_cmp(x, y).unwrap_or(Ordering::Equal),
                _ => Ordering::Equal,
            });
            if descending { order.reverse() } else { order }
        });
    }
    if let Some(after) = case.after {
        let descending = case.sort.is_some_and(|(_, descending)| descending);
        matching.retain(|r| {
            let id = r["id"].as_i64().unwrap();
            if descending { id < after } else { id > after }
        });
    }
    let (offset, count) = case
        .limit
        .map_or((0, usize::MAX), |(start, end)| (start, end - start));
    matching
        .iter()
        .skip(offset)
        .take(count)
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

// --- tablecast -------------------------------------------------------------------------------

fn open(dir: &std::path::Path, indexes: &str) -> Table {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("Model.json");
    std::fs::write(&file, SCHEMA.replace("INDEXES", indexes)).unwrap();
    let schema = TableSchema::load(&file).expect("schema");
    let store = Arc::new(
        Store::open(&dir.join("data"), Options::default(), Box::new(|_| {})).expect("store"),
    );
    Table::open(schema, store).expect("table")
}

fn answer(table: &Table, query: &str) -> Vec<i64> {
    let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let bound = bind(parsed, &table.schema().document()).unwrap_or_else(|e| panic!("{query}: {e}"));
    execute(table, bound)
        .expect("executes")
        .map(|listed| {
            let bytes = match listed.expect("listed").content {
                Content::Stored(bytes) => bytes,
                Content::Value(_) => unreachable!("no select"),
            };
            serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn queries_match_a_naive_filter_with_and_without_indexes(
        records in vec(record(), 0..40),
        updates in vec((0usize..40, prop::option::of(record())), 0..20),
        cases in vec(case(), 1..25),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::TempDir::new().unwrap();
        let indexed = open(&dir.path().join("indexed"), r#"["n", "c", "tags", "flag"]"#);
        let plain = open(&dir.path().join("plain"), "[]");
        let mut records: Vec<Option<Value>> = records.into_iter().enumerate().map(|(i, mut r)| {
            r["id"] = json!(i);
            Some(r)
        }).collect();
        runtime.block_on(async {
            for record in records.iter().flatten() {
                let key = Key::Int(record["id"].as_i64().unwrap());
                indexed.put(key.clone(), record.clone(), Precondition::default()).await.expect("put");
                plain.put(key, record.clone(), Precondition::default()).await.expect("put");
            }
            // Replace and delete some, so index entries must move and go.
            for (i, replacement) in updates {
                let Some(slot) = records.get_mut(i) else { continue };
                let key = Key::Int(i64::try_from(i).unwrap());
                match replacement {
                    Some(mut record) => {
                        record["id"] = json!(i);
                        indexed.put(key.clone(), record.clone(), Precondition::default()).await.expect("put");
                        plain.put(key, record.clone(), Precondition::default()).await.expect("put");
                        *slot = Some(record);
                    }
                    None if slot.is_some() => {
                        indexed.delete(key.clone(), Precondition::default()).await.expect("delete");
                        plain.delete(key, Precondition::default()).await.expect("delete");
                        *slot = None;
                    }
                    None => {}
                }
            }
        });
        let records: Vec<Value> = records.into_iter().flatten().collect();
        for case in &cases {
            let query = query_string(case);
            let expected = naive(&records, case);
            prop_assert_eq!(&answer(&plain, &query), &expected, "scan: {}", query);
            prop_assert_eq!(&answer(&indexed, &query), &expected, "indexed: {}", query);
        }
    }
}
