//! References and relations (REST `select()` and GraphQL), and `/graphql` driven over HTTP as a
//! client would: queries, paging, mutations through the write path, errors, limits, `ETag`s,
//! persisted queries, the result cache and its invalidation, cache tables behind GraphQL.

use std::collections::BTreeSet;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

use crate::common::{Fixture, TestServer, client, put};
use crate::origin::Origin;

pub const CATEGORY: &str = r#"{
  "type": "object",
  "x-table": {
    "indexes": ["parent"],
    "relations": {
      "products": { "table": "Product", "by": "category" },
      "children": { "table": "Category", "by": "parent" }
    }
  },
  "properties": {
    "id": { "type": "string" },
    "name": { "type": "string", "minLength": 1 },
    "parent": { "type": ["string", "null"], "x-references": "Category" }
  },
  "required": ["id", "name"],
  "additionalProperties": false
}"#;

pub const PRODUCT: &str = r#"{
  "type": "object",
  "x-table": { "indexes": ["category", "price", "tags"] },
  "properties": {
    "id": { "type": "integer", "minimum": 1 },
    "name": { "type": "string", "minLength": 1 },
    "category": { "type": "string", "x-references": "Category" },
    "price": { "type": "number", "minimum": 0 },
    "currency": { "type": "string", "enum": ["EUR", "USD"] },
    "tags": { "type": "array", "items": { "type": "string" } },
    "dims": { "type": "object", "properties": { "w": { "type": "number" }, "h": { "type": "number" } } },
    "inStock": { "type": "boolean" }
  },
  "required": ["id", "name", "price"]
}"#;

pub fn fixture() -> Fixture {
    Fixture::with_schemas(&[("Category", CATEGORY), ("Product", PRODUCT)])
}

/// Categories `lighting` (under `home`) and `home`, and products 1..=5.
pub async fn seed(server: &TestServer) {
    put(
        server,
        "/Category/home",
        json!({"id": "home", "name": "Home"}),
    )
    .await;
    put(
        server,
        "/Category/lighting",
        json!({"id": "lighting", "name": "Lighting", "parent": "home"}),
    )
    .await;
    let products = [
        (1, "Lamp", "lighting", 20.0, vec!["desk", "led"]),
        (2, "Bulb", "lighting", 3.5, vec!["led"]),
        (3, "Shelf", "home", 80.0, vec![]),
        (4, "Chair", "gone", 45.0, vec!["wood"]),
        (5, "Rug", "home", 120.0, vec!["wool"]),
    ];
    for (id, name, category, price, tags) in products {
        let record = json!({"id": id, "name": name, "category": category, "price": price, "tags": tags, "currency": "EUR", "dims": {"w": id, "h": 2}});
        put(server, &format!("/Product/{id}"), record).await;
    }
}

/// POSTs `query` with `variables`; the status and the response.
pub async fn graphql(server: &TestServer, query: &str, variables: Value) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("POST /graphql");
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/graphql-response+json");
    (status, response.json().await.expect("a JSON answer"))
}

/// The `data` of a query that must succeed.
pub async fn data(server: &TestServer, query: &str, variables: Value) -> Value {
    let (status, answer) = graphql(server, query, variables).await;
    assert_eq!(status, 200, "{answer:#}");
    assert!(answer.get("errors").is_none(), "{answer:#}");
    answer["data"].clone()
}

