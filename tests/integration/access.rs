//! Identity and access over REST, attacked as the OWASP API Security Top 10 (2023) describes:
//! two customers (alice, bob), an administrator (carol), and anonymous clients.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Fixture, TestServer, eventually, expect_problem};

pub const ORDER_SCHEMA: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "id", "indexes": ["owner"] },
  "properties": {
    "id": { "type": "string" },
    "owner": { "type": "string" },
    "status": { "type": "string" },
    "total": { "type": "number" },
    "internalNote": { "type": "string" }
  },
  "required": ["id", "owner"],
  "additionalProperties": false
}"#;

pub const PRODUCT_SCHEMA: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "id" },
  "properties": { "id": { "type": "integer" }, "name": { "type": "string" } }
}"#;

/// 32 bytes or more, as the access file requires.
pub const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
pub const AUDIENCE: &str = "tablecast-tests";
pub const ISSUER: &str = "https://idp.example";

/// Keys of an identity provider: RSA and Ed25519, private (PKCS#8) and public (SPKI) PEM.
pub struct Keys {
    pub rsa_private: String,
    pub rsa_public: String,
    pub ed_private: String,
    pub ed_public: String,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("an RSA key");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
        Keys {
            rsa_private: rsa.serialize_pem(),
            rsa_public: rsa.public_key_pem(),
            ed_private: ed.serialize_pem(),
            ed_public: ed.public_key_pem(),
        }
    })
}

/// Password hashes, made once (argon2 is slow on purpose).
fn hash(password: &str) -> String {
    static HASHES: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        OnceLock::new();
    let hashes = HASHES.get_or_init(Default::default);
    let mut hashes = hashes.lock().unwrap();
    hashes
        .entry(password.to_owned())
        .or_insert_with(|| tablecast::access::passwd::hash(password).expect("hash"))
        .clone()
}

/// The access file of these tests, with `roles` replacing the customer role's table rules.
pub fn access_file(customer_orders: Value) -> Value {
    json!({
        "users": {
            "alice": { "password": hash("alice-pw"), "roles": ["customer"] },
            "bob": { "password": hash("bob-pw"), "roles": ["customer"] },
            "carol": { "password": hash("carol-pw"), "roles": ["admin"] },
            "limited": { "password": hash("limited-pw"), "roles": ["limited"] }
        },
        "tokens": {
            "hs256": "${TABLECAST_TEST_JWT_SECRET}",
            "publicKeys": ["rsa.pem", "ed.pem"],
            "issuer": ISSUER, "audience": AUDIENCE
        },
        "roles": {
            "anonymous": { "tables": { "Product": { "read": true } } },
            "customer": {
                "tables": {
                    "Order": customer_orders,
                    "Product": { "read": true }
                },
                "mqtt": { "publish": ["devices/$user/#"], "subscribe": ["devices/$user/#"] },
                "rate": "1000/s"
            },
            "limited": { "tables": { "Product": { "read": true } }, "rate": "3/m" },
            "admin": { "admin": true }
        }
    })
}

pub fn customer_orders() -> Value {
    json!({
        "read": "owner=$user", "insert": "owner=$user", "update": "owner=$user",
        "delete": "owner=$user",
        "properties": { "internalNote": { "read": false }, "status": { "write": false } }
    })
}

pub struct Secured {
    /// Keeps the schema and data directories while the server runs.
    pub _fixture: Fixture,
    pub access: PathBuf,
    pub server: TestServer,
}

/// A server with the Order and Product tables under [`access_file`].
pub async fn secured() -> Secured {
    secured_with(access_file(customer_orders())).await
}

pub async fn secured_with(file: Value) -> Secured {
    secured_with_origins(file, Vec::new()).await
}

