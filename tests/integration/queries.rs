//! The query language over HTTP: conditions, groups, sorting, selection, paging and formats.

use serde_json::{Value, json};

use crate::common::{Fixture, TestServer};

const PRODUCT: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "id", "indexes": ["category", "price"] },
  "properties": {
    "id": { "type": "integer" },
    "name": { "type": "string" },
    "category": { "type": ["string", "null"] },
    "price": { "type": "number" },
    "tags": { "type": "array", "items": { "type": "string" } },
    "inStock": { "type": "boolean" },
    "released": { "type": "string", "format": "date-time" },
    "dims": { "type": "object", "properties": { "w": { "type": "number" }, "h": { "type": "number" } } }
  }
}"#;

fn products() -> Vec<Value> {
    vec![
        json!({"id":1,"name":"Desk lamp","category":"lighting","price":39.5,"tags":["desk","led"],"inStock":true,"released":"2021-03-01T00:00:00Z","dims":{"w":20,"h":45}}),
        json!({"id":2,"name":"Floor lamp","category":"lighting","price":120,"tags":["floor"],"inStock":false,"released":"2019-11-15T12:00:00Z","dims":{"w":35,"h":170}}),
        json!({"id":3,"name":"Oak table","category":"furniture","price":420,"tags":["wood"],"inStock":true,"released":"2022-06-30T08:30:00Z","dims":{"w":160,"h":75}}),
        json!({"id":4,"name":"Stool","category":"furniture","price":35,"inStock":true}),
        json!({"id":5,"name":"Gift card","category":null,"price":25}),
        json!({"id":6,"name":"Mystery box","price":10,"tags":[]}),
        json!({"id":7,"name":"LED strip","category":"lighting","price":19.99,"tags":["led","strip"],"inStock":true,"released":"2023-01-01T00:00:00Z"}),
    ]
}

async fn server(fixture: &Fixture) -> TestServer {
    let server = fixture.start().await;
    for product in products() {
        let response = server
            .client
            .put(server.url(&format!("/Product/{}", product["id"])))
            .json(&product)
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 204);
    }
    server
}

