// Payload passthru mode and progressive call invocations with wampy, the
// one client here that implements them, against the router at FENNEC_URL
// (tests/node.rs runs this on --cores 1 and --cores 2; sessions are opened
// one after another, so on two workers the peers are on different ones).
// Where wampy has no callee side for a feature, the other peer speaks WAMP
// by hand over `ws` (RawPeer). Every wait has a timeout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import autobahn from 'autobahn';
import { Wampy } from 'wampy';
import { JsonSerializer } from 'wampy/JsonSerializer.js';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';
import { within, sleep, unique, URL, STEP } from './lib.mjs';

globalThis.WebSocket ??= WebSocket;

assert.ok(URL, 'FENNEC_URL is not set (run `cargo test --test node`)');

const [WELCOME, ERROR, PUBLISH, SUBSCRIBE, SUBSCRIBED, EVENT, CALL, REGISTER, REGISTERED, INVOCATION, YIELD] = [
  2, 8, 16, 32, 33, 36, 48, 64, 65, 68, 70,
];
const PPT = { ppt_scheme: 'x_fennec', ppt_serializer: 'json', ppt_keyid: 'key-1' };

async function wampy(serializer, patch) {
  const payloadSerializers = { json: new JsonSerializer(), cbor: new CborSerializer(), msgpack: new MsgpackSerializer() };
  const w = new Wampy(URL, {
    realm: 'realm1',
    ws: WebSocket,
    autoReconnect: false,
    serializer: serializer ?? new JsonSerializer(),
    payloadSerializers,
  });
  if (patch) patch(w._wamp_features.roles);
  await within(w.connect(), 'wampy join');
  return w;
}

/** A WAMP peer written by hand (JSON over `ws`): `send`, `next()`, `close()`. */
class RawPeer {
  static async open(roles) {
    const p = new RawPeer();
    p.inbox = [];
    p.waiting = [];
    p.ws = new WebSocket(URL, ['wamp.2.json']);
    p.ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      const w = p.waiting.shift();
      if (w) w(msg);
      else p.inbox.push(msg);
    });
    await within(new Promise((resolve, reject) => {
      p.ws.once('open', resolve);
      p.ws.once('error', reject);
    }), 'WebSocket open');
    p.send([1, 'realm1', { roles }]);
    const welcome = await p.next();
    assert.equal(welcome[0], WELCOME, JSON.stringify(welcome));
    p.welcome = welcome;
    return p;
  }

  send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  next(what = 'message') {
    if (this.inbox.length) return Promise.resolve(this.inbox.shift());
    return within(new Promise((resolve) => this.waiting.push(resolve)), what);
  }

  async quiet(ms = 300) {
    await sleep(ms);
    assert.deepEqual(this.inbox, [], 'no further message');
  }

  close() {
    this.ws.close();
  }
}

test('payload passthru: wampy publishes, wampy (MessagePack, CBOR inner) and a raw subscriber get it untouched', async () => {
  const topic = unique('com.fennec.node.ppt');
  const raw = await RawPeer.open({ subscriber: { features: { payload_passthru_mode: true } } });
  const sub = await wampy(new MsgpackSerializer());
  const pub = await wampy(new MsgpackSerializer());
  const jsonPub = await wampy();
  try {
    raw.send([SUBSCRIBE, 1, {}, topic]);
    assert.equal((await raw.next('SUBSCRIBED'))[0], SUBSCRIBED);
    const got = [];
    await within(sub.subscribe(topic, (e) => got.push(e)), 'SUBSCRIBED');
    const options = { ppt_scheme: 'x_fennec', ppt_serializer: 'cbor', ppt_cipher: 'none_really', ppt_keyid: 'k' };
    await within(pub.publish(topic, { argsList: [1, 'two'], argsDict: { k: 'v' } }, { ...options, acknowledge: true }), 'PUBLISHED');
    // The raw JSON subscriber sees the opaque CBOR bytes as the binary
    // convention, and the ppt options in the details.
    const event = await raw.next('EVENT');
    assert.equal(event[0], EVENT);
    for (const [k, v] of Object.entries(options)) assert.equal(event[3][k], v, k);
    assert.equal(typeof event[4][0], 'string');
    assert.ok(event[4][0].startsWith('\u0000'), 'a binary payload in JSON');
    for (let i = 0; i < 100 && got.length === 0; i++) await sleep(20);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].argsList, [1, 'two']);
    assert.deepEqual(got[0].argsDict, { k: 'v' });
    assert.equal(got[0].details.ppt_scheme, 'x_fennec');
    // JSON inner payload from a JSON publisher: the raw subscriber gets the
    // very string wampy encoded.
    await within(jsonPub.publish(topic, { argsList: ['x'] }, { ...PPT, acknowledge: true }), 'PUBLISHED');
    const second = await raw.next('EVENT');
    assert.equal(second[3].ppt_serializer, 'json');
    assert.deepEqual(JSON.parse(second[4][0]), { args: ['x'] });
  } finally {
    raw.close();
    await Promise.allSettled([sub.disconnect(), pub.disconnect(), jsonPub.disconnect()]);
  }
});

