//! Schemas change under stored records: a start checks them, `tablecast check` does it offline,
//! a changed key type is refused with the file and pointer, and defaults fill new records.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{Fixture, client, expect_problem, tablecast_command};

const ORDER: &str = r#"{"type":"object","properties":{"id":{"type":"string"},
    "status":{"enum":["pending","paid","shipped","lost"]},"total":{"type":"number"}},
    "required":["id","status"]}"#;
/// `ORDER` tightened: `lost` is no longer a status, and every order needs a total.
const TIGHTER: &str = r#"{"type":"object","properties":{"id":{"type":"string"},
    "status":{"enum":["pending","paid","shipped"]},"total":{"type":"number"},
    "note":{"type":"string"}},"required":["id","status","total"]}"#;

fn write_schema(dir: &Path, text: &str) {
    std::fs::write(dir.join("Order.json"), text).expect("write schema");
}

async fn orders(fixture: &Fixture) {
    let server = fixture.spawn();
    let http = client();
    for (id, body) in [
        ("a", json!({"status": "paid", "total": 3})),
        ("b", json!({"status": "lost", "total": 4})),
        ("c", json!({"status": "pending"})),
    ] {
        let put = http
            .put(server.url(&format!("/Order/{id}")))
            .json(&body)
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), 204);
    }
}

fn check(fixture: &Fixture) -> (bool, String) {
    let output = tablecast_command(&["check"], fixture.schemas.path(), fixture.data.path())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

#[tokio::test]
async fn a_tighter_schema_is_checked_against_the_stored_records() {
    let fixture = Fixture::with_schemas(&[("Order", ORDER)]);
    orders(&fixture).await;
    let (valid, out) = check(&fixture);
    assert!(valid, "{out}");
    assert!(out.contains("Order: 3 records, all valid"), "{out}");

    write_schema(fixture.schemas.path(), TIGHTER);
    let (valid, out) = check(&fixture);
    assert!(!valid, "{out}");
    assert!(
        out.contains("Order: 2 of 3 records break the schema"),
        "{out}"
    );
    assert!(
        out.contains(r#"Order/b#/status: "lost" is not one of the allowed values: "pending", "paid", "shipped""#),
        "{out}"
    );
    assert!(
        out.contains("Order/c#/total: property `total` is required"),
        "{out}"
    );

    let refused = tablecast_command(
        &["serve", "--http", "127.0.0.1:0", "--schema-check", "refuse"],
        fixture.schemas.path(),
        fixture.data.path(),
    )
    .output()
    .expect("runs");
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "nothing listens");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Order: 2 of 3 records"), "{stderr}");
    assert!(stderr.contains("--schema-check warn"), "{stderr}");

    // The default, warn: served as stored, with the count in GET /T.
    let server = fixture.spawn();
    let http = client();
    let table: Value = http
        .get(server.url("/Order"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let found = &table["schemaCheck"];
    assert_eq!(found["records"], 3, "{table}");
    assert_eq!(found["breaking"], 2, "{table}");
    assert_eq!(found["examples"][0]["id"], "b", "{table}");
    assert_eq!(found["examples"][0]["pointer"], "/status", "{table}");
    let old = http.get(server.url("/Order/b")).send().await.expect("GET");
    assert_eq!(old.status(), 200, "a breaking record is still served");

    // Once the records are fixed, the next start finds nothing.
    for (id, body) in [
        ("b", json!({"status": "shipped", "total": 4})),
        ("c", json!({"status": "pending", "total": 1})),
    ] {
        let put = http
            .put(server.url(&format!("/Order/{id}")))
            .json(&body)
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), 204);
    }
    drop(server);
    let server = fixture.spawn();
    let table: Value = http
        .get(server.url("/Order"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(table["schemaCheck"]["breaking"], 0, "{table}");
}

#[test]
fn a_changed_key_type_names_the_file_and_pointer() {
    let fixture = Fixture::with_schemas(&[("Order", ORDER)]);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(orders(&fixture));
    write_schema(
        fixture.schemas.path(),
        &ORDER.replace(r#""id":{"type":"string"}"#, r#""id":{"type":"integer"}"#),
    );
    let output = tablecast_command(
        &["serve", "--http", "127.0.0.1:0"],
        fixture.schemas.path(),
        fixture.data.path(),
    )
    .output()
    .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "Order.json#/properties/id/type: table `Order` holds 3 records with string keys"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("storage failure"), "{stderr}");
    let (valid, out) = check(&fixture);
    assert!(!valid);
    assert!(out.contains("Order.json#/properties/id/type"), "{out}");
}

#[tokio::test]
async fn defaults_fill_the_properties_a_new_record_leaves_out() {
    let fixture = Fixture::with_schemas(&[(
        "Order",
        r#"{"type":"object","properties":{"id":{"type":"integer"},
            "status":{"enum":["pending","paid"],"default":"pending"},
            "ship":{"type":"object","properties":{"by":{"type":"string","default":"post"},"to":{"type":"string"}}},
            "total":{"type":"number"}},"required":["id","status"]}"#,
    )]);
    let server = fixture.start().await;
    let http = client();
    let created = http
        .post(server.url("/Order/"))
        .json(&json!({"total": 5, "ship": {"to": "Oslo"}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    assert_eq!(
        created,
        json!({"id": 1, "total": 5, "ship": {"to": "Oslo", "by": "post"}, "status": "pending"})
    );

    let put = http
        .put(server.url("/Order/7"))
        .header("Prefer", "return=representation")
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 200);
    assert_eq!(
        put.json::<Value>().await.expect("JSON"),
        json!({"id": 7, "status": "paid"})
    );

    // A replacement is not an insert: what it leaves out stays out, so a required property
    // with a default must be sent.
    let replaced = http
        .put(server.url("/Order/7"))
        .json(&json!({"total": 1}))
        .send()
        .await
        .expect("PUT");
    let problem = expect_problem(replaced, 422, "schema-violation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/status", "{problem}");
    assert_eq!(
        problem["errors"][0]["message"], "property `status` is required",
        "{problem}"
    );
}
