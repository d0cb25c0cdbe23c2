// The WAMP meta API (Advanced Profile), served by the router itself:
// session, subscription and registration meta events and procedures,
// registration revocation and testaments, exercised with two Node.js
// clients nobody here wrote (autobahn-js, wampy) against the router at
// FENNEC_URL; the same features are tested with autobahn-python in
// tests/interop/test_meta.py.
//
// tests/node.rs runs this file against a router with --cores 1 and again
// with --cores 2; the router hands connections to its workers round-robin,
// and each test opens its sessions one after the other, so on --cores 2
// every list, count and event stream here spans both workers. Every wait
// has a timeout.
//
// The Node files run one after the other against one router, and a session
// a test closed may linger there for a moment: lists and counts are
// checked for the sessions a test opened (and settle when they should
// shrink), events are picked out by the IDs a test knows. The test of
// wamp.session.kill_by_authrole and kill_all, which end every other
// session of realm1, opens its own sessions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import autobahn from 'autobahn';
import { Wampy } from 'wampy';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';
import { within, sleep, unique, signal, AUTOBAHN, WAMPY, URL, STEP } from './lib.mjs';

// autobahn-js 26 uses the global WebSocket. This file always gives it the
// `ws` one, Node.js 22's native WebSocket notwithstanding, and keeps each
// socket so that a test can drop a connection without a close handshake
// (`terminate()`, which the native one lacks).
class TrackedWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    TrackedWebSocket.last = this;
  }
}
globalThis.WebSocket = TrackedWebSocket;

assert.ok(URL, 'FENNEC_URL is not set (run `cargo test --test node`)');

// WAMP message types.
const WELCOME = 2;
const GOODBYE = 6;
const RESULT = 50;
const UNREGISTERED = 67;

/** Waits until `check()` (sync or async) is true: meta events and tables follow a leave shortly after it. */
async function settle(check, what) {
  for (let i = 0; i < 250; i++) {
    if (await check()) return;
    await sleep(20);
  }
  assert.fail(`never true: ${what}`);
}

/**
 * An open autobahn-js session: `session`, the WELCOME `details`, `rx` and
 * `tx` (every WAMP message received and sent), `ws` (its socket), `left` (resolves with
 * {reason, details} when the connection closes: autobahn-js puts the
 * GOODBYE's reason and message in those details), `close()` and `drop()`
 * (the TCP connection goes without GOODBYE or WebSocket close).
 */
function autobahnSession(ser = 'json') {
  return within(
    new Promise((resolve, reject) => {
      const c = new autobahn.Connection({ url: URL, realm: 'realm1', serializers: [AUTOBAHN[ser]()], max_retries: 0 });
      const gone = signal();
      const peer = { rx: [], tx: [], left: gone.fired, ser };
      c.onopen = (session, details) => {
        const receive = session._socket.onmessage;
        session._socket.onmessage = (msg) => {
          peer.rx.push(msg);
          receive(msg);
        };
        const send = session._send_wamp;
        session._send_wamp = (msg) => {
          peer.tx.push(msg);
          send(msg);
        };
        Object.assign(peer, {
          session,
          details,
          id: session.id,
          ws: TrackedWebSocket.last,
          close: () => {
            try {
              c.close();
            } catch {
              // already closed
            }
          },
          drop: () => peer.ws.terminate(),
        });
        resolve(peer);
      };
      c.onclose = (reason, details) => {
        gone.fire({ reason, details });
        reject(new Error(`autobahn-js ${ser}: ${reason} ${JSON.stringify(details)}`));
        return true; // no reconnect
      };
      c.open();
    }),
    `autobahn-js ${ser} join`,
  );
}

/**
 * A joined wampy session; `w.rx` holds every WAMP message it received,
 * `w.closed` resolves when its connection closes, `w.id` is its session ID,
 * `w.drop()` ends the TCP connection without GOODBYE or WebSocket close.
 */
async function wampySession(ser = 'json') {
  const serializer = WAMPY[ser]();
  const gone = signal();
  const w = new Wampy(URL, {
    realm: 'realm1',
    ws: WebSocket,
    autoReconnect: false,
    onClose: () => gone.fire(),
    ...(serializer ? { serializer } : {}),
  });
  w.rx = [];
  w.closed = gone.fired;
  w.ser = ser;
  const decode = w._decode.bind(w);
  w._decode = (data) => {
    const msg = decode(data);
    w.rx.push(msg);
    return msg;
  };
  await within(w.connect(), `wampy ${ser} join`);
  // (wampy's MessagePack decoder gives 64-bit integers as BigInt; WAMP IDs
  // are below 2^53, so a Number holds them.)
  w.id = Number(w.getSessionId());
  w.drop = () => w._ws.terminate();
  return w;
}

/** Opens sessions one after the other (so they alternate workers); `kinds` like ['autobahn:json', 'wampy:cbor']. */
async function open(...kinds) {
  const peers = [];
  for (const kind of kinds) {
    const [client, ser] = kind.split(':');
    peers.push(client === 'wampy' ? await wampySession(ser) : await autobahnSession(ser));
  }
  return peers;
}

async function closeAll(peers) {
  for (const p of peers) {
    if (p instanceof Wampy) {
      await within(p.disconnect(), 'wampy disconnect').catch(() => {});
    } else {
      p.close();
    }
  }
}

/** autobahn-js errors carry the URI in `.error`, wampy's in `.errorUri`. */
const wampError = (uri) => (e) => {
  const got = e?.errorUri ?? e?.error;
  assert.equal(got, uri, `expected ${uri}, got ${got} (${e})`);
  return true;
};

/**
 * Calls `proc` from either client; resolves with RESULT.Arguments (an empty
 * list when there are none), read off the wire for autobahn-js, which
 * gives [] and [null] alike as null.
 */
