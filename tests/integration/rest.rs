//! The REST contract as a table of scenarios: each runs on a fresh server, after its setup
//! requests, and checks the status, the body, the change events and what a later read shows.

use serde_json::{Value, json};
use tablecast::http::PROBLEM_JSON;

use crate::common::{Fixture, TestServer};

/// What an answer's body must be.
pub enum Expect {
    /// The body is exactly this JSON.
    Exact(Value),
    /// Every field given here is in the body with this value (timestamps and generated ids vary).
    Subset(Value),
    /// A problem+json with this stable code and, at least, these fields.
    Problem(&'static str, Value),
    /// No body.
    Empty,
}

/// One row: a request after its setup, and what it must answer.
pub struct Scenario {
    pub name: &'static str,
    /// Requests made first, each of which must succeed: method, path, JSON body.
    pub setup: &'static [(&'static str, &'static str, &'static str)],
    pub method: &'static str,
    pub path: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    pub body: Option<&'static str>,
    pub status: u16,
    pub expect: Expect,
    /// Change events the request must produce, as `put Item/a` or `delete Item/a`.
    pub events: &'static [&'static str],
    /// A GET after the request, and what it must answer.
    pub then: Option<(&'static str, u16, Expect)>,
}

/// Setup requests most scenarios share.
pub const A: (&str, &str, &str) = ("PUT", "/Item/a", r#"{"name":"apple","qty":3}"#);
pub const B: (&str, &str, &str) = (
    "PUT",
    "/Item/b",
    r#"{"id":"b","name":"banana","tags":["x","y"]}"#,
);

/// A GET of `/Item/a` after creating `a` and `b`; each scenario overrides what it needs.
pub fn base() -> Scenario {
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

#[tokio::test]
async fn rest_scenarios() {
    let mut failures = Vec::new();
    for scenario in crate::rest_scenarios::scenarios() {
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
