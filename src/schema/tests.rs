use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::storage::KeyType;

/// Writes `text` as `<name>.json` in a fresh directory and loads it.
fn load(name: &str, text: &str) -> Result<TableSchema, Vec<LoadError>> {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join(format!("{name}.json"));
    std::fs::write(&file, text).expect("write");
    TableSchema::load(&file)
}

fn error(name: &str, text: &str) -> (String, String) {
    let mut errors = load(name, text).expect_err("the schema is rejected");
    let error = errors.remove(0);
    (error.pointer, error.reason)
}

#[test]
fn reads_x_table() {
    let schema = load(
        "Product",
        r#"{
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "x-table": { "primaryKey": "sku", "indexes": ["category", "dims.w"], "timestamps": true },
            "properties": { "sku": {"type": "integer"}, "category": {"type": "string"}, "dims": {"type": "object"} }
        }"#,
    )
    .expect("loads");
    assert_eq!(&*schema.name, "Product");
    assert_eq!(
        schema.settings,
        TableSettings {
            primary_key: "sku".into(),
            key_type: KeyType::Integer,
            indexes: vec!["category".into(), "dims.w".into()],
            timestamps: true,
            cache: None,
            references: Default::default(),
            relations: Default::default(),
            max_age: None,
        }
    );
    assert!(schema.validate(&json!({"sku": 1})).is_ok());
    let violations = schema
        .validate(&json!({"sku": "x", "dims": 3}))
        .expect_err("invalid");
    let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
    assert_eq!(pointers, ["/sku", "/dims"]);
}

#[test]
fn defaults_to_an_id_primary_key() {
    let schema = load(
        "T",
        r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
    )
    .expect("loads");
    assert_eq!(schema.settings.primary_key, "id");
    assert_eq!(schema.settings.key_type, KeyType::String);
    assert!(!schema.settings.timestamps);
}

#[test]
fn formats_are_asserted() {
    let schema = load(
        "T",
        r#"{"type":"object","properties":{"id":{"type":"string"},"mail":{"type":"string","format":"email"}}}"#,
    )
    .expect("loads");
    let violations = schema
        .validate(&json!({"id":"a","mail":"not-an-email"}))
        .expect_err("invalid");
    assert_eq!(violations[0].pointer, "/mail");
    assert_eq!(
        violations[0].message,
        "\"not-an-email\" is not a valid email address"
    );
}

#[test]
fn violations_say_what_would_be_right() {
    let schema = load(
        "Order",
        r#"{"type":"object","required":["id","status","price"],"properties":{"id":{"type":"string"},
            "price":{"type":"number"},"status":{"enum":["pending","paid","shipped","refunded"]}}}"#,
    )
    .expect("loads");
    let violations = schema
        .validate(&json!({"id":"a","status":"lost"}))
        .expect_err("invalid");
    let found: Vec<(&str, &str)> = violations
        .iter()
        .map(|v| (v.pointer.as_str(), v.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("/price", "property `price` is required"),
            (
                "/status",
                r#""lost" is not one of the allowed values: "pending", "paid", "shipped", "refunded""#
            ),
        ]
    );
}

