// The WAMP Advanced Profile features the router announces, exercised with
// two Node.js clients nobody here wrote (autobahn-js, wampy) against the
// router at FENNEC_URL. tests/node.rs runs this file against a router with
// --cores 1 and again with --cores 2; the router hands connections to its
// workers round-robin, and each test opens its sessions one after the
// other, so on --cores 2 the peers of each exchange sit on different
// workers. Every wait has a timeout.
//
// What is asserted is what goes over the wire where the clients would hide
// it: each session records the WAMP messages it receives (and, for
// autobahn-js, sends), so "no late RESULT", "no INTERRUPT" and "progress
// RESULTs before the final one" are checked on the messages themselves.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import autobahn from 'autobahn';
import { Wampy } from 'wampy';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';
import { within, sleep, unique, signal, AUTOBAHN, WAMPY, URL, STEP } from './lib.mjs';

// autobahn-js 26 uses the global WebSocket, which Node.js has from 22 on.
globalThis.WebSocket ??= WebSocket;

assert.ok(URL, 'FENNEC_URL is not set (run `cargo test --test node`)');

// WAMP message types.
const ERROR = 8;
const CALL = 48;
const RESULT = 50;
const INTERRUPT = 69;

/**
 * An open autobahn-js session: `session`, the WELCOME `details`, `rx` and
 * `tx` (every WAMP message received and sent), `lost` (set when the
 * connection closed without `close()` being called) and `close()`.
 */
function autobahnSession(ser = 'json') {
  return within(
    new Promise((resolve, reject) => {
      const c = new autobahn.Connection({ url: URL, realm: 'realm1', serializers: [AUTOBAHN[ser]()], max_retries: 0 });
      const peer = { rx: [], tx: [], lost: null, closing: false };
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
          close: () => {
            peer.closing = true;
            try {
              c.close();
            } catch {
              // already closed
            }
          },
        });
        resolve(peer);
      };
      c.onclose = (reason, details) => {
        if (!peer.closing) peer.lost = `${reason} ${JSON.stringify(details)}`;
        reject(new Error(`autobahn-js ${ser}: ${reason} ${JSON.stringify(details)}`));
        return true; // no reconnect
      };
      c.open();
    }),
    `autobahn-js ${ser} join`,
  );
}

/** The request ID autobahn-js gave its latest CALL of `procedure`. */
function callRequest(peer, procedure) {
  const sent = peer.tx.filter((m) => m[0] === CALL && m[3] === procedure);
  assert.ok(sent.length > 0, `no CALL of ${procedure} was sent`);
  return sent.at(-1)[1];
}

/**
 * A joined wampy session; `w.rx` holds every WAMP message it received.
 * (wampy 8 subscribes with `{match: undefined, get_retained: undefined}`,
 * which MessagePack and CBOR carry as nil options the router refuses, so
 * the tests subscribe with wampy over JSON only.)
 */
