// Pattern-based and shared registrations (WAMP Advanced Profile, dealer),
// exercised with two Node.js clients nobody here wrote (autobahn-js,
// wampy) against the router at FENNEC_URL; the same features are tested
// with autobahn-python in tests/interop/test_registration.py.
//
// tests/node.rs runs this file against a router with --cores 1 and again
// with --cores 2; the router hands connections to its workers round-robin,
// and each test opens its sessions one after the other, so on --cores 2 the
// callees and callers of each test are spread over the workers. Every wait
// has a timeout. Each callee answers [its name, the procedure it was told
// it serves], so the tests see which registration a call went to and what
// INVOCATION.Details.procedure said; where a client would hide a missing
// Details.procedure (autobahn-js falls back to the registered URI), the
// INVOCATION on the wire is checked too.

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
const INVOCATION = 68;

/**
 * An open autobahn-js session: `session`, the WELCOME `details`, `rx` (every
 * WAMP message received), `ws` (its socket), `left` (resolves with
 * {reason, details} when the connection closes), `close()` and `drop()`
 * (the TCP connection goes without GOODBYE or WebSocket close).
 */
function autobahnSession(ser = 'json') {
  return within(
    new Promise((resolve, reject) => {
      const c = new autobahn.Connection({ url: URL, realm: 'realm1', serializers: [AUTOBAHN[ser]()], max_retries: 0 });
      const gone = signal();
      const peer = { rx: [], left: gone.fired, open: false };
      c.onopen = (session, details) => {
        const receive = session._socket.onmessage;
        session._socket.onmessage = (msg) => {
          peer.rx.push(msg);
          receive(msg);
        };
        Object.assign(peer, {
          session,
          details,
          ws: TrackedWebSocket.last,
          open: true,
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
        peer.open = false;
        gone.fire({ reason, details });
        reject(new Error(`autobahn-js ${ser}: ${reason} ${JSON.stringify(details)}`));
        return true; // no reconnect
      };
      c.open();
    }),
    `autobahn-js ${ser} join`,
  );
}

/** A joined wampy session; `w.rx` holds every WAMP message it received, `w.closed` resolves when its connection closes. */
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
  const decode = w._decode.bind(w);
  w._decode = (data) => {
    const msg = decode(data);
    w.rx.push(msg);
    return msg;
  };
  await within(w.connect(), `wampy ${ser} join`);
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
 * Registers a callee endpoint answering [name, the procedure it was told]
 * on an autobahn-js or a wampy session; resolves with the registration ID.
 */
async function serve(peer, name, uri, options = {}) {
  if (peer instanceof Wampy) {
    const r = await within(
      // (Like autobahn-js, fall back to the URI registered: the router names
      // the procedure called only for pattern registrations, as the spec asks.)
      peer.register(uri, ({ details }) => ({ argsList: [[name, details?.procedure ?? uri]] }), options),
      `REGISTERED ${uri}`,
    );
    return r.registrationId;
  }
  const reg = await within(
    peer.session.register(uri, (args, kwargs, details) => [name, details.procedure], options),
    `REGISTERED ${uri}`,
  );
  return reg.id;
}

/** Calls `uri` from an autobahn-js or a wampy session; resolves with the callee's [name, procedure]. */
async function who(caller, uri) {
  if (caller instanceof Wampy) {
    const r = await within(caller.call(uri), `RESULT of ${uri}`);
    return r.argsList[0];
  }
  return within(caller.session.call(uri), `RESULT of ${uri}`);
}

/** Calls `uri` and expects the given error. */
async function refused(caller, uri, error) {
  const call = caller instanceof Wampy ? caller.call(uri) : caller.session.call(uri);
  await assert.rejects(within(call, `ERROR of ${uri}`), wampError(error), uri);
}

const sessionId = (p) => (p instanceof Wampy ? p.getSessionId() : p.session.id);

// ---------------------------------------------------------------------------
// WELCOME
// ---------------------------------------------------------------------------

test('WELCOME announces pattern_based_registration and shared_registration, and both clients take them up', async () => {
  const [ab, wy] = await open('autobahn:json', 'wampy:cbor');
  try {
    const dealer = ab.details.roles.dealer.features;
    assert.equal(dealer.pattern_based_registration, true, JSON.stringify(dealer));
    assert.equal(dealer.shared_registration, true, JSON.stringify(dealer));
    // autobahn-js intersects its callee features with the router's.
    assert.equal(ab.session.features.callee.pattern_based_registration, true);
    assert.equal(ab.session.features.callee.shared_registration, true);
    const welcome = wy.rx.find((m) => m[0] === WELCOME);
    assert.equal(welcome[2].roles.dealer.features.pattern_based_registration, true);
    assert.equal(welcome[2].roles.dealer.features.shared_registration, true);
  } finally {
    await closeAll([ab, wy]);
  }
});

// ---------------------------------------------------------------------------
// Pattern-based registrations
// ---------------------------------------------------------------------------

test('prefix and wildcard registrations match as the spec defines them; the callee is told the URI called', async () => {
  const [pre, wild, caller, wyCaller] = await open('autobahn:msgpack', 'wampy:json', 'autobahn:cbor', 'wampy:msgpack');
  try {
    const base = unique('com.example.preg.def');
    // The spec's own examples (rpc_pattern_based_registration.md).
    await serve(pre, 'prefix', `${base}.myapp.myobject1`, { match: 'prefix' });
    await serve(wild, 'wildcard', `${base}.myapp..myprocedure1`, { match: 'wildcard' });
    for (const c of [caller, wyCaller]) {
      for (const uri of [
        `${base}.myapp.myobject1.myprocedure1`,
        `${base}.myapp.myobject1-mysubobject1`,
        `${base}.myapp.myobject1.mysubobject1.myprocedure1`,
        `${base}.myapp.myobject1`,
      ]) {
        // (wampy refuses to send a URI with a '-', loose as WAMP allows it.)
        if (c instanceof Wampy && uri.includes('-')) continue;
        assert.deepEqual(await who(c, uri), ['prefix', uri]);
      }
      for (const uri of [`${base}.myapp.myobject2.myprocedure1`, `${base}.myapp.xyz.myprocedure1`]) {
        assert.deepEqual(await who(c, uri), ['wildcard', uri]);
      }
      for (const uri of [
        `${base}.myapp.myobject2`,
        `${base}.myapp.myobject`,
        `${base}.myapp.myobject2.myprocedure1.mysubprocedure1`,
        `${base}.myapp.myobject2.myprocedure2`,
        `${base}.myapp2.myobject2.myprocedure1`,
      ]) {
        await refused(c, uri, 'wamp.error.no_such_procedure');
      }
    }
    // On the wire, every INVOCATION of a pattern registration names the
    // concrete procedure (autobahn-js would hide its absence).
    const invocations = pre.rx.filter((m) => m[0] === INVOCATION);
    assert.equal(invocations.length, 7);
    for (const m of invocations) assert.ok(m[3].procedure?.startsWith(`${base}.myapp.myobject1`), JSON.stringify(m));
  } finally {
    await closeAll([pre, wild, caller, wyCaller]);
  }
});

test('the most specific registration wins: exact, then the longest prefix, then the wildcard with the longer fixed runs first', async () => {
  // The spec's precedence example, each registration on its own callee
  // session (autobahn-js and wampy, several serializers), called by
  // autobahn-js and wampy callers.
  const kinds = ['autobahn:json', 'wampy:json', 'autobahn:msgpack', 'autobahn:cbor', 'wampy:json', 'autobahn:json', 'autobahn:msgpack'];
  const callees = await open(...kinds);
  const callers = await open('autobahn:cbor', 'wampy:json');
  try {
    const base = unique('com.example.preg.best');
    const u = (s) => `${base}.${s}`;
    const regs = [
      ['1', 'a1.b2.c3.d4.e55', undefined],
      ['2', 'a1.b2.c3', 'prefix'],
      ['3', 'a1.b2.c3.d4', 'prefix'],
      ['4', 'a1.b2..d4.e5', 'wildcard'],
      ['5', 'a1.b2.c33..e5', 'wildcard'],
      ['6', 'a1.b2..d4.e5..g7', 'wildcard'],
      ['7', 'a1.b2..d4..f6.g7', 'wildcard'],
    ];
    for (const [i, [name, uri, match]] of regs.entries()) {
      await serve(callees[i], name, u(uri), match ? { match } : {});
    }
    const cases = [
      ['a1.b2.c3.d4.e55', '1'], // exact
      ['a1.b2.c3.d98.e74', '2'], // one prefix match
      ['a1.b2.c3.d4.e325', '3'], // prefixes 2 and 3: the longer
      ['a1.b2.c3.d4', '3'], // a prefix matches its own URI
      ['a1.b2.c3', '2'],
      ['a1.b2.c55.d4.e5', '4'], // one wildcard match
      ['a1.b2.c88.d4.e5.f6.g7', '6'], // 6 and 7 share a1.b2; 6 has the longer second run (d4.e5)
      // The spec's example says RPC 5 here, but 'a1.b2.c3' is a string
      // prefix of 'a1.b2.c33.d4.e5', and the spec defines prefix matching
      // on strings ('com.myapp.myobject1' matches
      // 'com.myapp.myobject1-mysubobject1'); a prefix match beats any
      // wildcard. The wildcard precedence of 5 over 4 is checked below
      // without that prefix registration.
      ['a1.b2.c33.d4.e5', '2'],
    ];
    for (const caller of callers) {
      for (const [uri, want] of cases) {
        assert.deepEqual(await who(caller, u(uri)), [want, u(uri)], uri);
      }
      for (const uri of ['a2.b2.c2.d2.e2', 'a1.b2.c55.d4', 'a1.b2.c55.d4.e5.f6', 'a1.b2.c', 'a1.b2']) {
        await refused(caller, u(uri), 'wamp.error.no_such_procedure');
      }
    }

    // The wildcards alone (each callee registers one more pattern).
    const base2 = unique('com.example.preg.wild');
    const w = (s) => `${base2}.${s}`;
    for (const [name, uri] of regs.slice(3)) {
      await serve(callees[Number(name) - 1], `w${name}`, w(uri), { match: 'wildcard' });
    }
    for (const caller of callers) {
      assert.deepEqual(await who(caller, w('a1.b2.c55.d4.e5')), ['w4', w('a1.b2.c55.d4.e5')]);
      // 4 and 5 both match: 5's first run (a1.b2.c33) is longer.
      assert.deepEqual(await who(caller, w('a1.b2.c33.d4.e5')), ['w5', w('a1.b2.c33.d4.e5')]);
      assert.deepEqual(await who(caller, w('a1.b2.c88.d4.e5.f6.g7')), ['w6', w('a1.b2.c88.d4.e5.f6.g7')]);
      // Only 7 matches (6 wants e5 fifth).
      assert.deepEqual(await who(caller, w('a1.b2.c88.d4.e6.f6.g7')), ['w7', w('a1.b2.c88.d4.e6.f6.g7')]);
      await refused(caller, w('a1.b2.c33.d4.e6'), 'wamp.error.no_such_procedure');
    }
    // The wampy callees were told the concrete procedure too.
    for (const i of [1, 4]) {
      const seen = callees[i].rx.filter((m) => m[0] === INVOCATION);
      assert.ok(seen.length > 0, `callee ${i} was not invoked`);
      for (const m of seen) assert.ok(typeof m[3].procedure === 'string' && m[3].procedure !== '', JSON.stringify(m));
    }
  } finally {
    await closeAll([...callees, ...callers]);
  }
});

test('an exact and a prefix registration of one URI are two registrations; unregistering a pattern ends its matches', async () => {
  const [callee, caller] = await open('autobahn:json', 'wampy:cbor');
  try {
    const base = unique('com.example.preg.two');
    const exact = await serve(callee, 'exact', base);
    const prefix = await serve(callee, 'prefix', base, { match: 'prefix' });
    const wildcard = await serve(callee, 'wildcard', `${base}..z`, { match: 'wildcard' });
    assert.equal(new Set([exact, prefix, wildcard]).size, 3, 'registrations share an ID');
    assert.deepEqual(await who(caller, base), ['exact', base]);
    assert.deepEqual(await who(caller, `${base}.y`), ['prefix', `${base}.y`]);
    // A prefix match beats a wildcard one.
    assert.deepEqual(await who(caller, `${base}.y.z`), ['prefix', `${base}.y.z`]);

    const regs = Object.values(callee.session.registrations).flat();
    await within(regs.find((r) => r.id === prefix).unregister(), 'UNREGISTERED prefix');
    assert.deepEqual(await who(caller, base), ['exact', base]);
    assert.deepEqual(await who(caller, `${base}.y.z`), ['wildcard', `${base}.y.z`]);
    await refused(caller, `${base}.y`, 'wamp.error.no_such_procedure');
    await within(regs.find((r) => r.id === wildcard).unregister(), 'UNREGISTERED wildcard');
    await refused(caller, `${base}.y.z`, 'wamp.error.no_such_procedure');
    assert.deepEqual(await who(caller, base), ['exact', base]);

    // An empty component is a wildcard only with match: wildcard; unknown
    // policies are refused (autobahn-js sends the options as given).
    for (const [uri, options, error] of [
      [`${base}..x`, {}, 'wamp.error.invalid_uri'],
      [`${base}..x`, { match: 'prefix' }, 'wamp.error.invalid_uri'],
      [`${base}.r`, { match: 'regex' }, 'wamp.error.invalid_argument'],
      [`${base}.r`, { invoke: 'fastest' }, 'wamp.error.invalid_argument'],
    ]) {
      await assert.rejects(
        within(callee.session.register(uri, () => 'no', options), 'REGISTER ERROR'),
        wampError(error),
        `${uri} ${JSON.stringify(options)}`,
      );
    }
    await refused(caller, `${base}.r`, 'wamp.error.no_such_procedure');
  } finally {
    await closeAll([callee, caller]);
  }
});

test('a pattern registration goes with its callee: a dropped connection ends it, a longer prefix then yields to a shorter one', async () => {
  const [short, long, caller] = await open('autobahn:cbor', 'autobahn:json', 'wampy:json');
  try {
    const base = unique('com.example.preg.gone');
    await serve(short, 'short', base, { match: 'prefix' });
    await serve(long, 'long', `${base}.a`, { match: 'prefix' });
    assert.deepEqual(await who(caller, `${base}.a.b`), ['long', `${base}.a.b`]);
    long.drop();
    await within(long.left, 'the dropped connection closing');
    // The router notices the dropped connection shortly after. A call
    // routed to the dropped callee before that ends in
    // wamp.error.canceled ("callee left before answering"): try again.
    let got;
    for (let i = 0; i < 100; i++) {
      try {
        got = await who(caller, `${base}.a.b`);
      } catch (e) {
        if ((e?.errorUri ?? e?.error) !== 'wamp.error.canceled') throw e;
        got = ['canceled'];
      }
      if (got[0] === 'short') break;
      await sleep(20);
    }
    assert.deepEqual(got, ['short', `${base}.a.b`]);
  } finally {
    await closeAll([short, long, caller]);
  }
});

// ---------------------------------------------------------------------------
// Shared registrations
// ---------------------------------------------------------------------------

/** Registers `uri` with `invoke` on each callee, in order, as c0, c1, ... */
async function shared(callees, uri, invoke, match) {
  const ids = [];
  for (const [i, c] of callees.entries()) ids.push(await serve(c, `c${i}`, uri, { invoke, ...(match ? { match } : {}) }));
  assert.equal(new Set(ids).size, 1, `the callees of one shared registration got different IDs: ${ids}`);
  return ids[0];
}

const count = (names) => names.reduce((n, x) => ({ ...n, [x]: (n[x] ?? 0) + 1 }), {});

for (const invoke of ['roundrobin', 'first', 'last', 'random']) {
  test(`shared registration, invoke ${invoke}: three callees on different sessions, 30 calls from one caller`, async () => {
    const callees = await open('autobahn:json', 'wampy:json', 'autobahn:msgpack');
    const [caller] = await open(invoke === 'random' ? 'wampy:cbor' : 'autobahn:cbor');
    try {
      const uri = unique(`com.example.shared.${invoke}`);
      await shared(callees, uri, invoke);
      const got = [];
      for (let i = 0; i < 30; i++) {
        const [name, procedure] = await who(caller, uri);
        got.push(name);
        assert.equal(procedure, uri);
      }
      const counts = count(got);
      if (invoke === 'roundrobin') {
        // Picked in the order of registration, looping back.
        assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => `c${i % 3}`));
      } else if (invoke === 'first') {
        assert.deepEqual(counts, { c0: 30 });
      } else if (invoke === 'last') {
        assert.deepEqual(counts, { c2: 30 });
      } else {
        // 30 calls over 3 callees: each is picked (a miss is < 1e-5 likely).
        assert.deepEqual(Object.keys(counts).sort(), ['c0', 'c1', 'c2'], JSON.stringify(counts));
      }
    } finally {
      await closeAll([...callees, caller]);
    }
  });
}

