// GraphQL clients nobody here wrote, against a running tablecast (the base URL is the first
// argument, with the Category and Product tables of tests/integration/graphql.rs, seeded):
// the `graphql` package validates the introspected schema and every query against it,
// graphql-request runs queries and mutations, graphql-ws subscribes, and Apollo Client sends
// automatic persisted queries by GET. Exits non-zero, saying why, on the first failure.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";

import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client/core/index.js";
import { createPersistedQueryLink } from "@apollo/client/link/persisted-queries/index.js";
import { buildClientSchema, getIntrospectionQuery, parse, printSchema, validate } from "graphql";
import { ClientError, GraphQLClient } from "graphql-request";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const base = process.argv[2];
const endpoint = `${base}/graphql`;

// The schema, as any tool would read it.
const introspection = await (
  await fetch(endpoint, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: getIntrospectionQuery() }),
  })
).json();
assert.equal(introspection.errors, undefined, JSON.stringify(introspection.errors));
const schema = buildClientSchema(introspection.data);
const field = (type, name) => schema.getType(type).getFields()[name];
const signature = (type, name) => {
  const f = field(type, name);
  return `${name}(${f.args.map((a) => `${a.name}: ${a.type}`).join(", ")}): ${f.type}`;
};
assert.equal(signature("Query", "product"), "product(id: ID!): Product");
assert.equal(
  signature("Query", "productList"),
  "productList(filter: String, sort: String, first: Int, after: String, where: ProductWhere): ProductConnection!",
);
assert.equal(String(field("Product", "category").type), "Category");
assert.equal(String(field("Product", "currency").type), "ProductCurrency");
assert.equal(String(field("Product", "dims").type), "ProductDims");
assert.equal(signature("Category", "products"), "products(filter: String, sort: String, first: Int): [Product!]!");
assert.equal(signature("Mutation", "putProduct"), "putProduct(id: ID!, record: ProductInput!): Product");
assert.equal(signature("Subscription", "productList"), "productList(filter: String): ProductChange!");
assert.ok(printSchema(schema).includes("enum ProductCurrency"));

const queries = {
  one: `query One($id: ID!) { product(id: $id) { id name price currency tags dims { w h } category { name parent { name } } } }`,
  page: `query Page($after: String) { productList(filter: "price=gt=10", sort: "-price", first: 2, after: $after) { totalCount nodes { id name } pageInfo { hasNextPage endCursor } } }`,
  tree: `{ categoryList { nodes { id products(first: 5) { name } children { id } } } }`,
  put: `mutation Put($id: ID!, $record: ProductInput!) { putProduct(id: $id, record: $record) { id name category { name } } }`,
  patch: `mutation Patch($id: ID!, $patch: ProductInput!) { patchProduct(id: $id, patch: $patch) { price } }`,
  changes: `subscription Changes { productList(filter: "price=lt=50") { type id version record { name category { name } } } }`,
  record: `subscription One { product(id: "50") { type id record { price } } }`,
};
for (const [name, text] of Object.entries(queries)) {
  const errors = validate(schema, parse(text));
  assert.deepEqual(errors, [], `query ${name} is valid against the schema: ${errors}`);
}

// Queries and mutations through graphql-request.
const client = new GraphQLClient(endpoint);
const one = await client.request(queries.one, { id: "1" });
assert.deepEqual(one.product.category, { name: "Lighting", parent: { name: "Home" } });
const first = await client.request(queries.page, {});
assert.equal(first.productList.totalCount, 4);
assert.deepEqual(first.productList.nodes.map((n) => n.name), ["Rug", "Shelf"]);
const second = await client.request(queries.page, { after: first.productList.pageInfo.endCursor });
assert.deepEqual(second.productList.nodes.map((n) => n.name), ["Chair", "Lamp"]);
assert.equal(second.productList.pageInfo.hasNextPage, false);
const tree = await client.request(queries.tree);
assert.deepEqual(tree.categoryList.nodes[0], { id: "home", products: [{ name: "Shelf" }, { name: "Rug" }], children: [{ id: "lighting" }] });
const put = await client.request(queries.put, { id: "60", record: { name: "Vase", price: 30, category: "home" } });
assert.deepEqual(put.putProduct, { id: "60", name: "Vase", category: { name: "Home" } });
try {
  await client.request(queries.patch, { id: "60", patch: { price: -5 } });
  assert.fail("a negative price is refused");
} catch (error) {
  assert.ok(error instanceof ClientError, String(error));
  const [refusal] = error.response.errors;
  assert.equal(refusal.extensions.code, "schema-violation");
  assert.equal(refusal.extensions.pointer, "/price");
}
const unchanged = await client.request(`{ product(id: 60) { price } }`);
assert.equal(unchanged.product.price, 30, "the refused patch changed nothing");