async function wampySession(ser = 'json') {
  const serializer = WAMPY[ser]();
  const w = new Wampy(URL, { realm: 'realm1', ws: WebSocket, autoReconnect: false, ...(serializer ? { serializer } : {}) });
  w.rx = [];
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

/** autobahn-js errors carry the URI in `.error`; wampy's too. */
const wampError = (uri) => (e) => {
  const got = e?.errorUri ?? e?.error; // wampy, autobahn-js
  assert.equal(got, uri, `expected ${uri}, got ${got} (${e})`);
  return true;
};

/** Asserts that `peer` is still connected and routed: it calls `proc` (registered elsewhere) and gets `want`. */
async function stillServed(peer, proc, want) {
  if (peer instanceof Wampy) {
    const r = await within(peer.call(proc, ['ping']), `RESULT of ${proc}`);
    assert.deepEqual(r.argsList, [want]);
  } else {
    assert.equal(peer.lost, null, `the autobahn-js session was closed: ${peer.lost}`);
    assert.equal(await within(peer.session.call(proc, ['ping']), `RESULT of ${proc}`), want);
  }
}

// ---------------------------------------------------------------------------
// WELCOME
// ---------------------------------------------------------------------------

test('WELCOME announces the broker and dealer features, and autobahn-js and wampy take them up', async () => {
  const [ab, wy] = await open('autobahn:json', 'wampy:cbor');
  try {
    const { roles } = ab.details;
    for (const f of ['publisher_exclusion', 'pattern_based_subscription', 'publisher_identification', 'subscriber_blackwhite_listing']) {
      assert.equal(roles.broker?.features?.[f], true, `broker feature ${f} in ${JSON.stringify(roles)}`);
    }
    for (const f of ['progressive_call_results', 'caller_identification', 'call_timeout', 'call_canceling']) {
      assert.equal(roles.dealer?.features?.[f], true, `dealer feature ${f} in ${JSON.stringify(roles)}`);
    }
    // The anonymous identity the black/whitelisting tests rely on.
    assert.equal(ab.details.authid, `anonymous-${ab.session.id}`);
    assert.equal(ab.details.authrole, 'anonymous');
    // autobahn-js intersects its own features with the router's.
    const f = ab.session.features;
    assert.equal(f.caller.progressive_call_results, true);
    assert.equal(f.caller.call_canceling, true);
    assert.equal(f.caller.caller_identification, true);
    assert.equal(f.publisher.subscriber_blackwhite_listing, true);
    assert.equal(f.publisher.publisher_exclusion, true);
    assert.equal(f.publisher.publisher_identification, true);
    assert.equal(f.subscriber.pattern_based_subscription, true);
    assert.equal(f.subscriber.publisher_identification, true);
    // And leaves off whatever the router does not announce.
    for (const [role, side] of [
      ['caller', 'dealer'],
      ['callee', 'dealer'],
      ['publisher', 'broker'],
      ['subscriber', 'broker'],
    ]) {
      for (const [feature, on] of Object.entries(f[role])) {
        assert.equal(Boolean(on), roles[side].features[feature] === true, `${role}.${feature}`);
      }
    }
    // wampy (CBOR) got the same roles.
    const welcome = wy.rx.find((m) => m[0] === 2);
    assert.deepEqual(welcome[2].roles, roles);
  } finally {
    await closeAll([ab, wy]);
  }
});

// ---------------------------------------------------------------------------
// Progressive call results
// ---------------------------------------------------------------------------

for (const [callerSer, calleeSer] of [
  ['json', 'msgpack'],
  ['cbor', 'json'],
]) {
  test(`progressive results: autobahn-js ${callerSer} caller, autobahn-js ${calleeSer} callee, in order before the final one`, async () => {
    const [caller, callee] = await open(`autobahn:${callerSer}`, `autobahn:${calleeSer}`);
    try {
      const proc = unique('com.example.adv.progress');
      let asked;
      await within(
        callee.session.register(proc, async (args, kwargs, details) => {
          asked = typeof details.progress;
          for (let i = 0; i < args[0]; i++) {
            details.progress([i], { step: i });
            await sleep(5);
          }
          return new autobahn.Result(['done'], { steps: args[0] });
        }),
        'REGISTERED',
      );
      const seen = [];
      const call = caller.session.call(proc, [5], {}, { receive_progress: true });
      call.then(undefined, undefined, (r) => seen.push(r.kwargs.step));
      const final = await within(call, 'final RESULT');
      assert.equal(asked, 'function', 'the callee was not told receive_progress');
      assert.deepEqual(final.args, ['done']);
      assert.deepEqual(final.kwargs, { steps: 5 });
      await sleep(20); // when.js may deliver notifications a tick late
      assert.deepEqual(seen, [0, 1, 2, 3, 4]);

      // On the wire: five progress RESULTs, in order, then one final one.
      const request = callRequest(caller, proc);
      const results = caller.rx.filter((m) => m[0] === RESULT && m[1] === request);
      assert.deepEqual(
        results.map((m) => [m[2].progress === true, m[3], m[4]]),
        [
          ...[0, 1, 2, 3, 4].map((i) => [true, [i], { step: i }]),
          [false, ['done'], { steps: 5 }],
        ],
      );
      // The callee was given receive_progress on its INVOCATION.
      const inv = callee.rx.find((m) => m[0] === 68 && m[4]?.[0] === 5);
      assert.equal(inv[3].receive_progress, true);
    } finally {
      await closeAll([caller, callee]);
    }
  });
}

test('progressive results: wampy caller, autobahn-js callee, empty progress results and a final with no payload', async () => {
  const [caller, callee] = await open('wampy:msgpack', 'autobahn:cbor');
  try {
    const proc = unique('com.example.adv.progress.wampy');
    await within(
      callee.session.register(proc, async (args, kwargs, details) => {
        details.progress(['a']);
        details.progress(); // a "still working" signal: no payload
        details.progress([], { b: 2 });
        await sleep(5);
        return new autobahn.Result([], {});
      }),
      'REGISTERED',
    );
    const seen = [];
    const final = await within(caller.call(proc, [], { progress_callback: (r) => seen.push([r.argsList ?? null, r.argsDict ?? null]) }), 'RESULT');
    assert.deepEqual(seen, [
      [['a'], null],
      [null, null],
      [[], { b: 2 }],
    ]);
    assert.deepEqual([final.argsList ?? [], final.argsDict ?? {}], [[], {}]);
  } finally {
    await closeAll([caller, callee]);
  }
});

test('progressive YIELDs for a caller that did not ask for them are dropped; its final result still arrives', async () => {
  const [caller, callee] = await open('autobahn:json', 'wampy:json');
  try {
    const proc = unique('com.example.adv.progress.unasked');
    let details;
    await within(
      callee.register(proc, ({ details: d, result_handler }) => {
        details = d;
        // wampy lets a callee yield progress whether or not it was asked.
        result_handler({ argsList: ['partial'], options: { progress: true } });
        return { argsList: ['final'] };
      }),
      'REGISTERED',
    );
    assert.equal(await within(caller.session.call(proc, []), 'RESULT'), 'final');
    assert.ok(!details.receive_progress, `receive_progress was forwarded: ${JSON.stringify(details)}`);
    const request = callRequest(caller, proc);
    const results = caller.rx.filter((m) => m[0] === RESULT && m[1] === request);
    assert.deepEqual(
      results.map((m) => [m[2], m[3]]),
      [[{}, ['final']]],
    );
  } finally {
    await closeAll([caller, callee]);
  }
});

test('progressive results: the callee erring after some progress ends the call with its error', async () => {
  const [caller, callee] = await open('autobahn:msgpack', 'autobahn:json');
  try {
    const proc = unique('com.example.adv.progress.error');
    await within(
      callee.session.register(proc, async (args, kwargs, details) => {
        details.progress([1]);
        details.progress([2]);
        await sleep(5);
        throw new autobahn.Error('com.example.adv.failed', ['after two']);
      }),
      'REGISTERED',
    );
    const seen = [];
    const call = caller.session.call(proc, [], {}, { receive_progress: true });
    call.then(undefined, undefined, (r) => seen.push(r));
    await assert.rejects(within(call, 'ERROR'), (e) => {
      assert.equal(e.error, 'com.example.adv.failed');
      assert.deepEqual(e.args, ['after two']);
      return true;
    });
    await sleep(20);
    assert.deepEqual(seen, [1, 2]);
  } finally {
    await closeAll([caller, callee]);
  }
});

// Spec (rfc/text/advanced/rpc_progressive_call_results.md, "Timeouts"): with
// progressive results, CALL.Options.timeout is the limit between the CALL
// and the first YIELD and between YIELDs thereafter, not for the whole call.
test('progressive results: the timeout runs between results, not over the whole call', async () => {
  const [caller, callee] = await open('autobahn:json', 'autobahn:json');
  try {
    const proc = unique('com.example.adv.progress.timeout');
    await within(
      callee.session.register(proc, async (args, kwargs, details) => {
        for (let i = 0; i < 6; i++) {
          await sleep(100);
          details.progress([i]);
        }
        await sleep(100);
        return 'done';
      }),
      'REGISTERED',
    );
    const seen = [];
    // 700 ms in all, never more than 100 ms between results: within 300 ms each.
    const call = caller.session.call(proc, [], {}, { receive_progress: true, timeout: 300 });
    call.then(undefined, undefined, (r) => seen.push(r));
    assert.equal(await within(call, 'final RESULT'), 'done');
    await sleep(20);
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5]);
  } finally {
    await closeAll([caller, callee]);
  }
});