// Spec (rfc/text/advanced/rpc_shared_registration.md, "Load Balancing"):
// "For 'roundrobin', callees are picked subsequently from the list of
// registrations (ordered by the order of registration), with the picking
// looping back to the beginning of the list once the end has been
// reached": load balancing "across calls to the URI", whoever calls.
// The owner of the registration keeps the one rotation: callers on other
// workers ask it to pick.
test('shared registration, roundrobin: callers on different workers share one rotation', async () => {
  const callees = await open('autobahn:json', 'autobahn:msgpack', 'autobahn:cbor');
  const callers = await open('autobahn:json', 'wampy:json');
  try {
    const uri = unique('com.example.shared.rr2');
    await shared(callees, uri, 'roundrobin');
    const got = [];
    for (let i = 0; i < 12; i++) got.push((await who(callers[i % 2], uri))[0]);
    assert.deepEqual(got, Array.from({ length: 12 }, (_, i) => `c${i % 3}`));
  } finally {
    await closeAll([...callees, ...callers]);
  }
});

test('shared registration and patterns: callees of one prefix pattern share it, an exact single registration of the URI stands apart', async () => {
  const [a, b, solo, caller] = await open('autobahn:cbor', 'wampy:json', 'autobahn:json', 'autobahn:msgpack');
  try {
    const base = unique('com.example.shared.prefix');
    const prefix = await shared([a, b], base, 'roundrobin', 'prefix');
    const exact = await serve(solo, 'solo', base);
    assert.notEqual(exact, prefix);
    const got = [];
    for (let i = 0; i < 4; i++) {
      const [name, procedure] = await who(caller, `${base}.x${i}`);
      assert.equal(procedure, `${base}.x${i}`);
      got.push(name);
    }
    assert.deepEqual(got, ['c0', 'c1', 'c0', 'c1']);
    assert.deepEqual(await who(caller, base), ['solo', base]);
  } finally {
    await closeAll([a, b, solo, caller]);
  }
});

