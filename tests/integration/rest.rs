//! The REST contract as a table of scenarios: each runs on a fresh server, after its setup
//! requests, and checks the status, the body, the change events and what a later read shows.

use serde_json::{Value, json};

use tablecast::http::PROBLEM_JSON;

use crate::common::{Fixture, TestServer};

enum Expect {
    /// The body is exactly this JSON.
    Exact(Value),
    /// Every field given here is in the body with this value (timestamps and generated ids vary).
    Subset(Value),
    /// A problem+json with this stable code and, at least, these fields.
    Problem(&'static str, Value),
    /// No body.
    Empty,
}

struct Scenario {
    name: &'static str,
    setup: &'static [(&'static str, &'static str, &'static str)],
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    status: u16,
    expect: Expect,
    /// Change events the request must produce, as `put Item/a` or `delete Item/a`.
    events: &'static [&'static str],
    /// A GET after the request, and what it must answer.
    then: Option<(&'static str, u16, Expect)>,
}

const A: (&str, &str, &str) = ("PUT", "/Item/a", r#"{"name":"apple","qty":3}"#);
const B: (&str, &str, &str) = (
    "PUT",
    "/Item/b",
    r#"{"id":"b","name":"banana","tags":["x","y"]}"#,
);

/// A GET of `/Item/a` after creating `a` and `b`; each scenario overrides what it needs.
fn base() -> Scenario {
    Scenario {
        name: "",
        setup: &[A, B],
        method: "GET",
        path: "/Item/a",
        headers: &[],
        body: None,
        status: 200,
        expect: Expect::Empty,
        events: &[],
        then: None,
    }
}

fn scenarios() -> Vec<Scenario> {
    let apple = json!({"id":"a","name":"apple","qty":3});
    let not_written = || {
        Some((
            "/Item/a",
            200,
            Expect::Exact(json!({"id":"a","name":"apple","qty":3})),
        ))
    };
    vec![
        // GET /T/id
        Scenario {
            name: "get a record",
            expect: Expect::Exact(apple.clone()),
            ..base()
        },
        Scenario {
            name: "head a record",
            method: "HEAD",
            ..base()
        },
        Scenario {
            name: "get a missing record",
            path: "/Item/zz",
            status: 404,
            expect: Expect::Problem("record-not-found", json!({})),
            ..base()
        },
        Scenario {
            name: "percent-encoded id",
            setup: &[("PUT", "/Item/a%2Fb%20c", r#"{"name":"slash"}"#)],
            path: "/Item/a%2Fb%20c",
            expect: Expect::Exact(json!({"id":"a/b c","name":"slash"})),
            ..base()
        },
        Scenario {
            name: "unicode id",
            setup: &[("PUT", "/Item/%C3%A9t%C3%A9", r#"{"name":"summer"}"#)],
            path: "/Item/été",
            expect: Expect::Exact(json!({"id":"été","name":"summer"})),
            ..base()
        },
        // PUT /T/id
        Scenario {
            name: "put creates",
            setup: &[],
            method: "PUT",
            path: "/Item/c",
            body: Some(r#"{"name":"cherry"}"#),
            status: 204,
            events: &["put Item/c"],
            then: Some((
                "/Item/c",
                200,
                Expect::Exact(json!({"id":"c","name":"cherry"})),
            )),
            ..base()
        },
        Scenario {
            name: "put replaces",
            method: "PUT",
            body: Some(r#"{"id":"a","name":"avocado"}"#),
            status: 204,
            events: &["put Item/a"],
            then: Some((
                "/Item/a",
                200,
                Expect::Exact(json!({"id":"a","name":"avocado"})),
            )),
            ..base()
        },
        Scenario {
            name: "put returns the record when asked",
            method: "PUT",
            headers: &[("prefer", "return=representation")],
            body: Some(r#"{"name":"apricot"}"#),
            expect: Expect::Exact(json!({"id":"a","name":"apricot"})),
            events: &["put Item/a"],
            ..base()
        },
        Scenario {
            name: "put with timestamps",
            setup: &[],
            method: "PUT",
            path: "/Counter/7",
            headers: &[("prefer", "return=representation")],
            body: Some(r#"{"label":"seven"}"#),
            expect: Expect::Subset(json!({"n":7,"label":"seven"})),
            events: &["put Counter/7"],
            ..base()
        },
        // PATCH /T/id
        Scenario {
            name: "patch merges",
            method: "PATCH",
            headers: &[("content-type", "application/merge-patch+json")],
            body: Some(r#"{"qty":null,"tags":["t"]}"#),
            status: 204,
            events: &["put Item/a"],
            then: Some((
                "/Item/a",
                200,
                Expect::Exact(json!({"id":"a","name":"apple","tags":["t"]})),
            )),
            ..base()
        },
        Scenario {
            name: "patch returns the record when asked",
            method: "PATCH",
            headers: &[("prefer", "return=representation")],
            body: Some(r#"{"dims":{"w":2}}"#),
            expect: Expect::Exact(json!({"id":"a","name":"apple","qty":3,"dims":{"w":2}})),
            events: &["put Item/a"],
            ..base()
        },
        Scenario {
            name: "patch a missing record",
            method: "PATCH",
            path: "/Item/zz",
            body: Some(r#"{"qty":1}"#),
            status: 404,
            expect: Expect::Problem("record-not-found", json!({})),
            then: Some((
                "/Item/zz",
                404,
                Expect::Problem("record-not-found", json!({})),
            )),
            ..base()
        },
        Scenario {
            name: "patch into a schema violation",
            method: "PATCH",
            body: Some(r#"{"name":null}"#),
            status: 422,
            expect: Expect::Problem("schema-violation", json!({"errors":[{"pointer":""}]})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "patch that changes the key",
            method: "PATCH",
            body: Some(r#"{"id":"b"}"#),
            status: 400,
            expect: Expect::Problem("key-mismatch", json!({})),
            then: not_written(),
            ..base()
        },
        // POST /T/
        Scenario {
            name: "post generates a string key",
            method: "POST",
            path: "/Item/",
            body: Some(r#"{"name":"date"}"#),
            status: 201,
            expect: Expect::Subset(json!({"name":"date"})),
            events: &["put Item/*"],
            ..base()
        },
        Scenario {
            name: "post generates the next integer key",
            setup: &[("PUT", "/Counter/41", "{}")],
            method: "POST",
            path: "/Counter/",
            body: Some("{}"),
            status: 201,
            expect: Expect::Subset(json!({"n":42})),
            events: &["put Counter/42"],
            ..base()
        },
        Scenario {
            name: "post with a key",
            method: "POST",
            path: "/Item/",
            body: Some(r#"{"id":"q","name":"q"}"#),
            status: 400,
            expect: Expect::Problem("key-in-body", json!({})),
            then: Some((
                "/Item/q",
                404,
                Expect::Problem("record-not-found", json!({})),
            )),
            ..base()
        },
        // DELETE /T/id
        Scenario {
            name: "delete",
            method: "DELETE",
            status: 204,
            events: &["delete Item/a"],
            then: Some((
                "/Item/a",
                404,
                Expect::Problem("record-not-found", json!({})),
            )),
            ..base()
        },
        Scenario {
            name: "delete a missing record",
            method: "DELETE",
            path: "/Item/zz",
            status: 404,
            expect: Expect::Problem("record-not-found", json!({})),
            ..base()
        },
        // GET /T and GET /T/
        Scenario {
            name: "describe",
            path: "/Item",
            expect: Expect::Subset(
                json!({"name":"Item","primaryKey":"id","keyType":"string","indexes":["tags"],"timestamps":false,"recordCount":2}),
            ),
            ..base()
        },
        Scenario {
            name: "list in key order",
            setup: &[B, A],
            path: "/Item/",
            expect: Expect::Exact(json!([apple, {"id":"b","name":"banana","tags":["x","y"]}])),
            ..base()
        },
        Scenario {
            name: "list an empty table",
            setup: &[],
            path: "/Item/",
            expect: Expect::Exact(json!([])),
            ..base()
        },
        Scenario {
            name: "list with limit(n)",
            path: "/Item/?limit(1)",
            expect: Expect::Exact(json!([apple])),
            ..base()
        },
        Scenario {
            name: "list with limit(start,end)",
            path: "/Item/?limit(1,5)",
            expect: Expect::Exact(json!([{"id":"b","name":"banana","tags":["x","y"]}])),
            ..base()
        },
        Scenario {
            name: "integer keys list in numeric order",
            setup: &[
                ("PUT", "/Counter/10", "{}"),
                ("PUT", "/Counter/-5", "{}"),
                ("PUT", "/Counter/3", "{}"),
            ],
            path: "/Counter/",
            expect: Expect::Subset(json!([{"n":-5},{"n":3},{"n":10}])),
            ..base()
        },
        Scenario {
            name: "health",
            path: "/_health",
            expect: Expect::Exact(json!({"status":"ok"})),
            ..base()
        },
        // Bad input: a clear problem, and nothing written.
        Scenario {
            name: "malformed JSON",
            method: "PUT",
            body: Some("{\n  \"name\": \"x\",\n}"),
            status: 400,
            expect: Expect::Problem("malformed-json", json!({"line":3,"column":1})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "empty body",
            method: "PUT",
            body: Some(""),
            status: 400,
            expect: Expect::Problem("malformed-json", json!({})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "schema violations, all of them",
            method: "PUT",
            body: Some(r#"{"name":"","qty":-1,"extra":true}"#),
            status: 422,
            expect: Expect::Problem(
                "schema-violation",
                json!({"errors":[{"pointer":"/name"},{"pointer":"/qty"},{"pointer":"/extra","message":"property `extra` is not allowed here"}]}),
            ),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "a body that is not an object",
            method: "PUT",
            body: Some("[1,2]"),
            status: 422,
            expect: Expect::Problem("schema-violation", json!({"errors":[{"pointer":""}]})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "body key disagrees with the URL",
            method: "PUT",
            body: Some(r#"{"id":"b","name":"x"}"#),
            status: 400,
            expect: Expect::Problem("key-mismatch", json!({})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "body key of the wrong type",
            setup: &[],
            method: "PUT",
            path: "/Counter/1",
            body: Some(r#"{"n":"1"}"#),
            status: 400,
            expect: Expect::Problem("key-mismatch", json!({})),
            ..base()
        },
        Scenario {
            name: "unknown table",
            path: "/Nope/1",
            status: 404,
            expect: Expect::Problem("unknown-table", json!({})),
            ..base()
        },
        Scenario {
            name: "unknown table, write",
            method: "PUT",
            path: "/Nope/1",
            body: Some("{}"),
            status: 404,
            expect: Expect::Problem("unknown-table", json!({})),
            ..base()
        },
        Scenario {
            name: "unknown table, describe",
            path: "/Nope",
            status: 404,
            expect: Expect::Problem("unknown-table", json!({})),
            ..base()
        },
        Scenario {
            name: "unknown table, list",
            path: "/Nope/",
            status: 404,
            expect: Expect::Problem("unknown-table", json!({})),
            ..base()
        },
        Scenario {
            name: "reserved name",
            path: "/_admin",
            status: 404,
            expect: Expect::Problem("unknown-table", json!({})),
            ..base()
        },
        Scenario {
            name: "no such route",
            path: "/Item/a/b",
            status: 404,
            expect: Expect::Problem("no-route", json!({})),
            ..base()
        },
        Scenario {
            name: "root",
            path: "/",
            status: 404,
            expect: Expect::Problem("no-route", json!({})),
            ..base()
        },
        Scenario {
            name: "wrong method on a record",
            method: "POST",
            body: Some("{}"),
            status: 405,
            expect: Expect::Problem("method-not-allowed", json!({})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "wrong method on a table",
            method: "DELETE",
            path: "/Item/",
            status: 405,
            expect: Expect::Problem("method-not-allowed", json!({})),
            ..base()
        },
        Scenario {
            name: "wrong content type",
            method: "PUT",
            headers: &[("content-type", "text/plain")],
            body: Some(r#"{"name":"x"}"#),
            status: 415,
            expect: Expect::Problem("unsupported-media-type", json!({})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "form content type",
            method: "PUT",
            headers: &[("content-type", "application/x-www-form-urlencoded")],
            body: Some(r#"{"name":"x"}"#),
            status: 415,
            expect: Expect::Problem("unsupported-media-type", json!({})),
            then: not_written(),
            ..base()
        },
        Scenario {
            name: "integer id that is not a number",
            setup: &[],
            path: "/Counter/abc",
            status: 400,
            expect: Expect::Problem("invalid-id", json!({})),
            ..base()
        },
        Scenario {
            name: "integer id not written canonically",
            setup: &[],
            path: "/Counter/007",
            status: 400,
            expect: Expect::Problem("invalid-id", json!({})),
            ..base()
        },
        Scenario {
            name: "integer id out of range",
            setup: &[],
            method: "PUT",
            path: "/Counter/9223372036854775808",
            body: Some("{}"),
            status: 400,
            expect: Expect::Problem("invalid-id", json!({})),
            ..base()
        },
        Scenario {
            name: "string id too long",
            method: "PUT",
            path: Box::leak(format!("/Item/{}", "k".repeat(513)).into_boxed_str()),
            body: Some(r#"{"name":"x"}"#),
            status: 400,
            expect: Expect::Problem("invalid-id", json!({})),
            ..base()
        },
        Scenario {
            name: "bad query",
            path: "/Item/?limit(5,2)",
            status: 400,
            expect: Expect::Problem("bad-query", json!({"position":8,"token":"2"})),
            ..base()
        },
        Scenario {
            name: "deeply nested query",
            path: Box::leak(
                format!("/Item/?{}name=a{}", "(".repeat(20_000), ")".repeat(20_000))
                    .into_boxed_str(),
            ),
            status: 400,
            expect: Expect::Problem("bad-query", json!({"position":32,"token":"("})),
            ..base()
        },
        Scenario {
            name: "query by attribute",
            path: "/Item/?name=apple",
            expect: Expect::Exact(json!([apple])),
            ..base()
        },
        Scenario {
            name: "query an attribute the schema forbids",
            path: "/Item/?color=red",
            status: 400,
            expect: Expect::Problem("bad-query", json!({"position":0,"token":"color"})),
            ..base()
        },
        Scenario {
            name: "query value of the wrong type",
            path: "/Item/?qty=gt=many",
            status: 400,
            expect: Expect::Problem("bad-query", json!({"position":7,"token":"many"})),
            ..base()
        },
        Scenario {
            name: "listing in a format we do not offer",
            path: "/Item/",
            headers: &[("accept", "application/xml")],
            status: 406,
            expect: Expect::Problem("not-acceptable", json!({})),
            ..base()
        },
    ]
}

#[tokio::test]
async fn rest_scenarios() {
    let mut failures = Vec::new();
    for scenario in scenarios() {
        failures.extend(run(scenario).await);
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What did not hold in one scenario, each line naming the scenario.
struct Mismatches {
    scenario: &'static str,
    lines: Vec<String>,
}

impl Mismatches {
    fn expect(&mut self, holds: bool, what: impl std::fmt::Display) {
        if !holds {
            self.lines.push(format!("{}: {what}", self.scenario));
        }
    }
}

/// Runs `scenario` on a fresh server; returns what did not hold, every row of it.
async fn run(scenario: Scenario) -> Vec<String> {
    let mut mismatches = Mismatches {
        scenario: scenario.name,
        lines: Vec::new(),
    };
    let fixture = Fixture::new();
    let mut server = fixture.start().await;
    for (method, path, body) in scenario.setup {
        let response = request(&server, method, path, &[], Some(body)).await;
        let status = response.status();
        mismatches.expect(
            status.is_success(),
            format!("setup {method} {path} answered {status}"),
        );
    }
    server.drain_events();

    let response = request(
        &server,
        scenario.method,
        scenario.path,
        scenario.headers,
        scenario.body,
    )
    .await;
    if scenario.status == 405 {
        mismatches.expect(
            response.headers().contains_key("allow"),
            "405 without an Allow header",
        );
    }
    check(
        &mut mismatches,
        "",
        response,
        scenario.status,
        &scenario.expect,
    )
    .await;

    let events: Vec<String> = server
        .drain_events()
        .iter()
        .map(|e| {
            format!(
                "{} {}/{}",
                if e.value.is_some() { "put" } else { "delete" },
                e.table,
                e.id
            )
        })
        .collect();
    let matches = |(event, expected): (&String, &&str)| match expected.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => event == expected,
    };
    mismatches.expect(
        events.len() == scenario.events.len() && events.iter().zip(scenario.events).all(matches),
        format!("events {events:?}, expected {:?}", scenario.events),
    );

    if let Some((path, status, expect)) = &scenario.then {
        let response = request(&server, "GET", path, &[], None).await;
        check(
            &mut mismatches,
            &format!("then GET {path}: "),
            response,
            *status,
            expect,
        )
        .await;
    }
    server.stop().await;
    mismatches.lines
}

async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> reqwest::Response {
    let mut builder = server
        .client
        .request(method.parse().expect("method"), server.url(path));
    if body.is_some() && !headers.iter().any(|(h, _)| *h == "content-type") {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = body {
        builder = builder.body(body.to_owned());
    }
    builder.send().await.expect("request")
}

/// Checks an answer's status and body against what the scenario expects; `what` says which
/// request of the scenario it answered.
async fn check(
    mismatches: &mut Mismatches,
    what: &str,
    response: reqwest::Response,
    status: u16,
    expect: &Expect,
) {
    let found = response.status().as_u16();
    mismatches.expect(
        found == status,
        format!("{what}status {found}, expected {status}"),
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.expect("body");
    let json = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    match expect {
        Expect::Empty => mismatches.expect(
            body.is_empty(),
            format!("{what}expected no body, got {body:?}"),
        ),
        Expect::Exact(expected) => {
            let body = json();
            mismatches.expect(
                body == *expected,
                format!("{what}body {body}, expected {expected}"),
            );
        }
        Expect::Subset(expected) => {
            let body = json();
            mismatches.expect(
                subset(expected, &body),
                format!("{what}{body} does not contain {expected}"),
            );
        }
        Expect::Problem(code, fields) => {
            mismatches.expect(
                content_type == PROBLEM_JSON,
                format!("{what}Content-Type {content_type:?}, expected {PROBLEM_JSON}"),
            );
            let problem =
                json!({"type": format!("urn:tablecast:problem:{code}"), "status": status});
            let body = json();
            mismatches.expect(
                subset(&problem, &body) && subset(fields, &body),
                format!("{what}{body} is not a {code} problem with {fields}"),
            );
            mismatches.expect(
                body["title"].is_string() && body["detail"].is_string(),
                format!("{what}{body} lacks a title or a detail"),
            );
        }
    }
}

/// Whether `actual` has everything `expected` has (objects by field, arrays element-wise).
fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| subset(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| subset(e, a))
        }
        _ => expected == actual,
    }
}