async function callArgs(peer, proc, args = [], kwargs = undefined) {
  if (peer instanceof Wampy) {
    const payload = kwargs ? { argsList: args, argsDict: kwargs } : { argsList: args };
    const r = await within(peer.call(proc, payload), `RESULT of ${proc}`);
    return r.argsList ?? [];
  }
  const pending = peer.session.call(proc, args, kwargs);
  const request = peer.tx.at(-1)[1];
  await within(pending, `RESULT of ${proc}`);
  const result = peer.rx.find((m) => m[0] === RESULT && m[1] === request);
  return result[3] ?? [];
}

/** `callArgs`, the first positional result (undefined when there is none). */
const call = async (...a) => (await callArgs(...a))[0];

/** Calls `proc` and expects the given error URI. */
async function fails(peer, proc, args, error, kwargs = undefined) {
  await assert.rejects(call(peer, proc, args, kwargs), wampError(error), `${proc}(${JSON.stringify(args)})`);
}

/**
 * Subscribes `peer` to each topic; returns an inbox whose `items` are
 * {topic, args, kwargs} in arrival order and whose `until(pred, what)`
 * waits until pred(items) is true. (wampy subscribes over JSON only: see
 * advanced.test.mjs.)
 */
async function inbox(peer, ...topics) {
  const items = [];
  for (const topic of topics) {
    if (peer instanceof Wampy) {
      await within(
        peer.subscribe(topic, ({ argsList, argsDict }) => items.push({ topic, args: argsList ?? [], kwargs: argsDict ?? {} })),
        `SUBSCRIBED ${topic}`,
      );
    } else {
      await within(
        peer.session.subscribe(topic, (args, kwargs) => items.push({ topic, args: args ?? [], kwargs: kwargs ?? {} })),
        `SUBSCRIBED ${topic}`,
      );
    }
  }
  return {
    items,
    until: (pred, what) => settle(() => pred(items), what),
  };
}

/** The name of a meta event topic's last part: 'wamp.subscription.on_create' -> 'on_create'. */
const short = (topic) => topic.split('.').at(-1);

/** A meta `created` value: ISO 8601, and recent. */
function recent(created) {
  assert.equal(typeof created, 'string');
  assert.match(created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/, created);
  const age = Date.now() - Date.parse(created);
  assert.ok(age > -60_000 && age < 60_000, `created ${created} is ${age} ms from now`);
}

// ---------------------------------------------------------------------------
// WELCOME
// ---------------------------------------------------------------------------

test('WELCOME announces the meta APIs, registration revocation and testaments', async () => {
  const [ab, wy] = await open('autobahn:json', 'wampy:msgpack');
  try {
    for (const roles of [ab.details.roles, wy.rx.find((m) => m[0] === WELCOME)[2].roles]) {
      const { broker, dealer } = roles;
      assert.equal(broker.features.session_meta_api, true, JSON.stringify(roles));
      assert.equal(broker.features.subscription_meta_api, true, JSON.stringify(roles));
      for (const f of ['session_meta_api', 'registration_meta_api', 'registration_revocation', 'testament_meta_api']) {
        assert.equal(dealer.features[f], true, `dealer ${f}: ${JSON.stringify(roles)}`);
      }
    }
    // autobahn-js takes registration revocation up (it announces it as a callee).
    assert.equal(ab.session.features.callee.registration_revocation, true);
  } finally {
    await closeAll([ab, wy]);
  }
});

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

test('wamp.session.on_join and on_leave, seen by autobahn-js and wampy, for a clean leave and a dropped connection', async () => {
  const [abWatch, wyWatch] = await open('autobahn:json', 'wampy:json');
  const abSeen = await inbox(abWatch, 'wamp.session.on_join', 'wamp.session.on_leave');
  const wySeen = await inbox(wyWatch, 'wamp.session.on_join', 'wamp.session.on_leave');
  const [a, b] = await open('autobahn:cbor', 'wampy:msgpack');
  try {
    const joined = (items, id) => items.find((e) => short(e.topic) === 'on_join' && e.args[0]?.session === id);
    const left = (items, id) => items.find((e) => short(e.topic) === 'on_leave' && e.args[0] === id);
    for (const seen of [abSeen, wySeen]) {
      await seen.until((items) => joined(items, a.id) && joined(items, b.id), 'both on_join events');
      for (const [p, ser] of [
        [a, 'cbor'],
        [b, 'msgpack'],
      ]) {
        const e = joined(seen.items, p.id);
        assert.equal(e.args.length, 1);
        const d = e.args[0];
        const welcome = p instanceof Wampy ? p.rx.find((m) => m[0] === WELCOME)[2] : p.details;
        assert.equal(d.session, p.id);
        assert.equal(d.authid, welcome.authid);
        assert.equal(d.authrole, 'anonymous');
        assert.equal(d.authmethod, 'anonymous');
        assert.equal(typeof d.authprovider, 'string');
        assert.equal(d.transport.type, 'websocket', JSON.stringify(d));
        assert.equal(d.transport.serializer, ser, JSON.stringify(d));
      }
    }
    const who = [
      [a.id, a.details.authid, 'anonymous'],
      [b.id, b.rx.find((m) => m[0] === WELCOME)[2].authid, 'anonymous'],
    ];
    a.close(); // GOODBYE
    b.drop(); // no GOODBYE, no WebSocket close
    for (const seen of [abSeen, wySeen]) {
      await seen.until((items) => left(items, a.id) && left(items, b.id), 'both on_leave events');
      assert.deepEqual(left(seen.items, a.id).args, who[0]);
      assert.deepEqual(left(seen.items, b.id).args, who[1]);
      // One of each per session, the join first.
      for (const id of [a.id, b.id]) {
        const mine = seen.items.filter((e) => (e.args[0]?.session ?? e.args[0]) === id).map((e) => short(e.topic));
        assert.deepEqual(mine, ['on_join', 'on_leave']);
      }
    }
  } finally {
    await closeAll([abWatch, wyWatch, a, b]);
  }
});