// ---------------------------------------------------------------------------
// Call timeouts
// ---------------------------------------------------------------------------

for (const calleeKind of ['autobahn:msgpack', 'wampy:json']) {
  test(`call timeout: autobahn-js caller gets wamp.error.timeout from the router, ${calleeKind} callee's late result is dropped`, async () => {
    const [caller, callee] = await open('autobahn:json', calleeKind);
    try {
      const proc = unique('com.example.adv.slow');
      const ping = unique('com.example.adv.ping');
      const answered = signal();
      const slow = async () => {
        await sleep(600);
        answered.fire();
        return 'late';
      };
      if (callee instanceof Wampy) {
        await within(callee.register(proc, async () => ({ argsList: [await slow()] })), 'REGISTERED');
        await within(callee.register(ping, () => ({ argsList: ['pong'] })), 'REGISTERED');
      } else {
        await within(callee.session.register(proc, slow), 'REGISTERED');
        await within(callee.session.register(ping, () => 'pong'), 'REGISTERED');
      }
      const t0 = Date.now();
      await assert.rejects(within(caller.session.call(proc, [], {}, { timeout: 200 }), 'ERROR'), wampError('wamp.error.timeout'));
      const took = Date.now() - t0;
      assert.ok(took >= 190, `the timeout fired after ${took} ms, before its 200`);
      assert.ok(took < 550, `the timeout fired after ${took} ms, not long before the callee answered at 600`);

      // The callee answers after the timeout: nothing more reaches the caller
      // (autobahn-js would close the connection on a RESULT for no call).
      await within(answered.fired, 'the callee answering');
      await sleep(150);
      const request = callRequest(caller, proc);
      const replies = caller.rx.filter((m) => (m[0] === RESULT && m[1] === request) || (m[0] === ERROR && m[2] === request));
      assert.deepEqual(
        replies.map((m) => m[0]),
        [ERROR],
        `exactly one reply (the ERROR) for the timed-out call: ${JSON.stringify(replies)}`,
      );
      // The callee announced no call_canceling: it is not sent INTERRUPT.
      assert.ok(!callee.rx.some((m) => m[0] === INTERRUPT), 'INTERRUPT sent to a callee without call_canceling');
      await stillServed(caller, ping, 'pong');
    } finally {
      await closeAll([caller, callee]);
    }
  });
}