test('payload passthru: wampy calls a wampy callee, both ways in the mode', async () => {
  const proc = unique('com.fennec.node.ppt.proc');
  const callee = await wampy();
  const caller = await wampy();
  try {
    let seen;
    await within(
      callee.register(proc, ({ argsList, details }) => {
        seen = { argsList, details };
        return { argsList: [argsList[0] * 2], options: { ppt_scheme: 'x_fennec', ppt_serializer: 'json' } };
      }),
      'REGISTERED',
    );
    const result = await within(caller.call(proc, [21], PPT), 'RESULT');
    assert.deepEqual(result.argsList, [42]);
    assert.equal(result.details.ppt_scheme, 'x_fennec');
    assert.deepEqual(seen.argsList, [21]);
    assert.equal(seen.details.ppt_keyid, 'key-1');
  } finally {
    await Promise.allSettled([callee.disconnect(), caller.disconnect()]);
  }
});

test('payload passthru: a callee that does not take it (autobahn-js) is feature_not_supported for the wampy caller', async () => {
  const proc = unique('com.fennec.node.ppt.plain');
  const conn = new autobahn.Connection({ url: URL, realm: 'realm1', max_retries: 0 });
  const session = await within(new Promise((resolve) => {
    conn.onopen = resolve;
    conn.open();
  }), 'autobahn-js join');
  const caller = await wampy();
  try {
    let invoked = false;
    await within(session.register(proc, () => { invoked = true; return 1; }), 'REGISTERED');
    await assert.rejects(within(caller.call(proc, [1], PPT), 'ERROR'), (e) => e.errorUri === 'wamp.error.feature_not_supported');
    assert.equal(invoked, false);
    // Without the mode the same call works.
    assert.deepEqual((await within(caller.call(proc, [1]), 'RESULT')).argsList, [1]);
  } finally {
    conn.close();
    await caller.disconnect().catch(() => {});
  }
});

// wampy's progressiveCall sends CALL progress: true, but its HELLO does not
// announce progressive_call_invocations (a wampy omission: the spec makes
// that a protocol violation, and the router aborts such a caller), so the
// test adds the announcement. wampy has no callee side for the feature: the
// callee is a RawPeer announcing it and call_canceling, as the spec requires.
test('progressive call invocations: wampy progressiveCall, chunks reach one invocation in order', async () => {
  const proc = unique('com.fennec.node.pci');
  const callee = await RawPeer.open({
    callee: { features: { progressive_call_invocations: true, call_canceling: true } },
  });
  const caller = await wampy(undefined, (roles) => {
    roles.caller.features.progressive_call_invocations = true;
  });
  try {
    callee.send([REGISTER, 1, {}, proc]);
    const registered = await callee.next('REGISTERED');
    assert.equal(registered[0], REGISTERED);
    const { result, sendData } = caller.progressiveCall(proc, [0]);
    const first = await callee.next('INVOCATION');
    assert.equal(first[0], INVOCATION);
    assert.deepEqual(first[3], { progress: true });
    const invocation = first[1];
    sendData([1], { progress: true });
    sendData([2], { progress: true });
    sendData([3], { progress: false });
    const chunks = [first[4]];
    for (let i = 1; i <= 3; i++) {
      const msg = await callee.next('INVOCATION');
      assert.equal(msg[0], INVOCATION);
      assert.equal(msg[1], invocation, 'the same invocation ID');
      assert.deepEqual(msg[3], i < 3 ? { progress: true } : {});
      chunks.push(msg[4]);
    }
    assert.deepEqual(chunks, [[0], [1], [2], [3]]);
    callee.send([YIELD, invocation, {}, [6]]);
    assert.deepEqual((await within(result, 'RESULT')).argsList, [6]);
    await callee.quiet();
  } finally {
    callee.close();
    await caller.disconnect().catch(() => {});
  }
});

test('progressive call invocations: a callee without the feature is feature_not_supported', async () => {
  const proc = unique('com.fennec.node.pci.plain');
  const callee = await RawPeer.open({ callee: { features: { call_canceling: true } } });
  const caller = await wampy(undefined, (roles) => {
    roles.caller.features.progressive_call_invocations = true;
  });
  try {
    callee.send([REGISTER, 1, {}, proc]);
    assert.equal((await callee.next('REGISTERED'))[0], REGISTERED);
    const { result } = caller.progressiveCall(proc, [0]);
    await assert.rejects(within(result, 'ERROR'), (e) => e.errorUri === 'wamp.error.feature_not_supported');
    await callee.quiet();
  } finally {
    callee.close();
    await caller.disconnect().catch(() => {});
  }
});