async fn rest(server: &TestServer, path: &str) -> Value {
    let response = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn rest_select_expands_references_and_relations() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    let listed = rest(
        &server,
        "/Product/?select(name,category{name,parent{name}})&limit(4)",
    )
    .await;
    assert_eq!(
        listed,
        json!([
            {"name": "Lamp", "category": {"name": "Lighting", "parent": {"name": "Home"}}},
            {"name": "Bulb", "category": {"name": "Lighting", "parent": {"name": "Home"}}},
            {"name": "Shelf", "category": {"name": "Home", "parent": null}},
            // A dangling reference is null, not an error.
            {"name": "Chair", "category": null},
        ])
    );
    let categories = rest(&server, "/Category/?select(id,products{name},children{id})").await;
    assert_eq!(
        categories,
        json!([
            {"id": "home", "products": [{"name": "Shelf"}, {"name": "Rug"}], "children": [{"id": "lighting"}]},
            {"id": "lighting", "products": [{"name": "Lamp"}, {"name": "Bulb"}], "children": []},
        ])
    );
    // Without nested properties, a reference is its id, as stored.
    let plain = rest(&server, "/Product/?select(name,category)&limit(1)").await;
    assert_eq!(plain, json!([{"name": "Lamp", "category": "lighting"}]));
    server.stop().await;
}