test('call timeout: wampy caller gets wamp.error.timeout; a call that ends in time is not timed out afterwards', async () => {
  const [caller, callee] = await open('wampy:cbor', 'autobahn:json');
  try {
    const proc = unique('com.example.adv.sleepy');
    await within(
      callee.session.register(proc, async (args) => {
        await sleep(args[0]);
        return args[0];
      }),
      'REGISTERED',
    );
    await assert.rejects(within(caller.call(proc, [500], { timeout: 150 }), 'ERROR'), wampError('wamp.error.timeout'));

    // In time: the result, and no ERROR once the timeout has passed.
    const fast = await within(caller.call(proc, [0], { timeout: 150 }), 'RESULT');
    assert.deepEqual(fast.argsList, [0]);
    const request = caller.getOpStatus().reqId;
    await sleep(300);
    assert.ok(!caller.rx.some((m) => m[0] === ERROR && m[2] === request), 'an ERROR came after the RESULT');

    // No timeout option, or 0: no timeout.
    const none = await within(caller.call(proc, [300]), 'RESULT');
    assert.deepEqual(none.argsList, [300]);
  } finally {
    await closeAll([caller, callee]);
  }
});

test('call timeout 0 means none (autobahn-js sends it as given)', async () => {
  const [caller, callee] = await open('autobahn:cbor', 'autobahn:msgpack');
  try {
    const proc = unique('com.example.adv.zero');
    await within(
      callee.session.register(proc, async () => {
        await sleep(300);
        return 'waited';
      }),
      'REGISTERED',
    );
    assert.equal(await within(caller.session.call(proc, [], {}, { timeout: 0 }), 'RESULT'), 'waited');
  } finally {
    await closeAll([caller, callee]);
  }
});

// ---------------------------------------------------------------------------
// Call canceling
// ---------------------------------------------------------------------------

/** A slow procedure on an autobahn-js callee; `answered` fires when it has yielded. */
async function slowProcedure(callee, ms = 500) {
  const proc = unique('com.example.adv.cancelable');
  const ping = unique('com.example.adv.ping');
  const answered = signal();
  const invoked = signal();
  await within(
    callee.session.register(proc, async () => {
      invoked.fire();
      await sleep(ms);
      answered.fire();
      return 'late';
    }),
    'REGISTERED',
  );
  await within(callee.session.register(ping, () => 'pong'), 'REGISTERED');
  return { proc, ping, answered: answered.fired, invoked: invoked.fired };
}

test('call canceling: autobahn-js kill, callee without call_canceling: the router answers wamp.error.canceled at once', async () => {
  const [caller, callee] = await open('autobahn:json', 'autobahn:cbor');
  try {
    const { proc, ping, answered, invoked } = await slowProcedure(callee);
    const call = caller.session.call(proc, []);
    await within(invoked, 'INVOCATION');
    const t0 = Date.now();
    // mode kill: autobahn-js keeps the call open for the router's ERROR.
    call.cancel({ mode: 'kill' });
    await assert.rejects(within(call, 'ERROR'), wampError('wamp.error.canceled'));
    assert.ok(Date.now() - t0 < 400, 'the ERROR waited for the callee, which cannot be interrupted');

    await within(answered, 'the callee answering');
    await sleep(150);
    const request = callRequest(caller, proc);
    const replies = caller.rx.filter((m) => (m[0] === RESULT && m[1] === request) || (m[0] === ERROR && m[2] === request));
    assert.deepEqual(
      replies.map((m) => [m[0], m[4] ?? null]),
      [[ERROR, 'wamp.error.canceled']],
    );
    assert.ok(!callee.rx.some((m) => m[0] === INTERRUPT), 'INTERRUPT sent to a callee without call_canceling');
    await stillServed(caller, ping, 'pong');
  } finally {
    await closeAll([caller, callee]);
  }
});