test('shared registration: another invoke policy, single, the default, or the same session again is wamp.error.procedure_already_exists', async () => {
  const [a, b, wy] = await open('autobahn:json', 'autobahn:cbor', 'wampy:json');
  try {
    const uri = unique('com.example.shared.mismatch');
    await serve(a, 'a', uri, { invoke: 'roundrobin' });
    for (const invoke of ['random', 'first', 'last', 'single', undefined]) {
      await assert.rejects(
        within(b.session.register(uri, () => 'b', invoke ? { invoke } : {}), 'REGISTER ERROR'),
        wampError('wamp.error.procedure_already_exists'),
        `invoke ${invoke}`,
      );
    }
    await assert.rejects(
      within(wy.register(uri, () => ({ argsList: ['wy'] }), { invoke: 'first' }), 'REGISTER ERROR'),
      wampError('wamp.error.procedure_already_exists'),
    );
    // A session takes part in one registration once, whatever the policy.
    await assert.rejects(
      within(a.session.register(uri, () => 'again', { invoke: 'roundrobin' }), 'REGISTER ERROR'),
      wampError('wamp.error.procedure_already_exists'),
    );
    // The matching policy is still open to others.
    await serve(b, 'b', uri, { invoke: 'roundrobin' });
    await serve(wy, 'wy', uri, { invoke: 'roundrobin' });

    // single (explicit or by default) admits nobody else.
    for (const first of [{}, { invoke: 'single' }]) {
      const single = unique('com.example.shared.single');
      await serve(a, 'a', single, first);
      for (const invoke of ['single', 'roundrobin', undefined]) {
        await assert.rejects(
          within(b.session.register(single, () => 'b', invoke ? { invoke } : {}), 'REGISTER ERROR'),
          wampError('wamp.error.procedure_already_exists'),
          `${JSON.stringify(first)} then ${invoke}`,
        );
      }
      await assert.rejects(
        within(wy.register(single, () => ({ argsList: ['wy'] })), 'REGISTER ERROR'),
        wampError('wamp.error.procedure_already_exists'),
      );
    }
  } finally {
    await closeAll([a, b, wy]);
  }
});