#[test]
fn start_up_refuses_a_relation_without_its_index() {
    let product = PRODUCT.replace(
        r#""indexes": ["category", "price", "tags"]"#,
        r#""indexes": ["price"]"#,
    );
    let fixture = Fixture::with_schemas(&[("Category", CATEGORY), ("Product", &product)]);
    let output = crate::common::failed_start(&fixture, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "Category.json#/x-table/relations/products/by: `Product.category` is not indexed"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn queries_follow_references_and_relations_and_page() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    let found = data(
        &server,
        "query($id: ID!) { product(id: $id) { id name price currency tags dims { w h } category { id name parent { name } products(sort: \"-price\", first: 1) { name } } } missing: product(id: 99) { id } }",
        json!({"id": "1"}),
    )
    .await;
    assert_eq!(
        found,
        json!({
            "product": {
                "id": "1", "name": "Lamp", "price": 20.0, "currency": "EUR", "tags": ["desk", "led"],
                "dims": {"w": 1, "h": 2},
                "category": {"id": "lighting", "name": "Lighting", "parent": {"name": "Home"}, "products": [{"name": "Lamp"}]}
            },
            "missing": null
        })
    );
    // A page at a time, in key order: the cursor of one page starts the next.
    let page = "query($after: String) { productList(filter: \"price=gt=10\", first: 2, after: $after) { totalCount nodes { id } pageInfo { hasNextPage endCursor } } }";
    let first = data(&server, page, json!({})).await;
    assert_eq!(first["productList"]["totalCount"], 4);
    assert_eq!(
        first["productList"]["nodes"],
        json!([{"id": "1"}, {"id": "3"}])
    );
    assert_eq!(first["productList"]["pageInfo"]["hasNextPage"], true);
    let cursor = first["productList"]["pageInfo"]["endCursor"].clone();
    let second = data(&server, page, json!({"after": cursor})).await;
    assert_eq!(
        second["productList"]["nodes"],
        json!([{"id": "4"}, {"id": "5"}])
    );
    assert_eq!(second["productList"]["pageInfo"]["hasNextPage"], false);
    // Typed conditions on indexed attributes, sorted another way, with edges.
    let sorted = data(
        &server,
        "{ productList(where: {price: {ge: 20, lt: 100}, tags: {eq: \"led\"}}, sort: \"-price\") { edges { cursor node { name category { name } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        sorted["productList"]["edges"][0]["node"],
        json!({"name": "Lamp", "category": {"name": "Lighting"}})
    );
    assert_eq!(sorted["productList"]["edges"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn mutations_write_through_the_same_rules_and_nothing_on_failure() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    let created = data(
        &server,
        "mutation { putProduct(id: 7, record: {name: \"Vase\", price: 12, category: \"home\", currency: USD}) { id name currency category { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        created["putProduct"],
        json!({"id": "7", "name": "Vase", "currency": "USD", "category": {"name": "Home"}})
    );
    assert_eq!(rest(&server, "/Product/7").await["name"], "Vase");
    let patched = data(
        &server,
        "mutation { patchProduct(id: 7, patch: {price: 15, currency: null}) { price currency } }",
        json!({}),
    )
    .await;
    assert_eq!(
        patched["patchProduct"],
        json!({"price": 15, "currency": null})
    );
    let stored = rest(&server, "/Product/7").await;
    assert!(
        stored.get("currency").is_none(),
        "a null in a merge patch removes: {stored}"
    );

    let (status, refused) = graphql(
        &server,
        "mutation { putProduct(id: 8, record: {name: \"\", price: -1}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        status, 200,
        "a field error, not a request error: {refused:#}"
    );
    assert_eq!(refused["data"], json!({"putProduct": null}));
    let error = &refused["errors"][0];
    assert_eq!(error["extensions"]["code"], "schema-violation");
    assert_eq!(error["extensions"]["pointer"], "/name");
    assert_eq!(error["extensions"]["violations"][1]["pointer"], "/price");
    assert_eq!(error["path"], json!(["putProduct"]));
    let missing = server
        .client
        .get(server.url("/Product/8"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "nothing was written");

    let made = data(
        &server,
        "mutation { createCategory(record: {name: \"Garden\"}) { id name } }",
        json!({}),
    )
    .await;
    let id = made["createCategory"]["id"]
        .as_str()
        .expect("a generated id")
        .to_owned();
    assert_eq!(
        rest(&server, &format!("/Category/{id}")).await["name"],
        "Garden"
    );
    let deleted = data(
        &server,
        "mutation($id: ID!) { deleteCategory(id: $id) }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(deleted["deleteCategory"], true);
    let (_, again) = graphql(
        &server,
        "mutation($id: ID!) { deleteCategory(id: $id) }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "record-not-found");
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_runs() {
    let fixture = fixture();
    let mut config = fixture.config();
    config.graphql_max_depth = 4;
    config.graphql_max_aliases = 3;
    let server = TestServer::start(config).await;
    seed(&server).await;
    let cases = [
        ("{ product(id: 1) { name ", "GRAPHQL_PARSE_FAILED"),
        ("{ nosuch }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "{ product(id: 1) { price(x: 1) } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ product(id: 1) { category { parent { parent { parent { name } } } } } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ a: product(id: 1) { id } b: product(id: 2) { id } c: product(id: 3) { id } d: product(id: 4) { id } }",
            "LIMIT_EXCEEDED",
        ),
    ];
    for (query, code) in cases {
        let (status, answer) = graphql(&server, query, json!({})).await;
        assert_eq!(status, 400, "{query}: {answer:#}");
        assert!(
            answer.get("data").is_none(),
            "a request error has no data: {answer:#}"
        );
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], code,
            "{query}: {answer:#}"
        );
    }
    // A query language error is the field's: it names the argument and the position in it.
    let (status, answer) = graphql(
        &server,
        "{ productList(filter: \"price=gt=cheap\") { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "a field's error: {answer:#}");
    assert_eq!(
        answer["data"],
        Value::Null,
        "a non-null root field's null reaches data"
    );
    assert_eq!(answer["errors"][0]["path"], json!(["productList"]));
    let extensions = &answer["errors"][0]["extensions"];
    assert_eq!(extensions["argument"], "filter");
    assert_eq!(extensions["position"], 9);
    assert_eq!(extensions["token"], "cheap");
    // Not a GraphQL request at all: a problem, as everywhere else.
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", "text/plain")
        .body("{ product(id: 1) { id } }")
        .send()
        .await
        .unwrap();
    crate::common::expect_problem(response, 415, "unsupported-media-type").await;
    let response = server
        .client
        .get(server.url("/graphql?query=%7B&variables=nope"))
        .send()
        .await
        .unwrap();
    crate::common::expect_problem(response, 400, "bad-request").await;
    // A mutation by GET is refused: GET answers queries only.
    let response = server
        .client
        .get(graphql_url(
            &server,
            &[("query", "mutation { deleteProduct(id: 1) }")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(
        rest(&server, "/Product/1").await["name"],
        "Lamp",
        "nothing ran"
    );
    server.stop().await;
}

/// `/graphql?name=value&...`, percent-encoded.
fn graphql_url(server: &TestServer, params: &[(&str, &str)]) -> String {
    let encoded: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, NON_ALPHANUMERIC)))
        .collect();
    server.url(&format!("/graphql?{}", encoded.join("&")))
}

async fn get_query(server: &TestServer, query: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = server.client.get(graphql_url(server, &[("query", query)]));
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    request.send().await.expect("GET /graphql")
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn answers_are_kept_until_a_record_they_read_changes() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    let query = "{ product(id: 1) { name category { name } } other: product(id: 2) { name } }";
    let first = get_query(&server, query, None).await;
    assert_eq!(
        header(&first, "cache-status"),
        "tablecast; fwd=miss; stored"
    );
    assert_eq!(header(&first, "cache-control"), "no-cache");
    let etag = header(&first, "etag");
    let again = get_query(&server, query, None).await;
    assert_eq!(header(&again, "cache-status"), "tablecast; hit");
    assert_eq!(header(&again, "etag"), etag);
    let revalidated = get_query(&server, query, Some(&etag)).await;
    assert_eq!(revalidated.status(), 304);
    // A record it did not read changes: still kept.
    put(
        &server,
        "/Product/3",
        json!({"id": 3, "name": "Shelf 2", "price": 80}),
    )
    .await;
    assert_eq!(
        header(&get_query(&server, query, None).await, "cache-status"),
        "tablecast; hit"
    );
    // The category it read through the reference changes: recomputed at once.
    let response = server
        .client
        .patch(server.url("/Category/lighting"))
        .json(&json!({"name": "Lights"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let changed = get_query(&server, query, Some(&etag)).await;
    assert_eq!(changed.status(), 200);
    assert_eq!(
        header(&changed, "cache-status"),
        "tablecast; fwd=miss; stored"
    );
    assert_ne!(header(&changed, "etag"), etag);
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["data"]["product"]["category"]["name"], "Lights");

    // Never a stale answer after a write's 2xx, however the reads and writes interleave.
    let query = "{ product(id: 2) { price } productList(where: {price: {lt: 10}}) { totalCount } }";
    let readers = (0..4).map(|_| {
        let (client, url) = (
            server.client.clone(),
            graphql_url(&server, &[("query", query)]),
        );
        tokio::spawn(async move {
            for _ in 0..50 {
                let _ = client.get(&url).send().await;
            }
        })
    });
    let readers: Vec<_> = readers.collect();
    for price in 1..=40 {
        let price = f64::from(price) / 10.0;
        put(
            &server,
            "/Product/2",
            json!({"id": 2, "name": "Bulb", "price": price}),
        )
        .await;
        let body: Value = get_query(&server, query, None).await.json().await.unwrap();
        assert_eq!(
            body["data"]["product"]["price"], price,
            "an answer from before the write"
        );
    }
    put(
        &server,
        "/Product/9",
        json!({"id": 9, "name": "Match", "price": 0.1}),
    )
    .await;
    let body: Value = get_query(&server, query, None).await.json().await.unwrap();
    assert_eq!(
        body["data"]["productList"]["totalCount"], 2,
        "a listing sees the new record"
    );
    for reader in readers {
        reader.await.unwrap();
    }
    // An answer that found nothing is dropped when the record appears.
    let absent = "{ product(id: 99) { name } }";
    let body: Value = get_query(&server, absent, None).await.json().await.unwrap();
    assert_eq!(body["data"]["product"], Value::Null);
    put(
        &server,
        "/Product/99",
        json!({"id": 99, "name": "Late", "price": 1}),
    )
    .await;
    let body: Value = get_query(&server, absent, None).await.json().await.unwrap();
    assert_eq!(body["data"]["product"]["name"], "Late");
    server.stop().await;
}

#[tokio::test]
async fn persisted_queries_by_hash_as_apollo_sends_them() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    let query = "{ product(id: 1) { name } }";
    let hash = sha256(query);
    let extensions = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}}).to_string();
    let by_hash = || {
        server
            .client
            .get(graphql_url(&server, &[("extensions", &extensions)]))
            .header("accept", "application/json")
    };
    let unknown: Value = by_hash().send().await.unwrap().json().await.unwrap();
    assert_eq!(unknown["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    let registered = server
        .client
        .get(graphql_url(
            &server,
            &[("query", query), ("extensions", &extensions)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let response = by_hash().send().await.unwrap();
    assert_eq!(header(&response, "content-type"), "application/json");
    assert!(header(&response, "etag").starts_with("\"g"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["product"]["name"], "Lamp");
    let wrong =
        json!({"persistedQuery": {"version": 1, "sha256Hash": sha256("{ other }")}}).to_string();
    let mismatch = server
        .client
        .get(graphql_url(
            &server,
            &[("query", query), ("extensions", &wrong)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), 400);
    server.stop().await;
}

fn sha256(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A random condition over the products' attributes, in the query language.
fn condition() -> impl Strategy<Value = String> {
    let price = (
        prop::sample::select(vec!["lt", "le", "gt", "ge", "eq", "ne"]),
        0..130u32,
    )
        .prop_map(|(op, n)| format!("price={op}={n}"));
    let category = prop::sample::select(vec!["lighting", "home", "gone", "none"])
        .prop_map(|c| format!("category={c}"));
    let tag = prop::sample::select(vec!["led", "desk", "wood", "wool", "x"])
        .prop_map(|t| format!("tags={t}"));
    let name =
        prop::sample::select(vec!["L", "B", "Sh", "R", "Z"]).prop_map(|n| format!("name=sw={n}"));
    prop_oneof![price, category, tag, name]
}

fn filter() -> impl Strategy<Value = String> {
    (prop::collection::vec(condition(), 1..4), any::<bool>()).prop_map(|(parts, any)| match any {
        true if parts.len() > 1 => format!("[{}]", parts.join("|")),
        _ => parts.join("&"),
    })
}

#[tokio::test]
async fn random_filters_find_what_rest_finds() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    for id in 10..40_i64 {
        let category = ["home", "lighting"][id as usize % 2];
        let tag = ["led", "wood", "wool"][id as usize % 3];
        let record = json!({"id": id, "name": format!("Item{id}"), "category": category, "price": (id * 7) % 130, "tags": [tag]});
        put(&server, &format!("/Product/{id}"), record).await;
    }
    let mut runner = TestRunner::new(ProptestConfig::default());
    let filters = (0..200).map(|_| filter().new_tree(&mut runner).expect("a filter").current());
    let query = "query($filter: String) { productList(filter: $filter, first: 1000) { totalCount nodes { id } } }";
    for filter in filters {
        let listed = rest(&server, &format!("/Product/?{filter}&select(id)")).await;
        let expected: BTreeSet<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.to_string())
            .collect();
        let answer = data(&server, query, json!({"filter": filter})).await;
        let found: BTreeSet<String> = answer["productList"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| node["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(found, expected, "{filter}");
        assert_eq!(
            answer["productList"]["totalCount"],
            expected.len(),
            "{filter}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn cache_tables_fetch_once_and_bound_the_answers_freshness() {
    let origin = Origin::start().await;
    let quote = format!(
        r#"{{"type": "object",
            "x-table": {{ "cache": {{ "origin": "{}", "expiration": "60s" }} }},
            "properties": {{ "id": {{ "type": "string" }}, "name": {{ "type": "string" }}, "version": {{ "type": "integer" }} }}}}"#,
        origin.template()
    );
    let fixture = Fixture::with_schemas(&[("Quote", &quote)]);
    let server = fixture.start().await;
    origin.set_delay(std::time::Duration::from_millis(200));
    let query = "{ quote(id: \"ACME\") { id name } }";
    let asks = (0..10).map(|_| {
        let (client, url) = (client(), server.url("/graphql"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"query": query}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    });
    for ask in asks.collect::<Vec<_>>() {
        assert_eq!(ask.await.unwrap()["data"]["quote"]["id"], "ACME");
    }
    assert_eq!(
        origin.requests(),
        1,
        "concurrent queries share one origin request"
    );
    let response = get_query(&server, query, None).await;
    let control = header(&response, "cache-control");
    let max_age: u64 = control
        .trim_start_matches("max-age=")
        .parse()
        .expect(&control);
    assert!((50..=60).contains(&max_age), "{control}");
    assert_eq!(origin.requests(), 1);
    server.stop().await;
}

#[tokio::test]
async fn clients_nobody_here_wrote() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/graphql-ws").exists(),
        "the GraphQL clients are not installed: run `npm ci --prefix tests/js`"
    );
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    let mut command = tokio::process::Command::new("node");
    command.arg(dir.join("graphql.mjs")).arg(&server.base);
    crate::common::run_client(&mut command, "GraphQL clients (tests/js/graphql.mjs)").await;
    server.stop().await;
}

#[tokio::test]
async fn own_tables_max_age_bounds_what_downstream_caches_keep() {
    let product = PRODUCT.replace(r#""x-table": {"#, r#""x-table": { "maxAge": "30s","#);
    let fixture = Fixture::with_schemas(&[("Category", CATEGORY), ("Product", &product)]);
    let server = fixture.start().await;
    seed(&server).await;
    let alone = get_query(&server, "{ product(id: 1) { name } }", None).await;
    assert_eq!(header(&alone, "cache-control"), "max-age=30");
    let kept = get_query(&server, "{ product(id: 1) { name } }", None).await;
    assert_eq!(header(&kept, "cache-status"), "tablecast; hit");
    assert_eq!(header(&kept, "cache-control"), "max-age=30");
    // Category has no maxAge: an answer that read it is revalidated.
    let joined = get_query(&server, "{ product(id: 1) { category { name } } }", None).await;
    assert_eq!(header(&joined, "cache-control"), "no-cache");
    let posted = server
        .client
        .post(server.url("/graphql"))
        .json(&json!({"query": "{ product(id: 1) { name } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&posted, "cache-control"), "no-store");
    server.stop().await;
}

#[tokio::test]
async fn every_record_of_a_level_gets_what_its_links_reach() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    // Lamp and Bulb share their category: each gets its category's products.
    let both = data(
        &server,
        "{ productList(first: 2) { nodes { name category { products { name } } } } }",
        json!({}),
    )
    .await;
    let products = json!({"products": [{"name": "Lamp"}, {"name": "Bulb"}]});
    assert_eq!(both["productList"]["nodes"][0]["category"], products);
    assert_eq!(both["productList"]["nodes"][1]["category"], products);
    let listed = rest(
        &server,
        "/Product/?select(name,category{products{name}})&limit(2)",
    )
    .await;
    assert_eq!(listed[1]["category"], products, "REST too: {listed}");
    // One alias, two arguments, under `nodes` and `edges { node }` of the same records.
    let aliased = data(
        &server,
        "{ categoryList(where: {id: {eq: \"home\"}}) { nodes { p: products(first: 1) { name } } edges { node { p: products(first: 5) { name } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        aliased["categoryList"]["nodes"][0]["p"],
        json!([{"name": "Shelf"}])
    );
    assert_eq!(
        aliased["categoryList"]["edges"][0]["node"]["p"],
        json!([{"name": "Shelf"}, {"name": "Rug"}])
    );
    server.stop().await;
}

#[tokio::test]
async fn fragments_that_double_at_every_level_are_refused_at_once() {
    let fixture = fixture();
    let server = fixture.start().await;
    let mut query = String::from("query { ...F0 }\n");
    for level in 0..25 {
        let next = level + 1;
        query.push_str(&format!(
            "fragment F{level} on Query {{ ...F{next} ...F{next} }}\n"
        ));
    }
    query.push_str("fragment F25 on Query { product(id: 1) { name } }\n");
    let (status, answer) = graphql(&server, &query, json!({})).await;
    assert_eq!(status, 400, "{answer:#}");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
    server.stop().await;
}

#[tokio::test]
async fn an_etag_changes_with_what_the_answer_says() {
    let fixture = fixture();
    let server = fixture.start().await;
    seed(&server).await;
    let query = "{ productList(first: 1) { totalCount nodes { id } } }";
    let first = get_query(&server, query, None).await;
    let etag = header(&first, "etag");
    // A record beyond the page: the page's records are the same, the count is not.
    put(
        &server,
        "/Product/100",
        json!({"id": 100, "name": "Far", "price": 1}),
    )
    .await;
    let second = get_query(&server, query, Some(&etag)).await;
    assert_eq!(second.status(), 200);
    assert_ne!(header(&second, "etag"), etag);
    // A POST is not a conditional read.
    let posted = server
        .client
        .post(server.url("/graphql"))
        .header("if-none-match", header(&second, "etag"))
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let fixture = fixture();
    let mut config = fixture.config();
    config.graphql_introspection = false;
    let server = TestServer::start(config).await;
    seed(&server).await;
    let (status, answer) = graphql(&server, "{ __schema { types { name } } }", json!({})).await;
    assert!(
        status == 400 || answer["data"]["__schema"].is_null(),
        "no schema is told: {answer:#}"
    );
    assert!(answer["errors"][0]["message"].is_string(), "{answer:#}");
    let served = data(&server, "{ product(id: 1) { name } }", json!({})).await;
    assert_eq!(
        served["product"]["name"], "Lamp",
        "queries are still answered"
    );
    server.stop().await;
}

#[tokio::test]
async fn over_a_websocket_the_same_limits_and_a_subscription_that_follows_references() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let fixture = fixture();
    let mut config = fixture.config();
    config.graphql_max_aliases = 2;
    let server = TestServer::start(config).await;
    seed(&server).await;
    let mut request = format!("{}/graphql", server.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    let send = |value: Value| Message::Text(value.to_string().into());
    socket
        .send(send(json!({"type": "connection_init"})))
        .await
        .unwrap();
    let ack: Value = read(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack");
    let aliased = "{ a: product(id: 1) { id } b: product(id: 2) { id } c: product(id: 3) { id } }";
    socket
        .send(send(
            json!({"id": "1", "type": "subscribe", "payload": {"query": aliased}}),
        ))
        .await
        .unwrap();
    // async-graphql answers a refused operation with its errors, then `complete`.
    let refused = read(&mut socket).await;
    assert_eq!(refused["payload"]["data"], Value::Null, "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "LIMIT_EXCEEDED"
    );
    assert_eq!(read(&mut socket).await["type"], "complete");
    let watch = "subscription { product(id: 3) { type record { name category { name } } } }";
    socket
        .send(send(
            json!({"id": "2", "type": "subscribe", "payload": {"query": watch}}),
        ))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    put(
        &server,
        "/Product/3",
        json!({"id": 3, "name": "Shelf", "price": 85, "category": "lighting"}),
    )
    .await;
    let change = read(&mut socket).await;
    assert_eq!(change["type"], "next", "{change}");
    assert_eq!(
        change["payload"]["data"]["product"],
        json!({"type": "PUT", "record": {"name": "Shelf", "category": {"name": "Lighting"}}})
    );
    server.stop().await;
}

/// The next JSON text message of a WebSocket.
async fn read<S>(socket: &mut S) -> Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}