for (const mode of ['skip', 'killnowait', undefined]) {
  test(`call canceling: wampy caller, mode ${mode ?? '(default)'}: wamp.error.canceled at once, the late result dropped`, async () => {
    // (autobahn-js rejects skip and killnowait cancels itself and then
    // takes the router's ERROR for a protocol violation, so wampy calls.)
    const [caller, callee] = await open('wampy:json', 'autobahn:msgpack');
    try {
      const { proc, ping, answered, invoked } = await slowProcedure(callee);
      const call = caller.call(proc, []);
      const request = caller.getOpStatus().reqId;
      await within(invoked, 'INVOCATION');
      const t0 = Date.now();
      caller.cancel(request, mode ? { mode } : undefined);
      await assert.rejects(within(call, 'ERROR'), wampError('wamp.error.canceled'));
      assert.ok(Date.now() - t0 < 400, 'the ERROR waited for the callee');

      await within(answered, 'the callee answering');
      await sleep(150);
      const replies = caller.rx.filter((m) => (m[0] === RESULT && m[1] === request) || (m[0] === ERROR && m[2] === request));
      assert.deepEqual(
        replies.map((m) => [m[0], m[4] ?? null]),
        [[ERROR, 'wamp.error.canceled']],
      );
      assert.ok(!callee.rx.some((m) => m[0] === INTERRUPT), 'INTERRUPT sent to a callee without call_canceling');
      await stillServed(caller, ping, 'pong');
    } finally {
      await closeAll([caller, callee]);
    }
  });
}

test('call canceling: a CANCEL after the result is ignored', async () => {
  const [caller, callee] = await open('wampy:msgpack', 'autobahn:json');
  try {
    const proc = unique('com.example.adv.quick');
    await within(callee.session.register(proc, () => 'quick'), 'REGISTERED');
    const res = await within(caller.call(proc, []), 'RESULT');
    assert.deepEqual(res.argsList, ['quick']);
    const request = caller.getOpStatus().reqId;
    // wampy refuses to cancel a call it has no record of; send it raw.
    caller._send([49, request, { mode: 'kill' }]);
    const again = await within(caller.call(proc, []), 'RESULT');
    assert.deepEqual(again.argsList, ['quick']);
    assert.ok(!caller.rx.some((m) => m[0] === ERROR && m[2] === request), 'an ERROR answered the CANCEL of a finished call');
  } finally {
    await closeAll([caller, callee]);
  }
});

// ---------------------------------------------------------------------------
// Caller and publisher identification
// ---------------------------------------------------------------------------

test('caller identification: disclose_me names the caller to autobahn-js and wampy callees, and only then', async () => {
  const [caller, abCallee, wyCallee] = await open('autobahn:json', 'autobahn:cbor', 'wampy:msgpack');
  try {
    const me = caller.session.id;
    const ab = unique('com.example.adv.who.ab');
    const wy = unique('com.example.adv.who.wy');
    await within(
      abCallee.session.register(ab, (args, kwargs, details) => new autobahn.Result([details.caller ?? null, details.caller_authid ?? null, details.caller_authrole ?? null])),
      'REGISTERED',
    );
    await within(
      wyCallee.register(wy, ({ details }) => ({ argsList: [details.caller ?? null, details.caller_authid ?? null, details.caller_authrole ?? null] })),
      'REGISTERED',
    );
    for (const proc of [ab, wy]) {
      const named = await within(caller.session.call(proc, [], {}, { disclose_me: true }), 'RESULT');
      assert.deepEqual(named.args, [me, `anonymous-${me}`, 'anonymous'], proc);
      const plain = await within(caller.session.call(proc, []), 'RESULT');
      assert.deepEqual(plain.args, [null, null, null], proc);
      const refused = await within(caller.session.call(proc, [], {}, { disclose_me: false }), 'RESULT');
      assert.deepEqual(refused.args, [null, null, null], proc);
    }
  } finally {
    await closeAll([caller, abCallee, wyCallee]);
  }
});

test('caller identification: a registration with disclose_caller gets its callers named', async () => {
  const [callee, caller] = await open('autobahn:msgpack', 'wampy:json');
  try {
    const proc = unique('com.example.adv.who.always');
    await within(callee.session.register(proc, (args, kwargs, details) => details.caller ?? null, { disclose_caller: true }), 'REGISTERED');
    const res = await within(caller.call(proc, []), 'RESULT');
    assert.deepEqual(res.argsList, [caller.getSessionId()]);
  } finally {
    await closeAll([callee, caller]);
  }
});