async fn ids(server: &TestServer, query: &str) -> Vec<i64> {
    let response = server
        .client
        .get(server.url(&format!("/Product/?{query}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        response.status(),
        200,
        "{query}: {}",
        response.text().await.unwrap_or_default()
    );
    let records: Vec<Value> = response.json().await.expect("JSON array");
    records
        .iter()
        .map(|r| r["id"].as_i64().unwrap_or_else(|| panic!("{query}: {r}")))
        .collect()
}

#[tokio::test]
async fn conditions_and_their_edge_cases() {
    let fixture = Fixture::with_schemas(&[("Product", PRODUCT)]);
    let server = server(&fixture).await;
    let cases: &[(&str, &[i64])] = &[
        ("category=lighting", &[1, 2, 7]),
        ("category==lighting", &[1, 2, 7]),
        ("price=39.5", &[1]),
        ("price=gt=100", &[2, 3]),
        ("price=ge=120", &[2, 3]),
        ("price=lt=25", &[6, 7]),
        ("price=le=25", &[5, 6, 7]),
        ("price=gt=20&lt=100", &[1, 4, 5]),
        ("price=gt=20&price=lt=100", &[1, 4, 5]),
        ("name=sw=Desk", &[1]),
        ("name==Fl*", &[2]),
        ("name=ct=lamp", &[1, 2]),
        ("name=ew=box", &[6]),
        ("inStock=true", &[1, 3, 4, 7]),
        ("inStock=false", &[2]),
        // null and missing are one thing
        ("category=null", &[5, 6]),
        ("category==null", &[5, 6]),
        ("category!=null", &[1, 2, 3, 4, 7]),
        ("category!=lighting", &[3, 4, 5, 6]),
        ("category=ne=lighting", &[3, 4, 5, 6]),
        ("inStock!=true", &[2, 5, 6]),
        ("price=gt=0&category=gt=a", &[1, 2, 3, 4, 7]),
        // arrays: any element; != means no element
        ("tags=led", &[1, 7]),
        ("tags!=led", &[2, 3, 4, 5, 6]),
        ("tags=sw=st", &[7]),
        // nested paths
        ("dims.w=gt=30", &[2, 3]),
        ("dims.h=lt=100&dims.w=ge=20", &[1, 3]),
        // dates
        ("released=gt=2021-01-01", &[1, 3, 7]),
        ("released=date:2019-11-15T12:00:00.000Z", &[2]),
        ("released=lt=2020-01-01T00:00:00%2B01:00", &[2]),
        // groups
        ("category=furniture|price=lt=15", &[3, 4, 6]),
        ("category=lighting&(price=lt=20|price=gt=100)", &[2, 7]),
        (
            "[category=lighting&inStock=true]|[category=furniture&price=lt=100]",
            &[1, 4, 7],
        ),
        ("&category=furniture&", &[3, 4]),
        ("name=Nothing", &[]),
    ];
    for (query, expected) in cases {
        assert_eq!(ids(&server, query).await, *expected, "{query}");
    }
    server.stop().await;
}

#[tokio::test]
async fn sort_select_and_paging() {
    let fixture = Fixture::with_schemas(&[("Product", PRODUCT)]);
    let server = server(&fixture).await;
    assert_eq!(ids(&server, "sort(-id)").await, [7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(ids(&server, "sort(price)").await, [6, 7, 5, 4, 1, 2, 3]);
    assert_eq!(ids(&server, "sort(-price)&limit(2)").await, [3, 2]);
    assert_eq!(
        ids(&server, "sort(+category,-price)").await,
        [3, 4, 2, 1, 7, 5, 6],
        "nulls last"
    );
    assert_eq!(ids(&server, "sort(dims.w)").await, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        ids(&server, "category=lighting&sort(name)").await,
        [1, 2, 7]
    );
    assert_eq!(ids(&server, "limit(2,4)").await, [3, 4]);
    assert_eq!(ids(&server, "sort(-id)&limit(1,3)").await, [6, 5]);
    assert_eq!(ids(&server, "category=lighting&limit(1)").await, [1]);

    let get = |query: &'static str| {
        let request = server
            .client
            .get(server.url(&format!("/Product/?{query}")))
            .send();
        async move {
            request
                .await
                .expect("GET")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    assert_eq!(
        get("id=lt=3&select(name)").await,
        json!(["Desk lamp", "Floor lamp"])
    );
    assert_eq!(get("id=5&select(category)").await, json!([null]));
    assert_eq!(get("id=4&select(dims.w)").await, json!([null]));
    assert_eq!(get("id=1&select(dims.w)").await, json!([20]));
    assert_eq!(
        get("id=lt=3&select(name,)").await,
        json!([{"name":"Desk lamp"},{"name":"Floor lamp"}])
    );
    assert_eq!(
        get("id=5&select(id,category,tags)").await,
        json!([{"id":5,"category":null}]),
        "missing left out, null kept"
    );
    assert_eq!(
        get("id=1&select(id,dims{w})").await,
        json!([{"id":1,"dims":{"w":20}}])
    );
    server.stop().await;
}

#[tokio::test]
async fn ndjson_and_csv() {
    let fixture = Fixture::with_schemas(&[("Product", PRODUCT)]);
    let server = server(&fixture).await;
    let response = server
        .client
        .get(server.url("/Product/?category=lighting"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.expect("body");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let expected: Vec<Value> = products()
        .into_iter()
        .filter(|p| p["category"] == "lighting")
        .collect();
    assert_eq!(lines, expected);
    assert!(body.ends_with('\n'));

    let csv = |query: &'static str| {
        let request = server
            .client
            .get(server.url(&format!("/Product/?{query}")))
            .header("accept", "text/csv, */*;q=0.5")
            .send();
        async move {
            let response = request.await.expect("GET");
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/csv")
            );
            response.text().await.expect("body")
        }
    };
    assert_eq!(
        csv("id=lt=3&select(id,name,tags)").await,
        "id,name,tags\r\n1,Desk lamp,\"[\"\"desk\"\",\"\"led\"\"]\"\r\n2,Floor lamp,\"[\"\"floor\"\"]\"\r\n"
    );
    assert_eq!(csv("id=5&select(name)").await, "name\r\nGift card\r\n");
    let full = csv("id=4").await;
    assert_eq!(
        full,
        "id,name,category,price,tags,inStock,released,dims\r\n4,Stool,furniture,35,,true,,\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn exact_counts_and_cursor_paging() {
    let fixture = Fixture::with_schemas(&[("Product", PRODUCT)]);
    let server = server(&fixture).await;
    let counted = |query: &'static str| {
        let request = server
            .client
            .get(server.url(&format!("/Product/?{query}")))
            .header("prefer", "count=exact")
            .send();
        async move {
            let response = request.await.expect("GET");
            assert_eq!(response.headers()["preference-applied"], "count=exact");
            response.headers()["content-range"]
                .to_str()
                .expect("range")
                .to_owned()
        }
    };
    assert_eq!(counted("").await, "items 0-6/7");
    assert_eq!(counted("category=lighting&limit(1,3)").await, "items 1-2/3");
    assert_eq!(
        counted("category=lighting&limit(1,30)").await,
        "items 1-2/3"
    );
    assert_eq!(counted("price=gt=100&sort(-price)").await, "items 0-1/2");
    assert_eq!(counted("name=Nothing").await, "items */0");
    assert_eq!(counted("limit(10,20)").await, "items */7");

    // Follow rel="next" links until the last page; every record comes exactly once, in order.
    for (first, expected) in [
        ("/Product/?limit(3)", vec![1, 2, 3, 4, 5, 6, 7]),
        ("/Product/?inStock=true&limit(2)", vec![1, 3, 4, 7]),
        ("/Product/?sort(-id)&limit(3)", vec![7, 6, 5, 4, 3, 2, 1]),
        ("/Product/?price=lt=100&limit(2)", vec![1, 4, 5, 6, 7]),
    ] {
        let mut seen = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next.take() {
            let response = server
                .client
                .get(server.url(&path))
                .send()
                .await
                .expect("GET");
            assert_eq!(response.status(), 200, "{path}");
            next = response.headers().get("link").map(|link| {
                let link = link.to_str().expect("link");
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                link[1..link.find('>').expect("<url>")].to_owned()
            });
            let page: Vec<Value> = response.json().await.expect("JSON");
            seen.extend(page.iter().map(|r| r["id"].as_i64().expect("id")));
            assert!(seen.len() <= 7, "{first}: paging does not end");
        }
        assert_eq!(seen, expected, "{first}");
    }
    let unsorted = server
        .client
        .get(server.url("/Product/?sort(price)&limit(2)"))
        .send()
        .await
        .expect("GET");
    assert!(
        unsorted.headers().get("link").is_none(),
        "no cursor outside key order"
    );
    let refused = server
        .client
        .get(server.url("/Product/?sort(price)&after(3)"))
        .send()
        .await
        .expect("GET");
    crate::common::expect_problem(refused, 400, "bad-query").await;
    let bad_id = server
        .client
        .get(server.url("/Product/?after(x)"))
        .send()
        .await
        .expect("GET");
    crate::common::expect_problem(bad_id, 400, "bad-query").await;
    server.stop().await;
}

#[tokio::test]
async fn indexes_are_built_and_dropped_on_restart() {
    use std::sync::Arc;
    use tablecast::schema::TableSchema;
    use tablecast::storage::{IndexRange, Options, Store};
    use tablecast::table::Table;

    let unindexed = PRODUCT.replace(r#""indexes": ["category", "price"]"#, r#""indexes": []"#);
    let fixture = Fixture::with_schemas(&[("Product", &unindexed)]);
    let schema_file = fixture.schemas.path().join("Product.json");
    let server = server(&fixture).await;
    server.stop().await;
    let index_entries = |path: &str| {
        let schema = TableSchema::load(&schema_file).expect("schema");
        let store = Arc::new(
            Store::open(fixture.data.path(), Options::default(), Box::new(|_| {})).expect("store"),
        );
        let table = Table::open(schema, store).expect("table");
        let everything =
            IndexRange::Between(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        table
            .index_keys(&[path.to_owned()], &everything)
            .map(Iterator::count)
    };
    assert_eq!(index_entries("category"), None);

    std::fs::write(
        &schema_file,
        PRODUCT.replace(r#"["category", "price"]"#, r#"["category", "tags"]"#),
    )
    .expect("schema");
    assert_eq!(
        index_entries("category"),
        Some(7),
        "built at start: one entry per record (null and missing included)"
    );
    assert_eq!(
        index_entries("tags"),
        Some(8),
        "one entry per array element, one null each for the two without tags"
    );
    let server = fixture.start().await;
    assert_eq!(ids(&server, "category=lighting").await, [1, 2, 7]);
    assert_eq!(ids(&server, "tags=led").await, [1, 7]);
    assert_eq!(ids(&server, "category=null").await, [5, 6]);
    server.stop().await;

    std::fs::write(&schema_file, &unindexed).expect("schema");
    assert_eq!(
        index_entries("category"),
        None,
        "dropped when no longer declared"
    );
    let server = fixture.start().await;
    assert_eq!(ids(&server, "category=lighting").await, [1, 2, 7]);
    server.stop().await;
}