#[test]
fn errors_name_the_pointer_and_the_reason() {
    let id = r#""properties":{"id":{"type":"string"}}"#;
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("T", "{\"type\": \"object\",".into(), "", "not valid JSON"),
        ("T", "[1]".into(), "", "must hold a JSON object"),
        ("T", format!(r#"{{{id}}}"#), "/type", "\"type\": \"object\""),
        (
            "T",
            format!(r#"{{"type":"array",{id}}}"#),
            "/type",
            "\"type\": \"object\"",
        ),
        (
            "T",
            format!(
                r#"{{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",{id}}}"#
            ),
            "/$schema",
            "2020-12",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":[],{id}}}"#),
            "/x-table",
            "must be an object",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"primarykey":"id"}},{id}}}"#),
            "/x-table/primarykey",
            "unknown setting `primarykey`",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"primaryKey":7}},{id}}}"#),
            "/x-table/primaryKey",
            "must be a property name",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"primaryKey":"sku"}},{id}}}"#),
            "/properties",
            "`sku` must be declared",
        ),
        (
            "T",
            r#"{"type":"object","properties":{"id":{"type":"number"}}}"#.into(),
            "/properties/id/type",
            "\"string\" or \"type\": \"integer\"",
        ),
        (
            "T",
            r#"{"type":"object","properties":{"id":{"type":["string","null"]}}}"#.into(),
            "/properties/id/type",
            "must have",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"indexes":["id2"]}},{id}}}"#),
            "/x-table/indexes/0",
            "`id2` is not declared",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"indexes":[3]}},{id}}}"#),
            "/x-table/indexes/0",
            "a string",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"indexes":["id"]}},{id}}}"#),
            "/x-table/indexes/0",
            "primary key",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"indexes":"id"}},{id}}}"#),
            "/x-table/indexes",
            "array",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"timestamps":"yes"}},{id}}}"#),
            "/x-table/timestamps",
            "true or false",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"cache":{{}}}},{id}}}"#),
            "/x-table/cache",
            "needs `origin`",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","x-table":{{"cache":{{"origin":"http://o/{{id}}"}}}},{id}}}"#
            ),
            "/x-table/cache",
            "needs `expiration`",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","x-table":{{"cache":{{"origin":"http://o/x","expiration":"1s"}}}},{id}}}"#
            ),
            "/x-table/cache/origin",
            "exactly once",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","x-table":{{"cache":{{"origin":"http://o/{{id}}","expiration":"soon"}}}},{id}}}"#
            ),
            "/x-table/cache/expiration",
            "not a duration",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","x-table":{{"cache":{{"origin":"http://o/{{id}}","expiration":"1s","maxEntries":0}}}},{id}}}"#
            ),
            "/x-table/cache/maxEntries",
            "positive integer",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","x-table":{{"cache":{{"origin":"http://o/{{id}}","expiration":"1s","ttl":"1s"}}}},{id}}}"#
            ),
            "/x-table/cache/ttl",
            "unknown cache setting `ttl`",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","x-table":{{"cache":{{"origin":"http://o/{{id}}","expiration":"1s","headers":{{"X-Key":"${{TABLECAST_TEST_UNSET_VARIABLE}}"}}}}}},{id}}}"#
            ),
            "/x-table/cache/headers/X-Key",
            "`TABLECAST_TEST_UNSET_VARIABLE` is not set",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","x-table":{{"cache":{{"origin":"http://o/{{id}}","expiration":"1s","headers":{{"Bad Name":"x"}}}}}},{id}}}"#
            ),
            "/x-table/cache/headers/Bad Name",
            "not a valid header name",
        ),
        (
            "T",
            format!(r#"{{"type":"object","x-table":{{"expiration":"1h"}},{id}}}"#),
            "/x-table/expiration",
            "not supported",
        ),
        (
            "T",
            format!(
                r#"{{"type":"object","additionalProperties":false,"x-table":{{"timestamps":true}},{id}}}"#
            ),
            "/x-table/timestamps",
            "`createdAt`",
        ),
        (
            "T",
            r#"{"type":"object","properties":{"id":{"type":"string","minLength":"one"}}}"#.into(),
            "/properties/id/minLength",
            "not of type",
        ),
        (
            "1st",
            format!(r#"{{"type":"object",{id}}}"#),
            "",
            "not a table name",
        ),
        (
            "my-table",
            format!(r#"{{"type":"object",{id}}}"#),
            "",
            "not a table name",
        ),
    ];
    for (name, text, pointer, reason) in cases {
        let (found_pointer, found_reason) = error(name, &text);
        assert_eq!(found_pointer, pointer, "{text}: {found_reason}");
        assert!(
            found_reason.contains(reason),
            "{text}: `{found_reason}` lacks `{reason}`"
        );
    }
}

#[test]
fn reads_cache_settings() {
    // SAFETY: this test alone reads or writes this variable.
    unsafe { std::env::set_var("TABLECAST_TEST_QUOTES_TOKEN", "s3cret") };
    let schema = load(
        "Quote",
        r#"{
            "type": "object",
            "x-table": { "cache": {
                "origin": "https://quotes.example/v1/{id}",
                "headers": { "Authorization": "Bearer ${TABLECAST_TEST_QUOTES_TOKEN}" },
                "expiration": "60s", "staleWhileRevalidate": "30s", "staleIfError": "10m",
                "notFound": "10s", "timeout": "2s", "maxEntries": 1000,
                "honorOriginCacheControl": true
            } },
            "properties": { "id": {"type": "string"} }
        }"#,
    )
    .expect("loads");
    let seconds = Duration::from_secs;
    assert_eq!(
        schema.settings.cache,
        Some(CacheSettings {
            origin: "https://quotes.example/v1/{id}".into(),
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            expiration: seconds(60),
            stale_while_revalidate: seconds(30),
            stale_if_error: seconds(600),
            not_found: seconds(10),
            timeout: seconds(2),
            max_entries: Some(1000),
            honor_origin_cache_control: true,
        })
    );
}