test('publisher identification: disclose_me names the publisher to autobahn-js and wampy subscribers, and only then', async () => {
  const [pub, abSub, wySub] = await open('autobahn:cbor', 'autobahn:msgpack', 'wampy:json');
  try {
    const topic = unique('com.example.adv.who.topic');
    const abSeen = [];
    const wySeen = [];
    const done = signal();
    await within(
      abSub.session.subscribe(topic, (args, kwargs, ev) => abSeen.push([args[0], ev.publisher ?? null, ev.publisher_authid ?? null, ev.publisher_authrole ?? null])),
      'SUBSCRIBED',
    );
    await within(
      wySub.subscribe(topic, ({ argsList, details }) => {
        wySeen.push([argsList[0], details.publisher ?? null, details.publisher_authid ?? null, details.publisher_authrole ?? null]);
        if (argsList[0] === 'plain') done.fire();
      }),
      'SUBSCRIBED',
    );
    await within(pub.session.publish(topic, ['named'], {}, { disclose_me: true, acknowledge: true }), 'PUBLISHED');
    await within(pub.session.publish(topic, ['plain'], {}, { acknowledge: true }), 'PUBLISHED');
    await within(done.fired, 'EVENT at wampy');
    await sleep(50);
    const me = pub.session.id;
    const want = [
      ['named', me, `anonymous-${me}`, 'anonymous'],
      ['plain', null, null, null],
    ];
    assert.deepEqual(abSeen, want);
    assert.deepEqual(wySeen, want);
  } finally {
    await closeAll([pub, abSub, wySub]);
  }
});

// ---------------------------------------------------------------------------
// Subscriber black- and whitelisting, publisher exclusion
// ---------------------------------------------------------------------------

test('subscriber black- and whitelisting by session ID, authid and authrole (autobahn-js publisher)', async () => {
  // Publisher, then A, B, C: on --cores 2 they alternate workers.
  const [pub, a, b, c] = await open('autobahn:json', 'autobahn:msgpack', 'wampy:json', 'autobahn:cbor');
  try {
    const topic = unique('com.example.adv.lists');
    const ids = { a: a.session.id, b: b.getSessionId(), c: c.session.id };
    const authid = (k) => `anonymous-${ids[k]}`;
    const seen = { a: [], b: [], c: [] };
    const fenced = { a: signal(), b: signal(), c: signal() };
    const record = (k) => (tag) => {
      seen[k].push(tag);
      if (tag === 'fence') fenced[k].fire();
    };
    await within(a.session.subscribe(topic, (args) => record('a')(args[0])), 'SUBSCRIBED');
    await within(b.subscribe(topic, ({ argsList }) => record('b')(argsList[0])), 'SUBSCRIBED');
    await within(c.session.subscribe(topic, (args) => record('c')(args[0])), 'SUBSCRIBED');

    const cases = [
      ['exclude-a', { exclude: [ids.a] }, 'bc'],
      ['exclude-ab', { exclude: [ids.a, ids.b] }, 'c'],
      ['eligible-ac', { eligible: [ids.a, ids.c] }, 'ac'],
      ['eligible-none', { eligible: [] }, ''],
      ['eligible-abc-exclude-b', { eligible: [ids.a, ids.b, ids.c], exclude: [ids.b] }, 'ac'],
      ['exclude-authid-b', { exclude_authid: [authid('b')] }, 'ac'],
      ['eligible-authid-c', { eligible_authid: [authid('c')] }, 'c'],
      ['eligible-authid-a-eligible-b', { eligible_authid: [authid('a')], eligible: [ids.b] }, ''],
      ['eligible-authrole-anonymous', { eligible_authrole: ['anonymous'] }, 'abc'],
      ['eligible-authrole-admin', { eligible_authrole: ['admin'] }, ''],
      ['exclude-authrole-anonymous', { exclude_authrole: ['anonymous'] }, ''],
      ['exclude-authrole-admin', { exclude_authrole: ['admin', 'staff'] }, 'abc'],
      ['exclude-unknown', { exclude: [1, 2, 3] }, 'abc'],
      ['eligible-authrole-exclude-authid-a', { eligible_authrole: ['anonymous'], exclude_authid: [authid('a')] }, 'bc'],
    ];
    for (const [tag, options] of cases) {
      await within(pub.session.publish(topic, [tag], {}, { ...options, acknowledge: true }), `PUBLISHED ${tag}`);
    }
    // Events from one publisher reach each subscriber in order: once the
    // fence is in, every event meant for it is.
    await within(pub.session.publish(topic, ['fence'], {}, { acknowledge: true }), 'PUBLISHED fence');
    await within(Promise.all(Object.values(fenced).map((s) => s.fired)), 'the fence at every subscriber');
    for (const k of ['a', 'b', 'c']) {
      const want = [...cases.filter(([, , to]) => to.includes(k)).map(([tag]) => tag), 'fence'];
      assert.deepEqual(seen[k], want, `subscriber ${k}`);
    }
  } finally {
    await closeAll([pub, a, b, c]);
  }
});

