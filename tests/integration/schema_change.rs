//! Schemas change under stored records: a start checks them, `tablecast check` does it offline,
//! a changed key type is refused with the file and pointer, SIGHUP reloads compatible changes,
//! and defaults fill new records.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::common::{Fixture, Process, client, expect_problem, failed_start, tablecast_command};

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
    put_orders(
        &server,
        [
            ("a", json!({"status": "paid", "total": 3})),
            ("b", json!({"status": "lost", "total": 4})),
            ("c", json!({"status": "pending"})),
        ],
    )
    .await;
}

/// PUTs each order, which must be stored.
async fn put_orders<const N: usize>(server: &Process, orders: [(&str, Value); N]) {
    let http = client();
    for (id, body) in orders {
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

    let refused = failed_start(&fixture, &["--schema-check", "refuse"]);
    assert!(refused.stdout.is_empty(), "nothing listens");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Order: 2 of 3 records"), "{stderr}");
    assert!(stderr.contains("--schema-check warn"), "{stderr}");

    // The default, warn: served as stored, with the count in GET /T.
    let server = fixture.spawn();
    let http = client();
    let table = describe(&server).await;
    let found = &table["schemaCheck"];
    assert_eq!(found["records"], 3, "{table}");
    assert_eq!(found["breaking"], 2, "{table}");
    assert_eq!(found["examples"][0]["id"], "b", "{table}");
    assert_eq!(found["examples"][0]["pointer"], "/status", "{table}");
    let old = http.get(server.url("/Order/b")).send().await.expect("GET");
    assert_eq!(old.status(), 200, "a breaking record is still served");

    // Once the records are fixed, the next start finds nothing.
    put_orders(
        &server,
        [
            ("b", json!({"status": "shipped", "total": 4})),
            ("c", json!({"status": "pending", "total": 1})),
        ],
    )
    .await;
    drop(server);
    let server = fixture.spawn();
    let table = describe(&server).await;
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
    let output = failed_start(&fixture, &[]);
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

/// `GET /Order`: the table's description.
async fn describe(server: &Process) -> Value {
    let answer = client()
        .get(server.url("/Order"))
        .send()
        .await
        .expect("GET");
    answer.json().await.expect("JSON")
}

/// The real binary, with its log lines (at `info`) as they come.
fn spawn_logged(fixture: &Fixture) -> (Process, std::sync::mpsc::Receiver<String>) {
    let mut command = tablecast_command(
        &["serve", "--http", "127.0.0.1:0", "--mqtt", "off"],
        fixture.schemas.path(),
        fixture.data.path(),
    );
    command.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut server = Process::spawn_with(command);
    let lines = log_lines(&mut server);
    (server, lines)
}

/// The server's log lines, as they come.
fn log_lines(process: &mut Process) -> std::sync::mpsc::Receiver<String> {
    let stderr = process.child.stderr.take().expect("stderr is piped");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// The first log line that contains `wanted`, and the lines before it.
fn logged(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no log line with {wanted:?} in {seen:#?}"));
        let found = line.contains(wanted);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

fn hang_up(process: &Process) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &process.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_compatible_schemas_and_refuses_the_rest() {
    let strict = ORDER.replace(
        r#""required""#,
        r#""additionalProperties":false,"required""#,
    );
    let fixture = Fixture::with_schemas(&[("Order", &strict)]);
    let (server, lines) = spawn_logged(&fixture);
    let http = client();
    let put = async |id: &str, body: Value| {
        http.put(server.url(&format!("/Order/{id}")))
            .json(&body)
            .send()
            .await
            .expect("PUT")
    };
    assert_eq!(
        put("a", json!({"status": "lost", "total": 3}))
            .await
            .status(),
        204
    );
    let noted = json!({"status": "paid", "note": "gift"});
    expect_problem(put("b", noted.clone()).await, 422, "schema-violation").await;

    // Looser: a new optional property. Taken without a restart.
    let looser = strict.replace(
        r#""total":{"type":"number"}"#,
        r#""total":{"type":"number"},"note":{"type":"string","maxLength":20}"#,
    );
    write_schema(fixture.schemas.path(), &looser);
    hang_up(&server);
    let log = logged(&lines, "schemas reloaded");
    assert!(log.last().unwrap().contains("Order"), "{log:#?}");
    assert_eq!(put("b", noted).await.status(), 204);
    let table = describe(&server).await;
    assert!(table["schema"]["properties"]["note"].is_object(), "{table}");

    // Tighter where a stored record would break it: refused, with the reason; the running
    // schema stays.
    write_schema(fixture.schemas.path(), &looser.replace(r#","lost"]"#, "]"));
    hang_up(&server);
    let log = logged(&lines, "the schemas were not reloaded").join("\n");
    assert!(
        log.contains(r#"1 of 2 stored records would break it, first: Order/a#/status: "lost" is not one of the allowed values"#),
        "{log}"
    );
    assert_eq!(put("c", json!({"status": "lost"})).await.status(), 204);

    // A new index changes storage: refused until a restart.
    write_schema(
        fixture.schemas.path(),
        &looser.replace(
            r#"{"type":"object","#,
            r#"{"type":"object","x-table":{"indexes":["status"]},"#,
        ),
    );
    hang_up(&server);
    let log = logged(&lines, "the schemas were not reloaded").join("\n");
    assert!(
        log.contains(r#"Order.json#/x-table: new index ["status"]"#) && log.contains("restart"),
        "{log}"
    );

    // A schema file that does not load leaves everything as it is.
    write_schema(fixture.schemas.path(), "{");
    hang_up(&server);
    let log = logged(&lines, "the schemas were not reloaded").join("\n");
    assert!(log.contains("Order.json: not valid JSON"), "{log}");
    assert_eq!(
        put("d", json!({"status": "paid", "note": "still"}))
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn a_reload_is_refused_only_for_records_it_would_newly_break() {
    let fixture = Fixture::with_schemas(&[("Order", ORDER)]);
    orders(&fixture).await;
    write_schema(fixture.schemas.path(), TIGHTER);
    let (server, lines) = spawn_logged(&fixture);
    // b and c break TIGHTER already; a new optional property breaks nothing more.
    write_schema(
        fixture.schemas.path(),
        &TIGHTER.replace(
            r#""note":{"type":"string"}"#,
            r#""note":{"type":"string"},"gift":{"type":"boolean"}"#,
        ),
    );
    hang_up(&server);
    logged(&lines, "schemas reloaded");
    let table = describe(&server).await;
    assert!(table["schema"]["properties"]["gift"].is_object(), "{table}");
    assert_eq!(table["schemaCheck"]["breaking"], 2, "{table}");
    // Requiring `gift` would break a, which meets the running schema.
    write_schema(
        fixture.schemas.path(),
        &TIGHTER.replace(r#""total"]"#, r#""total","gift"]"#),
    );
    hang_up(&server);
    let log = logged(&lines, "the schemas were not reloaded").join("\n");
    assert!(
        log.contains("1 of 3 stored records would break it, first: Order/a#/gift"),
        "{log}"
    );
}

#[tokio::test]
async fn check_writes_nothing_and_a_primary_key_default_is_ignored() {
    let fixture = Fixture::with_schemas(&[(
        "Order",
        r#"{"type":"object","x-table":{"timestamps":true},
            "properties":{"id":{"type":"integer","default":7},"status":{"type":"string","default":"new"},
            "createdAt":{"type":"integer","default":0}}}"#,
    )]);
    {
        let server = fixture.spawn();
        let created = client()
            .post(server.url("/Order/"))
            .json(&json!({}))
            .send()
            .await
            .expect("POST");
        assert_eq!(
            created.status(),
            201,
            "the key's default is the server's to set"
        );
        let created: Value = created.json().await.expect("JSON");
        assert_eq!(
            (&created["id"], &created["status"]),
            (&json!(1), &json!("new"))
        );
        assert_ne!(created["createdAt"], 0, "{created}");
    }
    // A new index: check reports on the records without building it; the next start does.
    let indexed = r#"{"type":"object","x-table":{"timestamps":true,"indexes":["status"]},
        "properties":{"id":{"type":"integer"},"status":{"type":"string"},"createdAt":{"type":"integer"}}}"#;
    write_schema(fixture.schemas.path(), indexed);
    let (valid, out) = check(&fixture);
    assert!(valid, "{out}");
    assert!(out.contains("Order: 1 record, all valid"), "{out}");
    let (server, lines) = spawn_logged(&fixture);
    drop(server);
    let log: Vec<String> = lines.iter().collect();
    assert!(
        log.iter().any(|line| line.contains("building indexes")),
        "{log:#?}"
    );
}