#[test]
fn load_dir_reports_every_bad_file() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write(
        "A.json",
        r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
    );
    write("B.json", "{");
    write("C.json", r#"{"type":"object"}"#);
    write("notes.txt", "not a schema");
    let errors = load_dir(dir.path()).expect_err("two bad files");
    let files: Vec<&Path> = errors.iter().map(|e| e.file.as_path()).collect();
    assert_eq!(
        files,
        [dir.path().join("B.json"), dir.path().join("C.json")]
    );
    assert!(
        errors[0].to_string().contains("B.json: not valid JSON"),
        "{}",
        errors[0]
    );

    std::fs::remove_file(dir.path().join("B.json")).expect("rm");
    std::fs::remove_file(dir.path().join("C.json")).expect("rm");
    let tables = load_dir(dir.path()).expect("loads");
    assert_eq!(tables.len(), 1);

    let empty = tempfile::TempDir::new().expect("temp dir");
    let errors = load_dir(empty.path()).expect_err("no schemas");
    assert!(errors[0].reason.contains("no schema files"));
}

#[test]
fn every_problem_of_a_file_at_once() {
    let errors = load(
        "T",
        r#"{"$schema":"draft-07","type":"object",
            "x-table":{"primaryKey":"id","indexes":["nosuch", 3],"bogus":1,"timestamps":"yes"},
            "properties":{"id":{"type":"string"},"n":{"type":"nmber"},"m":{"minLength":"one"}}}"#,
    )
    .expect_err("bad");
    let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/$schema",
            "/x-table/indexes/1",
            "/x-table/bogus",
            "/x-table/timestamps",
            "/x-table/indexes/0",
            "/properties/n/type",
            "/properties/m/minLength",
        ],
        "{errors:?}"
    );
}

#[test]
fn every_problem_of_a_cache_at_once() {
    let errors = load(
        "Quote",
        r#"{"type":"object","properties":{"id":{"type":"string"}},
            "x-table":{"cache":{"origin":"ftp://x/{id}","expiration":"soon","timeout":"0s",
                "maxEntries":-1,"headers":{"bad name":"v","X-Ok":3},"color":"red"}}}"#,
    )
    .expect_err("bad");
    let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/x-table/cache/color",
            "/x-table/cache/origin",
            "/x-table/cache/headers/bad name",
            "/x-table/cache/headers/X-Ok",
            "/x-table/cache/expiration",
            "/x-table/cache/timeout",
            "/x-table/cache/maxEntries",
        ],
        "{errors:?}"
    );
}

#[test]
fn links_name_tables_that_exist_with_the_index_a_relation_reads() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write(
        "Category.json",
        r#"{"type":"object","x-table":{"relations":{"products":{"table":"Product","by":"category"},"gone":{"table":"Nope","by":"x"}}},
            "properties":{"id":{"type":"string"},"parent":{"type":["string","null"],"x-references":"Category"}}}"#,
    );
    write(
        "Product.json",
        r#"{"type":"object","properties":{"id":{"type":"integer"},
            "category":{"type":"string","x-references":"Category"},
            "maker":{"type":"string","x-references":"Maker"},
            "twin":{"type":"string","x-references":"Product"}}}"#,
    );
    let errors = load_dir(dir.path()).expect_err("bad links");
    let found: Vec<(String, String)> = errors
        .iter()
        .map(|e| {
            let file = e.file.file_name().unwrap().to_string_lossy().into_owned();
            (format!("{file}#{}", e.pointer), e.reason.clone())
        })
        .collect();
    let pointers: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "Category.json#/x-table/relations/gone/table",
            "Category.json#/x-table/relations/products/by",
            "Product.json#/properties/maker/x-references",
            "Product.json#/properties/twin/x-references",
        ],
        "{found:#?}"
    );
    assert!(
        found[0]
            .1
            .contains("no table `Nope`: the tables are Category, Product")
    );
    assert!(found[1].1.contains("`Product.category` is not indexed"));
    assert!(found[3].1.contains("whose primary key is an integer"));

    write(
        "Category.json",
        r#"{"type":"object","x-table":{"relations":{"products":{"table":"Product","by":"category"}}},
            "properties":{"id":{"type":"string"}}}"#,
    );
    write(
        "Product.json",
        r#"{"type":"object","x-table":{"indexes":["category"]},"properties":{"id":{"type":"integer"},
            "category":{"type":"string","x-references":"Category"}}}"#,
    );
    let tables = load_dir(dir.path()).expect("loads");
    assert_eq!(tables[1].settings.references["category"], "Category");
    assert_eq!(tables[0].settings.relations["products"].by, "category");
}