test('subscriber black- and whitelisting from a wampy publisher', async () => {
  const [pub, a, b] = await open('wampy:json', 'autobahn:json', 'autobahn:cbor');
  try {
    const topic = unique('com.example.adv.lists.wampy');
    const seen = { a: [], b: [] };
    const fenced = { a: signal(), b: signal() };
    for (const [k, p] of [
      ['a', a],
      ['b', b],
    ]) {
      await within(
        p.session.subscribe(topic, (args) => {
          seen[k].push(args[0]);
          if (args[0] === 'fence') fenced[k].fire();
        }),
        'SUBSCRIBED',
      );
    }
    await within(pub.publish(topic, ['not-a'], { exclude: [a.session.id] }), 'PUBLISHED');
    await within(pub.publish(topic, ['only-a'], { eligible: [a.session.id] }), 'PUBLISHED');
    await within(pub.publish(topic, ['only-b-by-authid'], { eligible_authid: [`anonymous-${b.session.id}`] }), 'PUBLISHED');
    await within(pub.publish(topic, ['fence']), 'PUBLISHED');
    await within(Promise.all([fenced.a.fired, fenced.b.fired]), 'the fence');
    assert.deepEqual(seen.a, ['only-a', 'fence']);
    assert.deepEqual(seen.b, ['not-a', 'only-b-by-authid', 'fence']);
  } finally {
    await closeAll([pub, a, b]);
  }
});

test('publisher exclusion: exclude_me false delivers to the publisher itself, the default does not', async () => {
  const [pub, other] = await open('autobahn:msgpack', 'autobahn:json');
  try {
    const topic = unique('com.example.adv.self');
    const mine = [];
    const theirs = [];
    const fenced = signal();
    await within(pub.session.subscribe(topic, (args) => mine.push(args[0])), 'SUBSCRIBED');
    await within(
      other.session.subscribe(topic, (args) => {
        theirs.push(args[0]);
        if (args[0] === 'fence') fenced.fire();
      }),
      'SUBSCRIBED',
    );
    await within(pub.session.publish(topic, ['default'], {}, { acknowledge: true }), 'PUBLISHED');
    await within(pub.session.publish(topic, ['excluded'], {}, { acknowledge: true, exclude_me: true }), 'PUBLISHED');
    await within(pub.session.publish(topic, ['to-me'], {}, { acknowledge: true, exclude_me: false }), 'PUBLISHED');
    // Black/whitelists apply to the publisher too.
    await within(pub.session.publish(topic, ['to-me-only'], {}, { acknowledge: true, exclude_me: false, eligible: [pub.session.id] }), 'PUBLISHED');
    await within(pub.session.publish(topic, ['not-to-me'], {}, { acknowledge: true, exclude_me: false, exclude: [pub.session.id] }), 'PUBLISHED');
    await within(pub.session.publish(topic, ['fence'], {}, { acknowledge: true, exclude_me: false }), 'PUBLISHED');
    await within(fenced.fired, 'the fence at the other subscriber');
    for (let i = 0; i < 100 && !mine.includes('fence'); i++) await sleep(10);
    assert.deepEqual(mine, ['to-me', 'to-me-only', 'fence']);
    assert.deepEqual(theirs, ['default', 'excluded', 'to-me', 'not-to-me', 'fence']);
  } finally {
    await closeAll([pub, other]);
  }
});

// ---------------------------------------------------------------------------
// Pattern-based subscriptions
// ---------------------------------------------------------------------------

