// WAMP interop with two Node.js clients nobody here wrote: autobahn-js and
// wampy, with JSON, MessagePack and CBOR, against the router at FENNEC_URL
// (tests/node.rs runs this on --cores 1 and on --cores 2, where consecutive
// connections land on different workers). Every wait has a timeout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import autobahn from 'autobahn';
import { Wampy } from 'wampy';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';
import { within, unique, AUTOBAHN, WAMPY, URL, STEP } from './lib.mjs';

// autobahn-js 26 uses the global WebSocket, which Node.js has from 22 on.
globalThis.WebSocket ??= WebSocket;

assert.ok(URL, 'FENNEC_URL is not set (run `cargo test --test node`)');

/** An open autobahn-js session, and a function that closes it. */
function autobahnSession(ser) {
  return within(
    new Promise((resolve, reject) => {
      const c = new autobahn.Connection({ url: URL, realm: 'realm1', serializers: [AUTOBAHN[ser]()], max_retries: 0 });
      c.onopen = (session) => resolve({ session, close: () => c.close() });
      c.onclose = (reason, details) => {
        reject(new Error(`autobahn-js ${ser}: ${reason} ${JSON.stringify(details)}`));
        return true; // no reconnect
      };
      c.open();
    }),
    `autobahn-js ${ser} join`,
  );
}

async function wampySession(ser) {
  const serializer = WAMPY[ser]();
  const w = new Wampy(URL, { realm: 'realm1', ws: WebSocket, autoReconnect: false, ...(serializer ? { serializer } : {}) });
  await within(w.connect(), `wampy ${ser} join`);
  return w;
}

for (const ser of ['json', 'msgpack', 'cbor']) {
  test(`autobahn-js ${ser}: RPC and pub/sub with wampy ${ser}`, async () => {
    const ab = await autobahnSession(ser);
    const wy = await wampySession(ser);
    try {
      const proc = unique('com.example.node.add');
      await within(wy.register(proc, ({ argsList, argsDict }) => ({ argsList: [argsList[0] + argsList[1], argsDict.tag] })), 'REGISTERED');
      const sum = await within(ab.session.call(proc, [2, 3], { tag: ser }), 'RESULT');
      assert.deepEqual(sum.args, [5, ser]);

      const topic = unique('com.example.node.topic');
      let delivered;
      const got = new Promise((resolve) => (delivered = resolve));
      await within(ab.session.subscribe(topic, (args, kwargs) => delivered({ args, kwargs })), 'SUBSCRIBED');
      await within(wy.publish(topic, { argsList: ['hello', 42], argsDict: { from: 'wampy' } }, { acknowledge: true }), 'PUBLISHED');
      const ev = await within(got, 'EVENT');
      assert.deepEqual(ev.args, ['hello', 42]);
      assert.deepEqual(ev.kwargs, { from: 'wampy' });

      // The other way: autobahn-js registers, wampy calls.
      const echo = unique('com.example.node.echo');
      await within(ab.session.register(echo, (args) => args[0]), 'REGISTERED');
      const back = await within(wy.call(echo, ['round trip']), 'RESULT');
      assert.deepEqual(back.argsList, ['round trip']);
      // A call to nothing is the router's error.
      await assert.rejects(within(wy.call(unique('com.example.node.none')), 'ERROR'), (e) =>
        /no_such_procedure/.test(`${e.error ?? ''} ${e.message ?? ''} ${JSON.stringify(e)}`),
      );
    } finally {
      await wy.disconnect();
      ab.close();
    }
  });
}

test('binary arguments cross from autobahn-js MessagePack to CBOR and back', async () => {
  const mp = await autobahnSession('msgpack');
  const cb = await autobahnSession('cbor');
  try {
    const proc = unique('com.example.node.bytes');
    await within(cb.session.register(proc, (args) => Buffer.from(args[0]).reverse()), 'REGISTERED');
    const res = await within(mp.session.call(proc, [Buffer.from([0, 1, 2, 255])]), 'RESULT');
    assert.deepEqual([...res], [255, 2, 1, 0]);
  } finally {
    mp.close();
    cb.close();
  }
});

test('progressive call results between wampy sessions (JSON callee, CBOR caller)', async () => {
  const callee = await wampySession('json');
  const caller = await wampySession('cbor');
  try {
    const proc = unique('com.example.node.progressive');
    await within(
      callee.register(proc, ({ argsList, details, result_handler }) => {
        assert.equal(details.receive_progress, true);
        for (let i = 0; i < argsList[0]; i++) {
          result_handler({ argsList: [i], options: { progress: true } });
        }
        return { argsList: ['done'] };
      }),
      'REGISTERED',
    );
    const seen = [];
    const final = await within(caller.call(proc, [5], { progress_callback: (r) => seen.push(r.argsList[0]) }), 'RESULT');
    assert.deepEqual(seen, [0, 1, 2, 3, 4]);
    assert.deepEqual(final.argsList, ['done']);
  } finally {
    await callee.disconnect();
    await caller.disconnect();
  }
});

test('wampy callers and publishers asking for disclosure are named to autobahn-js', async () => {
  const ab = await autobahnSession('msgpack');
  const wy = await wampySession('json');
  try {
    const proc = unique('com.example.node.who');
    await within(ab.session.register(proc, (args, kwargs, details) => [details.caller ?? null, details.caller_authrole ?? null]), 'REGISTERED');
    const me = wy.getSessionId();
    const named = await within(wy.call(proc, [], { disclose_me: true }), 'RESULT');
    // (autobahn-js sends a returned array as one argument.)
    assert.deepEqual(named.argsList, [[me, 'anonymous']]);
    const plain = await within(wy.call(proc, []), 'RESULT');
    assert.deepEqual(plain.argsList, [[null, null]]);

    const topic = unique('com.example.node.who.topic');
    let delivered;
    const got = new Promise((resolve) => (delivered = resolve));
    await within(ab.session.subscribe(topic, (args, kwargs, details) => delivered(details.publisher)), 'SUBSCRIBED');
    await within(wy.publish(topic, ['x'], { acknowledge: true, disclose_me: true }), 'PUBLISHED');
    assert.equal(await within(got, 'EVENT'), me);
  } finally {
    await wy.disconnect();
    ab.close();
  }
});