test('shared registration: when a callee leaves, the next in line serves', async () => {
  const [c0, c1, c2, caller] = await open('autobahn:json', 'wampy:json', 'autobahn:cbor', 'autobahn:msgpack');
  try {
    // first: c0 says GOODBYE, c1 takes over.
    const first = unique('com.example.shared.leave.first');
    await shared([c0, c1, c2], first, 'first');
    // last: c2's connection drops, c1 takes over.
    const last = unique('com.example.shared.leave.last');
    await shared([c0, c1, c2], last, 'last');
    // roundrobin: the rotation goes on over those left.
    const rr = unique('com.example.shared.leave.rr');
    await shared([c0, c1, c2], rr, 'roundrobin');

    assert.equal((await who(caller, first))[0], 'c0');
    assert.equal((await who(caller, last))[0], 'c2');
    c0.close();
    await within(c0.left, 'c0 leaving');
    c2.drop();
    await within(c2.left, 'c2 dropped');
    // Both leave the registrations shortly after (the drop once the router
    // sees the connection go); until then a call may still pick them.
    const settled = async (uri, want) => {
      let got;
      for (let i = 0; i < 100; i++) {
        got = await who(caller, uri).catch((e) => [e.error]);
        if (got[0] === want) return;
        await sleep(20);
      }
      assert.fail(`${uri} still goes to ${got}`);
    };
    await settled(first, 'c1');
    await settled(last, 'c1');
    for (let i = 0; i < 5; i++) {
      assert.equal((await who(caller, first))[0], 'c1');
      assert.equal((await who(caller, last))[0], 'c1');
    }
    // The shared registration lives on with c1 alone.
    for (let i = 0; i < 4; i++) assert.equal((await who(caller, rr))[0], 'c1');
  } finally {
    await closeAll([c0, c1, c2, caller]);
  }
});

test('shared registration: after the last callee unregisters, a new policy may be chosen', async () => {
  const [a, b, caller] = await open('autobahn:msgpack', 'autobahn:json', 'wampy:json');
  try {
    const uri = unique('com.example.shared.reuse');
    await serve(a, 'a', uri, { invoke: 'first' });
    await serve(b, 'b', uri, { invoke: 'first' });
    for (const p of [a, b]) {
      const reg = Object.values(p.session.registrations).flat().find((r) => r.procedure === uri);
      await within(reg.unregister(), 'UNREGISTERED');
    }
    await refused(caller, uri, 'wamp.error.no_such_procedure');
    await serve(b, 'b2', uri, { invoke: 'last' });
    await serve(a, 'a2', uri, { invoke: 'last' });
    assert.deepEqual(await who(caller, uri), ['a2', uri]);
  } finally {
    await closeAll([a, b, caller]);
  }
});