/// [`secured_with`], with pages of `origins` allowed cross-origin requests.
pub async fn secured_with_origins(file: Value, origins: Vec<String>) -> Secured {
    // SAFETY: every test sets the same value, and only the access file loader reads it.
    unsafe { std::env::set_var("TABLECAST_TEST_JWT_SECRET", SECRET) };
    let fixture = Fixture::with_schemas(&[("Order", ORDER_SCHEMA), ("Product", PRODUCT_SCHEMA)]);
    let dir = fixture.data.path().parent().expect("a temp dir").to_owned();
    let dir = tempfile::TempDir::new_in(dir).expect("temp dir").keep();
    std::fs::write(dir.join("rsa.pem"), &keys().rsa_public).unwrap();
    std::fs::write(dir.join("ed.pem"), &keys().ed_public).unwrap();
    let access = dir.join("access.json");
    std::fs::write(&access, file.to_string()).unwrap();
    let mut config = fixture.config();
    config.access = Some(access.clone());
    config.cors_origins = origins;
    let server = TestServer::start(config).await;
    Secured {
        _fixture: fixture,
        access,
        server,
    }
}

/// A request as `user` (password `<user>-pw`).
pub fn as_user(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    user: &str,
) -> reqwest::RequestBuilder {
    server
        .client
        .request(method, server.url(path))
        .basic_auth(user, Some(format!("{user}-pw")))
}

/// A JWT for `claims` (with `exp` in an hour, issuer and audience unless given) signed with
/// `algorithm`'s test key.
pub fn token(algorithm: Algorithm, claims: Value) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut full = json!({ "exp": now + 3600, "iss": ISSUER, "aud": AUDIENCE });
    full.as_object_mut()
        .unwrap()
        .extend(claims.as_object().unwrap().clone());
    let key = match algorithm {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(keys().rsa_private.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(keys().ed_private.as_bytes()).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &full, &key).expect("a token")
}