test('wamp.session.count, list and get, from autobahn-js and wampy callers; errors for unknown sessions and wrong arguments', async () => {
  const [a, b, c] = await open('autobahn:json', 'wampy:json', 'wampy:cbor');
  try {
    const ids = [a.id, b.id, c.id];
    for (const caller of [a, b]) {
      const listed = await call(caller, 'wamp.session.list');
      assert.ok(Array.isArray(listed));
      for (const id of ids) assert.ok(listed.includes(id), `session ${id} not in ${listed}`);
      // The count is the list's length (once sessions of earlier tests are gone).
      await settle(async () => (await call(caller, 'wamp.session.count')) === (await call(caller, 'wamp.session.list')).length, 'count = list length');
      const n = await call(caller, 'wamp.session.count');
      assert.ok(n >= 3);
      // The authrole filter.
      assert.equal(await call(caller, 'wamp.session.count', [['nobody']]), 0);
      assert.deepEqual(await call(caller, 'wamp.session.list', [['nobody']]), []);
      const anon = await call(caller, 'wamp.session.list', [['nobody', 'anonymous']]);
      for (const id of ids) assert.ok(anon.includes(id));
      assert.ok((await call(caller, 'wamp.session.count', [['anonymous']])) >= 3);
    }
    // Details of a wampy CBOR session, asked by autobahn-js, and of an autobahn-js JSON one, asked by wampy.
    for (const [caller, p, ser] of [
      [a, c, 'cbor'],
      [b, a, 'json'],
    ]) {
      const d = await call(caller, 'wamp.session.get', [p.id]);
      const welcome = p instanceof Wampy ? p.rx.find((m) => m[0] === WELCOME)[2] : p.details;
      assert.equal(d.session, p.id);
      assert.equal(d.authid, welcome.authid);
      assert.equal(d.authrole, 'anonymous');
      assert.equal(d.authmethod, 'anonymous');
      assert.equal(typeof d.authprovider, 'string');
      assert.equal(d.transport.type, 'websocket');
      assert.equal(d.transport.serializer, ser);
    }
    // (Not c: wampy's CBOR encoder, cbor-x, sends integers above 2^32 as
    // floats, which are no WAMP IDs; a client limitation.)
    assert.equal((await call(b, 'wamp.session.get', [b.id])).session, b.id, 'a session asking about itself');

    await within(c.disconnect(), 'wampy disconnect');
    await settle(async () => !(await call(a, 'wamp.session.list')).includes(c.id), 'the session that left is no longer listed');
    await fails(a, 'wamp.session.get', [c.id], 'wamp.error.no_such_session');
    await fails(b, 'wamp.session.get', [c.id], 'wamp.error.no_such_session');

    for (const caller of [a, b]) {
      await fails(caller, 'wamp.session.get', ['not an id'], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.get', [], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.get', [1.5], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.list', [[1, 2]], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.list', ['anonymous'], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.count', ['anonymous'], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.count', [{ authrole: 'anonymous' }], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.nothing', [], 'wamp.error.no_such_procedure');
    }
  } finally {
    await closeAll([a, b, c]);
  }
});

test('wamp.session.kill: the victim gets GOODBYE with the reason and message given; itself or an unknown session is wamp.error.no_such_session', async () => {
  const [killer, v1, v2, wyKiller, v3] = await open('autobahn:json', 'autobahn:msgpack', 'wampy:json', 'wampy:json', 'autobahn:cbor');
  try {
    const leaves = await inbox(killer, 'wamp.session.on_leave');

    // autobahn-js kills autobahn-js, with a reason and a message.
    // (No result: the spec lists none.)
    assert.deepEqual(await callArgs(killer, 'wamp.session.kill', [v1.id], { reason: 'com.example.bye', message: 'go away' }), []);
    const gone = await within(v1.left, 'the victim closing');
    assert.equal(gone.details.reason, 'com.example.bye');
    assert.equal(gone.details.message, 'go away');
    assert.deepEqual(
      v1.rx.filter((m) => m[0] === GOODBYE),
      [[GOODBYE, { message: 'go away' }, 'com.example.bye']],
    );

    // autobahn-js kills wampy, no keyword arguments: wamp.close.killed and no message.
    await call(killer, 'wamp.session.kill', [v2.id]);
    await within(v2.closed, 'the wampy victim closing');
    assert.deepEqual(
      v2.rx.filter((m) => m[0] === GOODBYE),
      [[GOODBYE, {}, 'wamp.close.killed']],
    );

    // wampy kills autobahn-js.
    await call(wyKiller, 'wamp.session.kill', [v3.id], { reason: 'com.example.wampy', message: 'from wampy' });
    const gone3 = await within(v3.left, 'the third victim closing');
    assert.equal(gone3.details.reason, 'com.example.wampy');
    assert.equal(gone3.details.message, 'from wampy');

    await leaves.until((items) => [v1, v2, v3].every((v) => items.some((e) => e.args[0] === v.id)), 'on_leave of each victim');

    // Itself (no *other* session has its ID) and sessions that are gone.
    for (const [caller, self] of [
      [killer, killer.id],
      [wyKiller, wyKiller.id],
    ]) {
      for (const target of [self, v1.id, v2.id, v3.id]) {
        await fails(caller, 'wamp.session.kill', [target], 'wamp.error.no_such_session');
      }
      await fails(caller, 'wamp.session.kill', ['x'], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.kill', [], 'wamp.error.invalid_argument');
      await fails(caller, 'wamp.session.kill', [v1.id], 'wamp.error.invalid_argument', { message: 5 });
    }
    // The killers go on.
    assert.ok((await call(killer, 'wamp.session.count')) >= 2);
    assert.ok((await call(wyKiller, 'wamp.session.count')) >= 2);
  } finally {
    await closeAll([killer, v1, v2, wyKiller, v3]);
  }
});

// Spec (rfc/text/advanced/meta_api_sessions.md, wamp.session.kill and the
// kill_by_* and kill_all procedures, "Errors"): "wamp.error.invalid_uri - A
// `reason` keyword argument has a value that is not a valid non-empty URI."
test('wamp.session.kill and kill_by_*: a reason that is not a URI is wamp.error.invalid_uri', async () => {
  const [killer, wy, victim] = await open('autobahn:json', 'wampy:json', 'autobahn:cbor');
  try {
    for (const caller of [killer, wy]) {
      for (const reason of ['not a uri!', '']) {
        await fails(caller, 'wamp.session.kill', [victim.id], 'wamp.error.invalid_uri', { reason });
        await fails(caller, 'wamp.session.kill_by_authid', [victim.details.authid], 'wamp.error.invalid_uri', { reason });
        await fails(caller, 'wamp.session.kill_by_authrole', ['nobody'], 'wamp.error.invalid_uri', { reason });
        await fails(caller, 'wamp.session.kill_all', [], 'wamp.error.invalid_uri', { reason });
      }
    }
    // Nobody was killed by a refused call.
    assert.ok((await call(killer, 'wamp.session.list')).includes(victim.id));
  } finally {
    await closeAll([killer, wy, victim]);
  }
});

test('wamp.session.kill_by_authid, kill_by_authrole and kill_all end the other sessions, never the caller', async () => {
  // These end every other session of realm1: this test opens its own, and
  // no other test runs meanwhile (tests/node.rs, --test-concurrency=1).
  const [killer, a, b, c] = await open('autobahn:json', 'autobahn:cbor', 'wampy:json', 'autobahn:msgpack');
  try {
    const leaves = await inbox(killer, 'wamp.session.on_leave');
    const closed = (p) => (p instanceof Wampy ? p.closed : p.left);
    const goodbye = (p) => p.rx.filter((m) => m[0] === GOODBYE);

    // By authid (here unique per session): the killed sessions' IDs.
    assert.deepEqual(await call(killer, 'wamp.session.kill_by_authid', [a.details.authid]), [a.id]);
    const gone = await within(a.left, 'a closing');
    assert.equal(gone.details.reason, 'wamp.close.killed');
    assert.deepEqual(goodbye(a), [[GOODBYE, {}, 'wamp.close.killed']]);
    // The caller's own authid never kills the caller; an unknown one kills nobody.
    assert.deepEqual(await call(killer, 'wamp.session.kill_by_authid', [killer.details.authid]), []);
    assert.deepEqual(await call(killer, 'wamp.session.kill_by_authid', ['nobody-at-all']), []);
    await fails(killer, 'wamp.session.kill_by_authid', [42], 'wamp.error.invalid_argument');
    await fails(killer, 'wamp.session.kill_by_authid', [], 'wamp.error.invalid_argument');

    // By authrole: a count.
    assert.equal(await call(killer, 'wamp.session.kill_by_authrole', ['nobody']), 0);
    await fails(killer, 'wamp.session.kill_by_authrole', [['anonymous']], 'wamp.error.invalid_argument');
    const n = await call(killer, 'wamp.session.kill_by_authrole', ['anonymous'], { reason: 'com.example.role', message: 'role gone' });
    assert.ok(Number.isInteger(n) && n >= 2, `kill_by_authrole killed ${n}`);
    for (const p of [b, c]) await within(closed(p), 'a victim of kill_by_authrole closing');
    assert.deepEqual(goodbye(b), [[GOODBYE, { message: 'role gone' }, 'com.example.role']]);
    assert.deepEqual(goodbye(c), [[GOODBYE, { message: 'role gone' }, 'com.example.role']]);
    // Each session ended so far was announced to the caller.
    await leaves.until((items) => [a, b, c].every((p) => items.some((x) => x.args[0] === p.id)), 'on_leave of a, b and c');

    // kill_all, asked by wampy this time.
    const [wy, d, e] = await open('wampy:json', 'autobahn:json', 'wampy:cbor');
    const m = await call(wy, 'wamp.session.kill_all', [], { reason: 'com.example.all' });
    assert.ok(Number.isInteger(m) && m >= 3, `kill_all killed ${m}`); // killer, d, e
    await within(d.left, 'd closing');
    await within(e.closed, 'e closing');
    await within(killer.left, 'the first killer closing');
    assert.equal((await killer.left).details.reason, 'com.example.all');
    assert.deepEqual(goodbye(e), [[GOODBYE, {}, 'com.example.all']]);
    // The caller is still there, alone in the realm.
    await settle(async () => JSON.stringify(await call(wy, 'wamp.session.list')) === JSON.stringify([wy.id]), 'only the caller is listed');
    assert.equal(await call(wy, 'wamp.session.count'), 1);
    assert.equal(await call(wy, 'wamp.session.kill_all'), 0);
    await closeAll([wy]);
  } finally {
    await closeAll([killer, a, b, c]);
  }
});

// ---------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------

const SUB_EVENTS = ['on_create', 'on_subscribe', 'on_unsubscribe', 'on_delete'].map((e) => `wamp.subscription.${e}`);
const REG_EVENTS = ['on_create', 'on_register', 'on_unregister', 'on_delete'].map((e) => `wamp.registration.${e}`);

test('subscription meta events and procedures: an exact subscription of an autobahn-js and a wampy subscriber', async () => {
  const [watcher, a, b, wyAsk] = await open('autobahn:msgpack', 'autobahn:json', 'wampy:json', 'wampy:json');
  try {
    const events = await inbox(watcher, ...SUB_EVENTS);
    const topic = unique('com.example.meta.sub');
    const sa = await within(a.session.subscribe(topic, () => {}), 'SUBSCRIBED a');
    const sb = await within(b.subscribe(topic, () => {}), 'SUBSCRIBED b');
    assert.equal(sb.subscriptionId, sa.id, 'two subscribers of one topic got different subscription IDs');
    const id = sa.id;
    const mine = () => events.items.filter((e) => e.args[1] === id || e.args[1]?.id === id).map((e) => [short(e.topic), e.args[0]]);
    await events.until(() => mine().length >= 3, 'on_create and two on_subscribe');
    // on_create (named for the first subscriber) before its on_subscribe.
    assert.deepEqual(mine(), [
      ['on_create', a.id],
      ['on_subscribe', a.id],
      ['on_subscribe', b.id],
    ]);
    const created = events.items.find((e) => short(e.topic) === 'on_create' && e.args[1]?.id === id).args[1];
    assert.equal(created.uri, topic);
    assert.equal(created.match, 'exact');
    recent(created.created);

    for (const asker of [watcher, wyAsk]) {
      const listed = await call(asker, 'wamp.subscription.list');
      assert.ok(listed.exact.includes(id), JSON.stringify(listed));
      assert.ok(!listed.prefix.includes(id) && !listed.wildcard.includes(id));
      assert.equal(await call(asker, 'wamp.subscription.lookup', [topic]), id);
      assert.equal(await call(asker, 'wamp.subscription.lookup', [topic, { match: 'exact' }]), id);
      assert.equal(await call(asker, 'wamp.subscription.lookup', [topic, { match: 'prefix' }]), null);
      assert.equal(await call(asker, 'wamp.subscription.lookup', [`${topic}.x`]), null);
      assert.deepEqual(await call(asker, 'wamp.subscription.match', [topic]), [id]);
      assert.equal(await call(asker, 'wamp.subscription.match', [`${topic}.x`]), null);
      assert.deepEqual(await call(asker, 'wamp.subscription.get', [id]), created);
      assert.deepEqual((await call(asker, 'wamp.subscription.list_subscribers', [id])).sort(), [a.id, b.id].sort());
      assert.equal(await call(asker, 'wamp.subscription.count_subscribers', [id]), 2);
    }

    await within(a.session.unsubscribe(sa), 'UNSUBSCRIBED a');
    await events.until(() => mine().length >= 4, 'on_unsubscribe a');
    assert.deepEqual(mine()[3], ['on_unsubscribe', a.id]);
    await settle(async () => (await call(wyAsk, 'wamp.subscription.count_subscribers', [id])) === 1, 'one subscriber left');
    assert.deepEqual(await call(wyAsk, 'wamp.subscription.list_subscribers', [id]), [b.id]);
    await within(b.unsubscribe(sb.subscriptionId), 'UNSUBSCRIBED b');
    await events.until(() => mine().length >= 6, 'on_unsubscribe b and on_delete');
    // The last subscriber's on_unsubscribe, then on_delete naming it.
    assert.deepEqual(mine().slice(4), [
      ['on_unsubscribe', b.id],
      ['on_delete', b.id],
    ]);
    assert.deepEqual(events.items.find((e) => short(e.topic) === 'on_delete' && e.args[1] === id).args, [b.id, id]);

    for (const asker of [watcher, wyAsk]) {
      for (const proc of ['get', 'list_subscribers', 'count_subscribers']) {
        await fails(asker, `wamp.subscription.${proc}`, [id], 'wamp.error.no_such_subscription');
      }
      assert.equal(await call(asker, 'wamp.subscription.lookup', [topic]), null);
      assert.equal(await call(asker, 'wamp.subscription.match', [topic]), null);
      assert.ok(!(await call(asker, 'wamp.subscription.list')).exact.includes(id));
      for (const [proc, args] of [
        ['get', ['x']],
        ['get', []],
        ['list_subscribers', [-1]],
        ['count_subscribers', [{}]],
        ['lookup', [5]],
        ['lookup', [topic, 'prefix']],
        ['lookup', [topic, { match: 'regex' }]],
        ['match', []],
      ]) {
        await fails(asker, `wamp.subscription.${proc}`, args, 'wamp.error.invalid_argument');
      }
    }
  } finally {
    await closeAll([watcher, a, b, wyAsk]);
  }
});

test('subscription meta for prefix and wildcard subscriptions; a dropped subscriber ends them with on_unsubscribe then on_delete', async () => {
  const [a, watcher, wyAsk] = await open('autobahn:cbor', 'autobahn:json', 'wampy:json');
  try {
    const base = unique('com.example.meta.psub');
    const events = await inbox(watcher, ...SUB_EVENTS);
    const p = await within(a.session.subscribe(base, () => {}, { match: 'prefix' }), 'SUBSCRIBED prefix');
    const w = await within(a.session.subscribe(`${base}..z`, () => {}, { match: 'wildcard' }), 'SUBSCRIBED wildcard');
    const x = await within(a.session.subscribe(`${base}.y.z`, () => {}), 'SUBSCRIBED exact');
    assert.equal(new Set([p.id, w.id, x.id]).size, 3);
    await events.until((items) => items.filter((e) => short(e.topic) === 'on_create').length >= 3, 'three on_create');
    const created = (id) => events.items.find((e) => short(e.topic) === 'on_create' && e.args[1].id === id).args[1];
    assert.equal(created(p.id).match, 'prefix');
    assert.equal(created(w.id).match, 'wildcard');
    assert.equal(created(w.id).uri, `${base}..z`);
    for (const asker of [watcher, wyAsk]) {
      const listed = await call(asker, 'wamp.subscription.list');
      assert.ok(listed.prefix.includes(p.id) && listed.wildcard.includes(w.id) && listed.exact.includes(x.id), JSON.stringify(listed));
      // match: every subscription matching the topic, whatever its policy.
      assert.deepEqual((await call(asker, 'wamp.subscription.match', [`${base}.y.z`])).sort(), [p.id, w.id, x.id].sort());
      assert.deepEqual((await call(asker, 'wamp.subscription.match', [`${base}.q.z`])).sort(), [p.id, w.id].sort());
      assert.deepEqual(await call(asker, 'wamp.subscription.match', [`${base}.q`]), [p.id]);
      // lookup: the one subscription of that URI and policy.
      assert.equal(await call(asker, 'wamp.subscription.lookup', [`${base}..z`, { match: 'wildcard' }]), w.id);
      assert.equal(await call(asker, 'wamp.subscription.lookup', [base, { match: 'prefix' }]), p.id);
      assert.equal(await call(asker, 'wamp.subscription.lookup', [base]), null);
      assert.equal((await call(asker, 'wamp.subscription.get', [w.id])).match, 'wildcard');
      assert.equal(await call(asker, 'wamp.subscription.count_subscribers', [p.id]), 1);
    }
    a.drop();
    const ids = [p.id, w.id, x.id];
    await events.until((items) => ids.every((id) => items.some((e) => short(e.topic) === 'on_delete' && e.args[1] === id)), 'on_delete of all three');
    for (const id of ids) {
      const tail = events.items.filter((e) => e.args[1] === id && short(e.topic) !== 'on_subscribe').map((e) => [short(e.topic), e.args[0]]);
      assert.deepEqual(tail, [
        ['on_unsubscribe', a.id],
        ['on_delete', a.id],
      ]);
      await fails(wyAsk, 'wamp.subscription.get', [id], 'wamp.error.no_such_subscription');
    }
  } finally {
    await closeAll([a, watcher, wyAsk]);
  }
});

// ---------------------------------------------------------------------------
// Registrations
// ---------------------------------------------------------------------------

test('registration meta events and procedures: a shared registration of an autobahn-js and a wampy callee', async () => {
  const [watcher, a, b, wyAsk] = await open('autobahn:json', 'autobahn:cbor', 'wampy:json', 'wampy:json');
  try {
    const events = await inbox(watcher, ...REG_EVENTS);
    const uri = unique('com.example.meta.reg');
    const ra = await within(a.session.register(uri, () => 'a', { invoke: 'roundrobin' }), 'REGISTERED a');
    const rb = await within(b.register(uri, () => ({ argsList: ['b'] }), { invoke: 'roundrobin' }), 'REGISTERED b');
    assert.equal(rb.registrationId, ra.id);
    const id = ra.id;
    const mine = () => events.items.filter((e) => e.args[1] === id || e.args[1]?.id === id).map((e) => [short(e.topic), e.args[0]]);
    await events.until(() => mine().length >= 3, 'on_create and two on_register');
    assert.deepEqual(mine(), [
      ['on_create', a.id],
      ['on_register', a.id],
      ['on_register', b.id],
    ]);
    const created = events.items.find((e) => short(e.topic) === 'on_create' && e.args[1]?.id === id).args[1];
    assert.equal(created.uri, uri);
    assert.equal(created.match, 'exact');
    assert.equal(created.invoke, 'roundrobin');
    recent(created.created);

    for (const asker of [watcher, wyAsk]) {
      const listed = await call(asker, 'wamp.registration.list');
      assert.ok(listed.exact.includes(id) && !listed.prefix.includes(id) && !listed.wildcard.includes(id), JSON.stringify(listed));
      assert.equal(await call(asker, 'wamp.registration.lookup', [uri]), id);
      assert.equal(await call(asker, 'wamp.registration.lookup', [uri, { match: 'prefix' }]), null);
      assert.equal(await call(asker, 'wamp.registration.match', [uri]), id);
      assert.equal(await call(asker, 'wamp.registration.match', [`${uri}.x`]), null);
      assert.deepEqual(await call(asker, 'wamp.registration.get', [id]), created);
      // In the order of registration.
      assert.deepEqual(await call(asker, 'wamp.registration.list_callees', [id]), [a.id, b.id]);
      assert.equal(await call(asker, 'wamp.registration.count_callees', [id]), 2);
    }

    await within(ra.unregister(), 'UNREGISTERED a');
    await events.until(() => mine().length >= 4, 'on_unregister a');
    assert.deepEqual(mine()[3], ['on_unregister', a.id]);
    await settle(async () => (await call(wyAsk, 'wamp.registration.count_callees', [id])) === 1, 'one callee left');
    assert.deepEqual(await call(watcher, 'wamp.registration.list_callees', [id]), [b.id]);
    assert.equal(await call(wyAsk, uri), 'b');
    await within(b.unregister(uri), 'UNREGISTERED b');
    await events.until(() => mine().length >= 6, 'on_unregister b and on_delete');
    assert.deepEqual(mine().slice(4), [
      ['on_unregister', b.id],
      ['on_delete', b.id],
    ]);
    for (const asker of [watcher, wyAsk]) {
      for (const proc of ['get', 'list_callees', 'count_callees']) {
        await fails(asker, `wamp.registration.${proc}`, [id], 'wamp.error.no_such_registration');
      }
      assert.equal(await call(asker, 'wamp.registration.lookup', [uri]), null);
      assert.equal(await call(asker, 'wamp.registration.match', [uri]), null);
      for (const [proc, args] of [
        ['get', ['x']],
        ['list_callees', []],
        ['count_callees', [[id]]],
        ['lookup', [5]],
        ['lookup', [uri, { match: 7 }]],
        ['match', [null]],
      ]) {
        await fails(asker, `wamp.registration.${proc}`, args, 'wamp.error.invalid_argument');
      }
    }
  } finally {
    await closeAll([watcher, a, b, wyAsk]);
  }
});

test('wamp.registration.match is the registration a call would reach; lookup and list know the match policies', async () => {
  const [callee, wyCallee, asker] = await open('autobahn:msgpack', 'wampy:json', 'wampy:json');
  try {
    const base = unique('com.example.meta.rmatch');
    const exact = await within(callee.session.register(`${base}.a.b`, () => 'exact'), 'REGISTERED exact');
    const short_ = await within(callee.session.register(base, () => 'short', { match: 'prefix' }), 'REGISTERED short prefix');
    const long = (await within(wyCallee.register(`${base}.a`, () => ({ argsList: ['long'] }), { match: 'prefix' }), 'REGISTERED long prefix')).registrationId;
    const wild = await within(callee.session.register(`${base}..c`, () => 'wild', { match: 'wildcard', invoke: 'last' }), 'REGISTERED wildcard');
    const cases = [
      [`${base}.a.b`, exact.id, 'exact'],
      [`${base}.a.b.c`, long, 'long'],
      [`${base}.a`, long, 'long'],
      [`${base}.x.c`, short_.id, 'short'], // a prefix beats the wildcard
      [base, short_.id, 'short'],
    ];
    for (const [uri, id, who] of cases) {
      assert.equal(await call(asker, 'wamp.registration.match', [uri]), id, uri);
      assert.equal(await call(asker, uri), who, uri);
    }
    assert.equal(await call(asker, 'wamp.registration.match', [`${base}2`]), short_.id, 'prefix matching is on strings');
    assert.equal(await call(asker, 'wamp.registration.match', ['com.example.meta.nothing.here']), null);
    const listed = await call(asker, 'wamp.registration.list');
    assert.ok(listed.exact.includes(exact.id));
    assert.ok(listed.prefix.includes(short_.id) && listed.prefix.includes(long));
    assert.ok(listed.wildcard.includes(wild.id));
    assert.equal(await call(asker, 'wamp.registration.lookup', [`${base}.a`, { match: 'prefix' }]), long);
    assert.equal(await call(asker, 'wamp.registration.lookup', [`${base}.a`]), null);
    assert.equal(await call(asker, 'wamp.registration.lookup', [`${base}..c`, { match: 'wildcard' }]), wild.id);
    const d = await call(asker, 'wamp.registration.get', [wild.id]);
    assert.deepEqual([d.id, d.uri, d.match, d.invoke], [wild.id, `${base}..c`, 'wildcard', 'last']);
    assert.equal((await call(asker, 'wamp.registration.get', [exact.id])).invoke, 'single');
    assert.deepEqual(await call(asker, 'wamp.registration.list_callees', [long]), [wyCallee.id]);
    // A callee that drops takes its registrations: the call falls to the next best.
    wyCallee.drop();
    await settle(async () => (await call(asker, 'wamp.registration.match', [`${base}.a.b.c`])) === short_.id, 'the long prefix gone');
    assert.equal(await call(asker, `${base}.a.b.c`), 'short');
    await fails(asker, 'wamp.registration.get', [long], 'wamp.error.no_such_registration');
  } finally {
    await closeAll([callee, wyCallee, asker]);
  }
});

test('wamp.registration.remove revokes a registration: UNREGISTERED 0 only to a callee that announced registration_revocation', async () => {
  const [admin, ab, wy, other] = await open('autobahn:json', 'autobahn:msgpack', 'wampy:json', 'autobahn:cbor');
  try {
    const events = await inbox(admin, 'wamp.registration.on_unregister', 'wamp.registration.on_delete');
    const uri = unique('com.example.meta.revoke');
    const reg = await within(ab.session.register(uri, () => 'ab'), 'REGISTERED ab');
    const wyUri = `${uri}.wampy`;
    const wyReg = (await within(wy.register(wyUri, () => ({ argsList: ['wy'] })), 'REGISTERED wy')).registrationId;
    const sharedUri = `${uri}.shared`;
    const sharedReg = await within(ab.session.register(sharedUri, () => 'ab', { invoke: 'first' }), 'REGISTERED shared ab');
    await within(other.session.register(sharedUri, () => 'other', { invoke: 'first' }), 'REGISTERED shared other');
    assert.equal(await call(admin, uri), 'ab');
    assert.equal(await call(admin, wyUri), 'wy');
    assert.equal(await call(admin, sharedUri), 'ab');

    // autobahn-js: told, with the reason; its Registration.on_unregister resolves with it.
    const told = reg.on_unregister;
    assert.deepEqual(await callArgs(admin, 'wamp.registration.remove', [reg.id, ab.id, 'moving']), []);
    assert.equal(await within(told, 'on_unregister of the revoked registration'), 'moving');
    assert.deepEqual(
      ab.rx.filter((m) => m[0] === UNREGISTERED && m[1] === 0),
      [[UNREGISTERED, 0, { registration: reg.id, reason: 'moving' }]],
    );
    await events.until((items) => items.some((e) => short(e.topic) === 'on_delete' && e.args[1] === reg.id), 'on_delete of the revoked registration');
    assert.deepEqual(
      events.items.filter((e) => e.args[1] === reg.id).map((e) => [short(e.topic), ...e.args]),
      [
        ['on_unregister', ab.id, reg.id],
        ['on_delete', ab.id, reg.id],
      ],
    );
    await fails(admin, uri, [], 'wamp.error.no_such_procedure');

    // wampy does not announce registration_revocation: revoked all the same, but not told.
    await call(admin, 'wamp.registration.remove', [wyReg, wy.id]);
    await events.until((items) => items.some((e) => short(e.topic) === 'on_unregister' && e.args[1] === wyReg), 'on_unregister of the wampy registration');
    await fails(admin, wyUri, [], 'wamp.error.no_such_procedure');
    await sleep(50);
    assert.ok(!wy.rx.some((m) => m[0] === UNREGISTERED), `UNREGISTERED sent to a callee without registration_revocation: ${JSON.stringify(wy.rx)}`);
    assert.ok((await call(wy, 'wamp.session.count')) >= 1, 'the wampy callee is no longer connected');

    // One callee of a shared registration: the others serve on.
    await call(admin, 'wamp.registration.remove', [sharedReg.id, ab.id]);
    await within(sharedReg.on_unregister, 'on_unregister of the shared registration');
    assert.deepEqual(ab.rx.filter((m) => m[0] === UNREGISTERED).at(-1), [UNREGISTERED, 0, { registration: sharedReg.id }]);
    await settle(async () => (await call(admin, sharedUri).catch(() => null)) === 'other', 'the other callee serving');
    assert.deepEqual(await call(admin, 'wamp.registration.list_callees', [sharedReg.id]), [other.id]);

    // Gone is gone; a session that is no callee; wrong arguments.
    await fails(admin, 'wamp.registration.remove', [reg.id, ab.id], 'wamp.error.no_such_registration');
    await fails(admin, 'wamp.registration.remove', [sharedReg.id, ab.id], 'wamp.error.no_such_session');
    for (const args of [[], ['x', ab.id], [sharedReg.id], [sharedReg.id, 'x'], [sharedReg.id, other.id, 5]]) {
      await fails(admin, 'wamp.registration.remove', args, 'wamp.error.invalid_argument');
    }
    // autobahn-js still serves what was not revoked, and may register the URI again.
    await within(ab.session.register(uri, () => 'again'), 'REGISTERED again');
    assert.equal(await call(admin, uri), 'again');
  } finally {
    await closeAll([admin, ab, wy, other]);
  }
});

// ---------------------------------------------------------------------------
// Testaments
// ---------------------------------------------------------------------------

test('testaments: published when the connection drops, detached scope first, in the order added; flushed ones are not', async () => {
  const [watcher, dying, wyWatch] = await open('autobahn:json', 'autobahn:cbor', 'wampy:json');
  try {
    const topic = unique('com.example.meta.testament');
    const got = await inbox(watcher, topic);
    const wyGot = await inbox(wyWatch, topic);
    const add = (args, kwargs, options = {}) => callArgs(dying, 'wamp.session.add_testament', [topic, args, kwargs], options);
    // "wamp.session.add_testament does not return a value."
    assert.deepEqual(await add(['destroyed-1'], { n: 1 }), []);
    await add(['detached-flushed'], { n: 2 }, { scope: 'detached' });
    await add(['detached-flushed-2'], {}, { scope: 'detached' });
    await call(dying, 'wamp.session.flush_testaments', [], { scope: 'detached' });
    await add(['detached-1'], { n: 3 }, { scope: 'detached' });
    await add(['destroyed-2'], { n: 4 }, { scope: 'destroyed' });
    await add(['detached-2'], { n: 5 }, { scope: 'detached' });
    // Publish options are honoured: this one is for wampy only.
    await add(['for-wampy'], {}, { scope: 'destroyed', publish_options: { eligible: [wyWatch.id] } });
    // Wrong arguments add nothing.
    for (const [args, kwargs] of [
      [[topic, 'not a list', {}], {}],
      [[topic, [], 'not a dict'], {}],
      [[topic, [], {}], { scope: 'later' }],
      [[topic, [], {}], { scope: 5 }],
      [[topic, [], {}], { publish_options: 'none' }],
      [[42, [], {}], {}],
      [[], {}],
    ]) {
      await fails(dying, 'wamp.session.add_testament', args, 'wamp.error.invalid_argument', kwargs);
    }
    await fails(dying, 'wamp.session.flush_testaments', [], 'wamp.error.invalid_argument', { scope: 'sometime' });
    await sleep(50);
    assert.equal(got.items.length, 0, 'a testament was published while its session lived');

    dying.drop(); // no GOODBYE, no WebSocket close
    const want = [
      [['detached-1'], { n: 3 }],
      [['detached-2'], { n: 5 }],
      [['destroyed-1'], { n: 1 }],
      [['destroyed-2'], { n: 4 }],
    ];
    await got.until((items) => items.length >= 4, 'four testaments');
    await wyGot.until((items) => items.length >= 5, 'five testaments at wampy');
    await sleep(100);
    assert.deepEqual(got.items.map((e) => [e.args, e.kwargs]), want);
    assert.deepEqual(wyGot.items.map((e) => [e.args, e.kwargs]), [...want, [['for-wampy'], {}]]);
  } finally {
    await closeAll([watcher, dying, wyWatch]);
  }
});

test('testaments: a wampy session that says GOODBYE, or is killed, leaves its testaments; flush_testaments defaults to destroyed', async () => {
  const [watcher, leaving, killed] = await open('autobahn:msgpack', 'wampy:json', 'wampy:cbor');
  try {
    const topic = unique('com.example.meta.testament.wampy');
    const got = await inbox(watcher, topic);
    await call(leaving, 'wamp.session.add_testament', [topic, ['flushed'], {}]);
    await call(leaving, 'wamp.session.add_testament', [topic, ['kept-detached'], {}], { scope: 'detached' });
    // No scope: the destroyed ones go.
    await call(leaving, 'wamp.session.flush_testaments');
    await call(leaving, 'wamp.session.add_testament', [topic, ['bye'], { who: 'leaving' }]);
    await call(killed, 'wamp.session.add_testament', [topic, ['killed'], { who: 'killed' }]);
    await within(leaving.disconnect(), 'wampy GOODBYE');
    await got.until((items) => items.length >= 2, 'the leaving session testaments');
    await call(watcher, 'wamp.session.kill', [killed.id]);
    await within(killed.closed, 'the killed session closing');
    await got.until((items) => items.length >= 3, 'the killed session testament');
    await sleep(100);
    assert.deepEqual(
      got.items.map((e) => [e.args, e.kwargs]),
      [
        [['kept-detached'], {}],
        [['bye'], { who: 'leaving' }],
        [['killed'], { who: 'killed' }],
      ],
    );
  } finally {
    await closeAll([watcher, leaving, killed]);
  }
});