// Subscriptions through graphql-ws (graphql-transport-ws).
const ws = createClient({ url: endpoint.replace("http", "ws"), webSocketImpl: WebSocket, retryAttempts: 0 });
const seen = [];
const one_seen = [];
const watch = (query, into) =>
  new Promise((resolve, reject) => {
    ws.subscribe({ query }, { next: (value) => into.push(value), error: reject, complete: resolve });
  });
const changes = watch(queries.changes, seen);
watch(queries.record, one_seen);
await new Promise((resolve) => setTimeout(resolve, 500));
const rest = (method, path, body) =>
  fetch(`${base}${path}`, { method, headers: { "content-type": "application/json" }, body: body && JSON.stringify(body) });
assert.equal((await rest("PUT", "/Product/50", { id: 50, name: "Candle", price: 5, category: "home" })).status, 204);
assert.equal((await rest("PUT", "/Product/50", { id: 50, name: "Candle", price: 500, category: "home" })).status, 204);
assert.equal((await rest("DELETE", "/Product/50")).status, 204);
const until = Date.now() + 5000;
while ((seen.length < 2 || one_seen.length < 3) && Date.now() < until) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
assert.deepEqual(
  seen.map((e) => [e.data.productList.type, e.data.productList.id, e.data.productList.record?.name ?? null]),
  [["PUT", "50", "Candle"], ["LEAVE", "50", null]],
  JSON.stringify(seen),
);
assert.deepEqual(seen[0].data.productList.record.category, { name: "Home" });
assert.deepEqual(
  one_seen.map((e) => [e.data.product.type, e.data.product.record?.price ?? null]),
  [["PUT", 5], ["PUT", 500], ["DELETE", null]],
);
await ws.dispose();
await changes;

// Automatic persisted queries as Apollo Client sends them: the hash alone by GET first.
const sent = [];
const recordingFetch = async (url, options) => {
  const response = await fetch(url, options);
  sent.push({ method: options?.method ?? "GET", url: String(url), status: response.status, headers: response.headers });
  return response;
};
const sha256 = (text) => createHash("sha256").update(text).digest("hex");
const apollo = () =>
  new ApolloClient({
    cache: new InMemoryCache(),
    link: createPersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(
      new HttpLink({ uri: endpoint, fetch: recordingFetch }),
    ),
  });
const query = gql`query Named { product(id: "1") { id name } }`;
const first_apollo = await apollo().query({ query, fetchPolicy: "network-only" });
assert.equal(first_apollo.data.product.name, "Lamp");
assert.equal(sent[0].method, "GET");
assert.ok(sent[0].url.includes("sha256Hash") && !sent[0].url.includes("query="), sent[0].url);
assert.ok(sent.length >= 2, "the unknown hash was followed by the query");
sent.length = 0;
const again = await apollo().query({ query, fetchPolicy: "network-only" });
assert.equal(again.data.product.name, "Lamp");
assert.equal(sent.length, 1, "a known hash is one GET");
assert.equal(sent[0].method, "GET");
assert.match(sent[0].headers.get("etag"), /^"g[0-9a-f]{32}"$/);
assert.equal(sent[0].headers.get("cache-status"), "tablecast; hit");
console.log("graphql clients: ok");
