// MQTT.js over WebSocket against a tablecast server: node mqtt_ws.mjs ws://HOST:PORT/mqtt
// Exits 0 once every step held; prints what failed otherwise.
import assert from "node:assert/strict";
import mqtt from "mqtt";

const url = process.argv[2];
let step = "connecting";
setTimeout(() => {
  console.error(`timed out at: ${step}`);
  process.exit(2);
}, 30_000).unref();

// Messages are collected from the start: a session's kept messages may arrive in the same read
// as the CONNACK, before the caller's first await returns.
function connect(options) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 10_000, ...options });
    client.inbox = [];
    client.waiting = [];
    client.on("message", (topic, payload, packet) => {
      client.inbox.push({ topic, payload: payload.toString(), packet });
      // Each waiter that took its message stops waiting.
      client.waiting = client.waiting.filter((look) => !look());
    });
    client.once("connect", (connack) => resolve({ client, connack }));
    client.once("error", reject);
  });
}

// The first message collected that `wanted` takes (removed from the inbox).
function nextMessage(client, wanted = () => true) {
  return new Promise((resolve) => {
    const look = () => {
      const at = client.inbox.findIndex((m) => wanted(m.topic));
      if (at < 0) return false;
      resolve(client.inbox.splice(at, 1)[0]);
      return true;
    };
    if (!look()) client.waiting.push(look);
  });
}

const persistent = {
  protocolVersion: 5,
  clientId: "js-device",
  clean: false,
  properties: { sessionExpiryInterval: 300 },
};

// MQTT 5: a new persistent session, the table's current records, a record written.
let { client: device, connack } = await connect(persistent);
assert.equal(connack.sessionPresent, false);
step = "subscribing";
const current = nextMessage(device, (t) => t.startsWith("Item/"));
await device.subscribeAsync("Item/+", { qos: 1 });
await device.subscribeAsync("js/#", { qos: 1 });
step = "awaiting the current record";
const seeded = await current;
assert.equal(seeded.topic, "Item/seeded");
assert.equal(JSON.parse(seeded.payload).name, "from rest");
assert.equal(seeded.packet.retain, true, "current values arrive retained");
step = "writing a record";
await device.publishAsync("Item/fromjs", JSON.stringify({ name: "from MQTT.js" }), { qos: 1, retain: true });
step = "writing a bad record";
const refused = await device.publishAsync("Item/bad", JSON.stringify({ name: 5 }), { qos: 1, retain: true }).then(
  () => null,
  (error) => error,
);
assert.ok(refused, "a record that breaks the schema is refused");
assert.equal(refused.code, 0x99, `reason code: ${refused.code}`);
step = "disconnecting";
await device.endAsync();

step = "publishing while away";
// Published while it was away, at QoS 1, with properties.
const { client: other } = await connect({ protocolVersion: 5, clientId: "js-other" });
await other.publishAsync("js/news", "while away", {
  qos: 1,
  properties: { contentType: "text/plain", userProperties: { trace: "t1" } },
});

step = "reconnecting";
({ client: device, connack } = await connect(persistent));
assert.equal(connack.sessionPresent, true, "the session was kept");
step = "awaiting the kept message";
const kept = await nextMessage(device, (t) => t === "js/news");
assert.equal(kept.payload, "while away");
assert.equal(kept.packet.properties.contentType, "text/plain");
assert.deepEqual({ ...kept.packet.properties.userProperties }, { trace: "t1" });

// MQTT 3.1.1 over WebSocket, QoS 2 end to end.
step = "MQTT 3.1.1";
const { client: old } = await connect({ protocolVersion: 4, clientId: "js-311" });
await old.subscribeAsync("js/v311", { qos: 2 });
const heard = nextMessage(old, (t) => t === "js/v311");
await other.publishAsync("js/v311", "exactly once", { qos: 2 });
const got = await heard;
assert.equal(got.payload, "exactly once");
assert.equal(got.packet.qos, 2);

step = "ending";
await Promise.all([device.endAsync(), other.endAsync(), old.endAsync()]);
console.log("ok");