test('pattern-based subscriptions: prefix and wildcard, with the concrete topic and one event per matching subscription', async () => {
  const [sub, pub, wy] = await open('autobahn:json', 'autobahn:cbor', 'wampy:json');
  try {
    const base = unique('com.example.adv.pat');
    const seen = [];
    const wySeen = [];
    const fenced = signal();
    const on = (name) => (args, kwargs, ev) => {
      seen.push([name, ev.topic, ev.publication, args[0]]);
      if (args[0] === 'fence') fenced.fire();
    };
    const prefix = await within(sub.session.subscribe(`${base}.emergency`, on('prefix'), { match: 'prefix' }), 'SUBSCRIBED prefix');
    const wildcard = await within(sub.session.subscribe(`${base}..userevent`, on('wildcard'), { match: 'wildcard' }), 'SUBSCRIBED wildcard');
    await within(sub.session.subscribe(`${base}.foo.userevent`, on('exact')), 'SUBSCRIBED exact');
    const wyFenced = signal();
    await within(
      wy.subscribe(
        base,
        ({ argsList, details }) => {
          wySeen.push([details.topic, argsList[0]]);
          if (argsList[0] === 'fence') wyFenced.fire();
        },
        { match: 'prefix' },
      ),
      'SUBSCRIBED wampy prefix',
    );

    const publications = {};
    const topics = [
      [`${base}.emergency.11`, ['prefix']],
      [`${base}.emergency-low`, ['prefix']],
      [`${base}.emergency.category.severe`, ['prefix']],
      [`${base}.emergency`, ['prefix']],
      [`${base}.emerge`, []],
      [`${base}.foo.userevent`, ['wildcard', 'exact']],
      [`${base}.bar.userevent`, ['wildcard']],
      [`${base}.foo.userevent.bar`, []],
      [`${base}.foo.user`, []],
      [`${base}2.foo.userevent`, []],
    ];
    for (const [topic] of topics) {
      const p = await within(pub.session.publish(topic, [topic], {}, { acknowledge: true }), `PUBLISHED ${topic}`);
      publications[topic] = p.id;
    }
    const fence = `${base}.emergency.fence`;
    await within(pub.session.publish(fence, ['fence'], {}, { acknowledge: true }), 'PUBLISHED fence');
    await within(fenced.fired, 'the fence');
    await within(wyFenced.fired, 'the fence at wampy');

    const got = seen.filter(([, , , tag]) => tag !== 'fence');
    const want = topics.flatMap(([topic, subs]) => subs.map((name) => [name, topic, publications[topic], topic]));
    // One event per matching subscription, all with the publication's ID;
    // across subscriptions of one session the order is not specified.
    const key = (e) => e.join(' ');
    assert.deepEqual(got.map(key).sort(), want.map(key).sort());
    // EVENT.Details.topic is the concrete topic for pattern subscriptions
    // (autobahn-js falls back to the pattern when it is missing).
    const wire = sub.rx.filter((m) => m[0] === 36 && m[4]?.[0] !== 'fence');
    assert.equal(wire.length, want.length);
    const patterns = wire.filter((m) => m[1] === prefix.id || m[1] === wildcard.id);
    assert.equal(patterns.length, want.filter(([name]) => name !== 'exact').length);
    for (const m of patterns) assert.equal(m[3].topic, m[4][0], 'EVENT.Details.topic is not the concrete topic');
    // wampy's prefix subscription to the base saw every topic, in order.
    assert.deepEqual(wySeen, [...topics.map(([t]) => [t, t]), [fence, 'fence']]);
  } finally {
    await closeAll([sub, pub, wy]);
  }
});

test('pattern-based subscriptions: an exact and a prefix subscription of one URI are two subscriptions, each getting the event', async () => {
  const [sub, pub] = await open('autobahn:msgpack', 'autobahn:json');
  try {
    const topic = unique('com.example.adv.pat2');
    const exactGot = signal();
    const prefixGot = signal();
    const exactSub = await within(sub.session.subscribe(topic, () => exactGot.fire()), 'SUBSCRIBED exact');
    const prefixSub = await within(sub.session.subscribe(topic, () => prefixGot.fire(), { match: 'prefix' }), 'SUBSCRIBED prefix');
    assert.notEqual(prefixSub.id, exactSub.id, 'the exact and the prefix subscription of one URI share an ID');
    const p = await within(pub.session.publish(topic, ['hi'], {}, { acknowledge: true }), 'PUBLISHED');
    await within(Promise.all([exactGot.fired, prefixGot.fired]), 'both EVENTs');
    const events = sub.rx.filter((m) => m[0] === 36);
    assert.deepEqual(events.map((m) => m[1]).sort(), [exactSub.id, prefixSub.id].sort());
    assert.deepEqual(
      events.map((m) => m[2]),
      [p.id, p.id],
      'one publication, one ID',
    );
    const prefixEvent = events.find((m) => m[1] === prefixSub.id);
    assert.equal(prefixEvent[3].topic, topic, 'the prefix subscription was not told the concrete topic');
  } finally {
    await closeAll([sub, pub]);
  }
});
