//! The rows of the REST contract: each a request on a fresh server after its setup, and what
//! it must answer (see `rest.rs` for how they run).

use serde_json::json;

use crate::rest::{A, B, Expect, Scenario, base};

/// Every scenario, grouped by route.
pub fn scenarios() -> Vec<Scenario> {
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
            expect: Expect::Problem(
                "schema-violation",
                json!({"errors":[{"pointer":"/name","message":"property `name` is required"}]}),
            ),
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
