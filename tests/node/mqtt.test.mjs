// MQTT interop with MQTT.js (the `mqtt` package) against the router at
// FENNEC_MQTT (HOST:PORT): MQTT 3.1 (protocol version 3, MQIsdp), 3.1.1 and
// 5, `$SYS`, and MQTT 5 reason codes. Every wait has a timeout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';

const ADDR = process.env.FENNEC_MQTT;
assert.ok(ADDR, 'FENNEC_MQTT is not set (run `cargo test --test node`)');
const STEP = 10_000;

const within = (promise, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${STEP} ms`)), STEP).unref()),
  ]);

const unique = (prefix) => `${prefix}/${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;

async function connect(protocolVersion, extra = {}) {
  // MQTT 3.1 is protocol name MQIsdp at level 3 (MQTT at level 3 is refused, CONNACK 1).
  const protocolId = protocolVersion === 3 ? 'MQIsdp' : 'MQTT';
  const options = { protocolId, protocolVersion, reconnectPeriod: 0, connectTimeout: STEP, ...extra };
  const client = mqtt.connect(`mqtt://${ADDR}`, options);
  await within(new Promise((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  }), `CONNACK (v${protocolVersion})`);
  return client;
}

const nextMessage = (client) =>
  within(new Promise((resolve) => client.once('message', (topic, payload, packet) => resolve({ topic, payload, packet }))), 'PUBLISH');

for (const [from, to] of [[3, 5], [5, 3], [4, 3]]) {
  test(`MQTT.js v${from} publishes to MQTT.js v${to}`, async () => {
    const sub = await connect(to);
    const pub = await connect(from);
    try {
      const topic = unique('node/mqtt');
      await within(sub.subscribeAsync(`${topic}/+`, { qos: 1 }), 'SUBACK');
      const got = nextMessage(sub);
      await within(pub.publishAsync(`${topic}/x`, Buffer.from([0, 1, 255]), { qos: 1 }), 'PUBACK');
      const m = await got;
      assert.equal(m.topic, `${topic}/x`);
      assert.deepEqual([...m.payload], [0, 1, 255]);
      assert.equal(m.packet.qos, 1);
    } finally {
      await sub.endAsync();
      await pub.endAsync();
    }
  });
}

test('MQTT.js v5 is told when nobody is subscribed (PUBACK 0x10), and may not publish to $SYS (0x87)', async () => {
  const c = await connect(5);
  try {
    // MQTT.js completes the publish either way; the PUBACK itself says 0x10.
    const acks = [];
    c.on('packetreceive', (packet) => packet.cmd === 'puback' && acks.push(packet.reasonCode ?? 0));
    await within(c.publishAsync(unique('node/nobody'), 'x', { qos: 1 }), 'PUBACK');
    assert.deepEqual(acks, [0x10]);
    await assert.rejects(within(c.publishAsync('$SYS/broker/version', 'spoof', { qos: 1 }), 'PUBACK'), (e) => e.code === 0x87);
  } finally {
    await c.endAsync();
  }
});

test('MQTT.js reads $SYS/broker/version, retained', async () => {
  const c = await connect(4);
  try {
    const got = nextMessage(c);
    await within(c.subscribeAsync('$SYS/broker/version'), 'SUBACK');
    const m = await got;
    assert.match(m.payload.toString(), /^fennec version /);
    assert.equal(m.packet.retain, true);
  } finally {
    await c.endAsync();
  }
});
