//! What an attacker sends: each request is answered with a clear error or served, nothing
//! acknowledged is lost or changed, and the server serves everyone else on.

use serde_json::{Value, json};

use crate::common::{
    COUNTER_SCHEMA, Fixture, ITEM_SCHEMA, TestServer, delete, expect_problem, post_json, put,
};

#[tokio::test]
async fn a_record_with_more_index_entries_than_allowed_is_refused_and_changes_nothing() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.max_index_entries = 100;
    let server = TestServer::start(config).await;
    // `tags` is indexed: each distinct element is one entry (and `tags` is the only index).
    put(&server, "/Item/a", json!({ "name": "kept", "tags": ["x"] })).await;

    let tags: Vec<String> = (0..101).map(|n| format!("t{n}")).collect();
    let refused = server
        .client
        .put(server.url("/Item/a"))
        .json(&json!({ "name": "flood", "tags": tags }))
        .send()
        .await
        .expect("PUT");
    let problem = expect_problem(refused, 422, "too-many-index-entries").await;
    assert_eq!(
        (problem["entries"].clone(), problem["limit"].clone()),
        (json!(101), json!(100))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--max-index-entries"))
    );
    let refused = post_json(&server, "/Item/", json!({ "name": "flood", "tags": tags })).await;
    expect_problem(refused, 422, "too-many-index-entries").await;

    let kept: Value = server.get_json("/Item/a").await;
    assert_eq!(kept["name"], "kept");
    let found: Value = server.get_json("/Item/?tags=t5").await;
    assert_eq!(
        found,
        json!([]),
        "no entry of the refused record is in the index"
    );
    // Exactly at the limit is fine (duplicates count once).
    let mut tags = tags[..100].to_vec();
    tags.push("t0".to_owned());
    put(&server, "/Item/a", json!({ "name": "full", "tags": tags })).await;
    let found: Value = server.get_json("/Item/?tags=t99&select(name)").await;
    assert_eq!(found, json!(["full"]));
}

#[tokio::test]
async fn one_put_of_the_largest_integer_id_does_not_end_id_generation() {
    let fixture = Fixture::with_schemas(&[("Counter", COUNTER_SCHEMA), ("Item", ITEM_SCHEMA)]);
    let server = fixture.start().await;
    put(&server, "/Counter/2", json!({ "label": "taken" })).await;
    put(&server, &format!("/Counter/{}", i64::MAX), json!({})).await;
    let response = delete(&server, &format!("/Counter/{}", i64::MAX)).await;
    assert!(response.status().is_success());

    let mut generated = Vec::new();
    for _ in 0..2 {
        let created = post_json(&server, "/Counter/", json!({ "label": "new" })).await;
        assert_eq!(created.status(), 201);
        let record: Value = created.json().await.expect("JSON");
        generated.push(record["n"].clone());
    }
    assert_eq!(
        generated,
        [json!(1), json!(3)],
        "the lowest free ids, skipping 2"
    );
    server.stop().await;

    let server = fixture.start().await;
    let created = post_json(&server, "/Counter/", json!({ "label": "after restart" })).await;
    assert_eq!(created.status(), 201);
    let record: Value = created.json().await.expect("JSON");
    assert_eq!(record["n"], 4);
}

#[tokio::test]
async fn text_that_is_almost_a_date_is_refused_in_a_query_and_never_matches_when_stored() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let refused = server
        .client
        .get(server.url("/Counter/?createdAt=date:2001-01-01T12:00:00.aa%C3%A9"))
        .send()
        .await
        .expect("GET");
    expect_problem(refused, 400, "bad-query").await;
    let impossible = server
        .client
        .get(server.url("/Counter/?createdAt=lt=date:2001-02-31"))
        .send()
        .await
        .expect("GET");
    expect_problem(impossible, 400, "bad-query").await;

    put(
        &server,
        "/Counter/1",
        json!({ "label": "2001-01-01T12:00:00.aaé" }),
    )
    .await;
    put(
        &server,
        "/Counter/2",
        json!({ "label": "2001-01-01T12:00:00Z" }),
    )
    .await;
    put(&server, "/Counter/3", json!({ "label": "2001-02-31" })).await;
    let found: Value = server
        .get_json("/Counter/?label=gt=date:2000-01-01&select(n)")
        .await;
    assert_eq!(
        found,
        json!([2]),
        "only the stored text that is a date compares as one"
    );
}