/// `PUT /Order/<id>` of `body` as `user`.
pub async fn put_as(server: &TestServer, user: &str, id: &str, body: Value) -> reqwest::Response {
    as_user(server, reqwest::Method::PUT, &format!("/Order/{id}"), user)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// [`put_as`], which must succeed.
pub async fn write(server: &TestServer, user: &str, id: &str, body: Value) {
    let response = put_as(server, user, id, body).await;
    assert_eq!(response.status(), 204, "{user} writes {id}");
}

/// Orders a1, a2 of alice and b1 of bob, written by themselves; b1 carries a note by carol.
async fn orders(server: &TestServer) {
    for (user, id) in [("alice", "a1"), ("alice", "a2"), ("bob", "b1")] {
        let response = put_as(server, user, id, json!({"owner": user, "total": 10})).await;
        assert_eq!(response.status(), 204, "{user} writes {id}");
    }
    let note =
        json!({"owner": "bob", "total": 10, "status": "paid", "internalNote": "fraud check"});
    assert_eq!(
        put_as(server, "carol", "b1", note.clone()).await.status(),
        204
    );
    assert_eq!(
        put_as(
            server,
            "carol",
            "a1",
            json!({"owner": "alice", "total": 10, "status": "paid", "internalNote": "vip"})
        )
        .await
        .status(),
        204
    );
}

async fn text(response: reqwest::Response) -> String {
    response.text().await.unwrap()
}

fn ids(listing: &Value) -> Vec<&str> {
    listing
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api1_one_customer_cannot_reach_another_s_records() {
    let Secured { server, .. } = secured().await;
    orders(&server).await;
    use reqwest::Method as M;
    // By id: 404, never 403 (existence is not told), for reads and changes alike.
    let get = as_user(&server, M::GET, "/Order/b1", "alice")
        .send()
        .await
        .unwrap();
    expect_problem(get, 404, "record-not-found").await;
    let patch = as_user(&server, M::PATCH, "/Order/b1", "alice")
        .json(&json!({"total": 0}))
        .send()
        .await
        .unwrap();
    expect_problem(patch, 404, "record-not-found").await;
    let delete = as_user(&server, M::DELETE, "/Order/b1", "alice")
        .send()
        .await
        .unwrap();
    expect_problem(delete, 404, "record-not-found").await;
    // A PUT over the id: the id is taken, nothing more is told, and nothing changes.
    let over = put_as(&server, "alice", "b1", json!({"owner": "alice"})).await;
    expect_problem(over, 403, "forbidden").await;
    // Writing as someone else, or moving one's own record to someone else.
    let forged = put_as(&server, "alice", "a3", json!({"owner": "bob"})).await;
    expect_problem(forged, 403, "forbidden").await;
    let moved = as_user(&server, M::PATCH, "/Order/a2", "alice")
        .json(&json!({"owner": "bob"}))
        .send()
        .await
        .unwrap();
    expect_problem(moved, 403, "forbidden").await;
    let created = as_user(&server, M::POST, "/Order/", "alice")
        .json(&json!({"owner": "bob"}))
        .send()
        .await
        .unwrap();
    expect_problem(created, 403, "forbidden").await;
    // By query: the role's rule is ANDed in, whatever the query says.
    for query in [
        "",
        "?owner=bob",
        "?owner=bob|owner=alice",
        "?total=10",
        "?sort(-id)",
        "?limit(1)&after(a1)",
    ] {
        let listed: Value = as_user(&server, M::GET, &format!("/Order/{query}"), "alice")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            ids(&listed).iter().all(|id| id.starts_with('a')),
            "{query}: {listed}"
        );
    }
    let counted = as_user(&server, M::GET, "/Order/", "alice")
        .header("prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(counted.headers()["content-range"], "items 0-1/2");
    let csv = text(
        as_user(&server, M::GET, "/Order/", "alice")
            .header("accept", "text/csv")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!csv.contains("b1") && csv.contains("a2"), "{csv}");
    let ndjson = text(
        as_user(&server, M::GET, "/Order/", "alice")
            .header("accept", "application/x-ndjson")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ndjson.lines().count(), 2, "{ndjson}");
    // Bob's record is as bob left it.
    let b1: Value = as_user(&server, M::GET, "/Order/b1", "bob")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (b1["owner"].as_str(), b1["total"].as_f64()),
        (Some("bob"), Some(10.0))
    );
    // Alice can still do everything to her own.
    let own = as_user(&server, M::PATCH, "/Order/a2", "alice")
        .json(&json!({"total": 12}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 204);
    let gone = as_user(&server, M::DELETE, "/Order/a2", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api3_hidden_properties_never_leave_and_fixed_ones_cannot_be_assigned() {
    let Secured { server, .. } = secured().await;
    orders(&server).await;
    use reqwest::Method as M;
    let leaks = |body: &str| body.contains("internalNote") || body.contains("vip");
    let one = text(
        as_user(&server, M::GET, "/Order/a1", "alice")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!leaks(&one) && one.contains("paid"), "{one}");
    for accept in ["application/json", "text/csv", "application/x-ndjson"] {
        let listed = text(
            as_user(&server, M::GET, "/Order/", "alice")
                .header("accept", accept)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(!leaks(&listed), "{accept}: {listed}");
    }
    // A query cannot name it: its values would show through the answer.
    for query in [
        "select(internalNote)",
        "select(id,internalNote)",
        "internalNote=vip",
        "internalNote=sw=v",
        "sort(internalNote)",
    ] {
        let refused = as_user(&server, M::GET, &format!("/Order/?{query}"), "alice")
            .send()
            .await
            .unwrap();
        let problem = expect_problem(refused, 403, "forbidden").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("internalNote"),
            "{problem}"
        );
    }
    // The table's description hides it too.
    let described = text(
        as_user(&server, M::GET, "/Order", "alice")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!leaks(&described), "{described}");
    // Mass assignment: setting a fixed or hidden property is refused, naming it; nothing changes.
    for (body, named) in [
        (json!({"status": "refunded"}), "status"),
        (json!({"internalNote": "x"}), "internalNote"),
    ] {
        let patched = as_user(&server, M::PATCH, "/Order/a1", "alice")
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(patched, 403, "forbidden").await;
        assert!(
            problem["detail"].as_str().unwrap().contains(named),
            "{problem}"
        );
    }
    let sneaky = put_as(
        &server,
        "alice",
        "a1",
        json!({"owner": "alice", "status": "refunded"}),
    )
    .await;
    expect_problem(sneaky, 403, "forbidden").await;
    let inserted = put_as(
        &server,
        "alice",
        "a9",
        json!({"owner": "alice", "status": "paid"}),
    )
    .await;
    expect_problem(inserted, 403, "forbidden").await;
    // A replacement keeps what alice cannot see, and shows her none of it.
    let replaced = as_user(&server, M::PUT, "/Order/a1", "alice")
        .header("prefer", "return=representation")
        .json(&json!({"owner": "alice", "total": 11, "status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let shown = text(replaced).await;
    assert!(!leaks(&shown) && shown.contains("11"), "{shown}");
    let stored: Value = as_user(&server, M::GET, "/Order/a1", "carol")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["internalNote"], "vip");
    assert_eq!(stored["status"], "paid");
    assert_eq!(stored["total"], 11);
    // A validation error does not tell a hidden value either.
    let invalid = put_as(
        &server,
        "alice",
        "a1",
        json!({"owner": "alice", "status": "paid", "total": "lots"}),
    )
    .await;
    let problem = expect_problem(invalid, 422, "schema-violation").await;
    assert!(!leaks(&problem.to_string()), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api2_credentials_that_prove_nothing_are_refused() {
    let Secured { server, .. } = secured().await;
    let get = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap() };
    let url = server.url("/Order/");
    let client = &server.client;
    let refused = [
        get(client.get(&url).basic_auth("alice", Some("wrong"))).await,
        get(client.get(&url).basic_auth("mallory", Some("alice-pw"))).await,
        get(client.get(&url).header("authorization", "Basic !!!")).await,
        get(client.get(&url).header("authorization", "Digest x")).await,
        get(client.get(&url)).await,
    ];
    for response in refused {
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("Basic")
        );
        expect_problem(response, 401, "unauthenticated").await;
    }
    let now = jsonwebtoken::get_current_timestamp();
    let valid = token(
        Algorithm::HS256,
        json!({"sub": "alice", "roles": ["customer"]}),
    );
    let (header, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let tampered_payload = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
        claims["roles"] = json!(["admin"]);
        engine.encode(claims.to_string())
    };
    let none_header = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
    };
    // HS256 signed with the RSA public key as the secret: algorithm confusion.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "roles": ["admin"], "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}),
        &EncodingKey::from_secret(keys().rsa_public.as_bytes()).unwrap(),
    )
    .unwrap();
    let bad_tokens = [
        (
            "expired",
            token(Algorithm::HS256, json!({"sub": "alice", "exp": now - 3600})),
        ),
        (
            "not yet valid",
            token(Algorithm::HS256, json!({"sub": "alice", "nbf": now + 3600})),
        ),
        (
            "other audience",
            token(
                Algorithm::RS256,
                json!({"sub": "alice", "aud": "someone-else"}),
            ),
        ),
        (
            "other issuer",
            token(
                Algorithm::EdDSA,
                json!({"sub": "alice", "iss": "https://evil.example"}),
            ),
        ),
        ("no expiry", {
            let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "a", "iss": ISSUER, "aud": AUDIENCE}),
                &key,
            )
            .unwrap()
        }),
        (
            "tampered",
            format!("{header}.{tampered_payload}.{signature}"),
        ),
        ("alg none", format!("{none_header}.{payload}.")),
        ("confused", confused),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, bad) in bad_tokens {
        let response = get(client.get(&url).bearer_auth(&bad)).await;
        assert_eq!(response.status(), 401, "{what}");
        expect_problem(response, 401, "unauthenticated").await;
    }
    for algorithm in [Algorithm::HS256, Algorithm::RS256, Algorithm::EdDSA] {
        let good = token(algorithm, json!({"sub": "alice", "roles": ["customer"]}));
        let response = get(client.get(&url).bearer_auth(&good)).await;
        assert_eq!(response.status(), 200, "{algorithm:?}");
    }
    // Guessing passwords is throttled, per user, and says when to try again.
    let mut throttled = None;
    for _ in 0..15 {
        let response = get(client.get(&url).basic_auth("bob", Some("guess"))).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(response);
            break;
        }
    }
    let throttled = throttled.expect("guesses are throttled");
    assert!(throttled.headers().contains_key("retry-after"));
    expect_problem(throttled, 429, "rate-limited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api4_an_identity_past_its_rate_is_told_when_to_retry_and_others_are_served() {
    let Secured { server, .. } = secured().await;
    use reqwest::Method as M;
    for remaining in [2, 1, 0] {
        let ok = as_user(&server, M::GET, "/Product/", "limited")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["ratelimit-policy"], "3;w=60");
        assert_eq!(
            ok.headers()["ratelimit"],
            format!("limit=3, remaining={remaining}, reset=60").as_str()
        );
    }
    let refused = as_user(&server, M::GET, "/Product/", "limited")
        .send()
        .await
        .unwrap();
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    expect_problem(refused, 429, "rate-limited").await;
    let others = as_user(&server, M::GET, "/Product/", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api5_only_administrators_reach_control_routes() {
    let Secured { server, .. } = secured().await;
    use reqwest::Method as M;
    let body = json!({"all": true});
    let anonymous = server
        .client
        .post(server.url("/_cache/Order/invalidate"))
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401, "unauthenticated").await;
    for route in ["/_cache/Order/invalidate", "/_cache/Order/warm"] {
        let customer = as_user(&server, M::POST, route, "alice")
            .json(&json!({"ids": ["a"]}))
            .send()
            .await
            .unwrap();
        expect_problem(customer, 403, "forbidden").await;
    }
    // An administrator passes: Order is not a cache table, which is the next thing said.
    let admin = as_user(&server, M::POST, "/_cache/Order/invalidate", "carol")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(admin, 400, "bad-request").await;
    // Anonymous may read products, and nothing else.
    let product = server
        .client
        .get(server.url("/Product/"))
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), 200);
    let write = server
        .client
        .put(server.url("/Product/1"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(write, 401, "unauthenticated").await;
    let orders = server
        .client
        .get(server.url("/Order/a1"))
        .send()
        .await
        .unwrap();
    expect_problem(orders, 401, "unauthenticated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_depend_on_the_identity_are_private() {
    let Secured { server, .. } = secured().await;
    orders(&server).await;
    let mine = as_user(&server, reqwest::Method::GET, "/Order/a1", "alice")
        .send()
        .await
        .unwrap();
    assert!(
        mine.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    let vary: Vec<_> = mine
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(vary.iter().any(|v| v.contains("Authorization")), "{vary:?}");
    let public = server
        .client
        .get(server.url("/Product/"))
        .send()
        .await
        .unwrap();
    assert!(
        public
            .headers()
            .get("cache-control")
            .is_none_or(|c| !c.to_str().unwrap().contains("private"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_signs_a_browser_in_and_needs_its_origin_to_write() {
    let Secured { server, .. } = secured().await;
    let signed = server
        .client
        .post(server.url("/_session"))
        .json(&json!({"user": "alice", "password": "alice-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let read = server
        .client
        .get(server.url("/Order/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = |origin: Option<&str>| {
        let mut request = server
            .client
            .put(server.url("/Order/a5"))
            .header("cookie", &session)
            .json(&json!({"owner": "alice"}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    expect_problem(write(None).await.unwrap(), 403, "forbidden").await;
    expect_problem(
        write(Some("https://evil.example")).await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    let own = write(Some(&server.base)).await.unwrap();
    assert_eq!(own.status(), 204, "{}", own.text().await.unwrap());
    let out = server
        .client
        .delete(server.url("/_session"))
        .header("cookie", &session)
        .header("origin", &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = server
        .client
        .get(server.url("/Order/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    expect_problem(after, 401, "unauthenticated").await;
    let bad = server
        .client
        .post(server.url("/_session"))
        .json(&json!({"user": "alice", "password": "no"}))
        .send()
        .await
        .unwrap();
    expect_problem(bad, 401, "unauthenticated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_access_file_is_put_in_force_and_a_bad_one_is_not() {
    let Secured { server, access, .. } = secured().await;
    orders(&server).await;
    let bobs = || as_user(&server, reqwest::Method::GET, "/Order/b1", "alice").send();
    assert_eq!(bobs().await.unwrap().status(), 404);
    let mut open = access_file(json!({"read": true}));
    std::fs::write(&access, open.to_string()).unwrap();
    eventually("the new rules are in force", async || {
        bobs().await.unwrap().status() == 200
    })
    .await;
    // A bad file is refused whole: the rules in force stay.
    open["roles"]["customer"]["tables"]["Order"]["read"] = json!("nosuch=$user");
    std::fs::write(&access, open.to_string()).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bobs().await.unwrap().status(), 200);
}

/// A GraphQL query as `user`; the answer.
async fn graphql_as(server: &TestServer, user: &str, query: &str) -> Value {
    let request = as_user(server, reqwest::Method::POST, "/graphql", user);
    let response = request.json(&json!({"query": query})).send().await.unwrap();
    response.json().await.unwrap()
}

#[tokio::test]
async fn graphql_answers_under_the_same_rules() {
    let Secured { server, .. } = secured().await;
    orders(&server).await;
    let listing = "{ orderList { totalCount nodes { id owner status internalNote } } }";
    let alice = graphql_as(&server, "alice", listing).await;
    assert_eq!(
        alice["data"]["orderList"],
        json!({"totalCount": 2, "nodes": [
            {"id": "a1", "owner": "alice", "status": "paid", "internalNote": null},
            {"id": "a2", "owner": "alice", "status": null, "internalNote": null}
        ]}),
        "rows filtered, hidden properties absent: {alice:#}"
    );
    // The same query text by another identity is not answered from alice's kept answer.
    let bob = graphql_as(&server, "bob", listing).await;
    assert_eq!(bob["data"]["orderList"]["nodes"][0]["id"], "b1");
    assert_eq!(bob["data"]["orderList"]["totalCount"], 1);
    let other = graphql_as(&server, "alice", "{ order(id: \"b1\") { id } }").await;
    assert_eq!(
        other["data"]["order"],
        Value::Null,
        "another's record does not exist for her"
    );
    let named = graphql_as(
        &server,
        "alice",
        "{ orderList(filter: \"internalNote=vip\") { totalCount } }",
    )
    .await;
    assert_eq!(
        named["errors"][0]["extensions"]["code"], "forbidden",
        "{named:#}"
    );
    let written = graphql_as(
        &server,
        "alice",
        "mutation { putOrder(id: \"b9\", record: {owner: \"bob\", total: 1}) { id } }",
    )
    .await;
    assert!(
        written["errors"][0]["extensions"]["code"].is_string(),
        "{written:#}"
    );
    let response = as_user(&server, reqwest::Method::GET, "/Order/b9", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "the refused write wrote nothing");
    let anonymous = server
        .client
        .post(server.url("/graphql"))
        .json(&json!({"query": "{ orderList { totalCount } }"}))
        .send()
        .await
        .unwrap();
    let anonymous: Value = anonymous.json().await.unwrap();
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "unauthenticated"
    );
    let by_get = as_user(
        &server,
        reqwest::Method::GET,
        "/graphql?query=%7Bproduct(id%3A1)%7Bid%7D%7D",
        "alice",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(by_get.headers()["cache-control"], "private, no-cache");
    server.stop().await;
}
