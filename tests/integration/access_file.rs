//! The access file as an operator meets it: its problems named at start, the secure default,
//! and the example that goes with the example schemas.

use serde_json::json;

use crate::access::ORDER_SCHEMA;
use crate::common::{Fixture, TestServer, expect_problem};

#[test]
fn a_bad_access_file_stops_start_up_naming_each_problem() {
    let fixture = Fixture::with_schemas(&[("Order", ORDER_SCHEMA)]);
    let access = fixture.data.path().join("access.json");
    let file = json!({
        "users": { "alice": { "password": "plain", "roles": ["nosuch"] } },
        "roles": {
            "customer": { "tables": {
                "Order": { "read": "owner=$usr", "properties": { "secret": { "read": false } } },
                "Missing": { "read": true }
            }, "rate": "fast" }
        },
        "extra": 1
    });
    std::fs::write(&access, file.to_string()).unwrap();
    let mut config = fixture.config();
    config.access = Some(access.clone());
    let error = tablecast::App::open(config)
        .err()
        .expect("refused")
        .to_string();
    let file = access.display().to_string();
    for pointer in [
        "#/extra",
        "#/users/alice/password",
        "#/users/alice/roles/0",
        "#/roles/customer/tables/Order/read",
        "#/roles/customer/tables/Order/properties/secret",
        "#/roles/customer/tables/Missing",
        "#/roles/customer/rate",
    ] {
        assert!(
            error.contains(&format!("{file}{pointer}:")),
            "{pointer} in\n{error}"
        );
    }
}

#[test]
fn api8_without_an_access_file_only_loopback_is_served() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.http = "0.0.0.0:0".parse().unwrap();
    let error = tablecast::App::open(config.clone())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("--access") && error.contains("--open"),
        "{error}"
    );
    config.open = true;
    assert!(tablecast::App::open(config).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_access_file_works_with_the_example_schemas() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.schemas = "schemas".into();
    config.access = Some("examples/access.json".into());
    let server = TestServer::start(config).await;
    let as_lighting = |method, path: &str| {
        server
            .client
            .request(method, server.url(path))
            .basic_auth("lighting", Some("lighting-password"))
    };
    let lamp = json!({"name": "Lamp", "category": "lighting", "price": 10});
    let created = as_lighting(reqwest::Method::PUT, "/Product/1")
        .json(&lamp)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 204);
    let desk = json!({"name": "Desk", "category": "desks", "price": 10});
    let refused = as_lighting(reqwest::Method::PUT, "/Product/2")
        .json(&desk)
        .send()
        .await
        .unwrap();
    expect_problem(refused, 403, "forbidden").await;
    let restocked = as_lighting(reqwest::Method::PATCH, "/Product/1")
        .json(&json!({"inStock": true}))
        .send()
        .await
        .unwrap();
    expect_problem(restocked, 403, "forbidden").await;
    let repriced = as_lighting(reqwest::Method::PATCH, "/Product/1")
        .json(&json!({"price": 12}))
        .send()
        .await
        .unwrap();
    assert_eq!(repriced.status(), 204);
    let public = server
        .client
        .get(server.url("/Product/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
    let anonymous = server
        .client
        .put(server.url("/Product/3"))
        .json(&lamp)
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401, "unauthenticated").await;
    server.stop().await;
}
