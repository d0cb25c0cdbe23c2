// An independent WAMP load and latency tool: autobahn-js (its own
// WebSocket and WAMP codecs, nothing of Fennec's) in one Node.js process.
// Used next to fennec-load in perf/RESULTS.md so that no figure rests on the
// project's own tool alone.
//
//   node perf/wamp-latency.mjs URL pubsub|rpc RATE SECONDS [json|msgpack]
//
// pubsub: one publisher session sends RATE PUBLISHes a second (in batches
// every millisecond) to one topic, 64-byte string argument plus the send
// time; one subscriber session receives them. rpc: one caller session
// sends RATE CALLs a second to one callee session that returns its
// argument. RATE 0: as fast as the tool can, with at most 200 PUBLISHes
// (acknowledged) or CALLs in flight. Prints one JSON line: sent,
// delivered, lost, delivered/s, latency percentiles in microseconds (send
// to receipt, one process, one clock), after a one-second warm-up.

// autobahn-js as the Node interop tests install it (scripts/test).
import { createRequire } from 'module';
const nodeRequire = createRequire(new URL('../tests/node/package.json', import.meta.url));
const autobahn = nodeRequire('autobahn');
// autobahn-js 26 uses the global WebSocket, which Node.js has from 22 on.
globalThis.WebSocket ??= nodeRequire('ws');

const [url, mode = 'pubsub', rateArg = '1000', secondsArg = '5', ser = 'json'] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const WARMUP_MS = 1000;
const WINDOW = 200;
const serializers = {
  json: () => new autobahn.serializer.JSONSerializer(),
  msgpack: () => new autobahn.serializer.MsgpackSerializer(),
};

function open() {
  return new Promise((resolve, reject) => {
    const c = new autobahn.Connection({ url, realm: 'realm1', serializers: [serializers[ser]()], max_retries: 0 });
    c.onopen = (session) => resolve({ c, session });
    c.onclose = (reason) => reject(new Error(`connection closed: ${reason}`));
    c.open();
  });
}

const now = () => Number(process.hrtime.bigint() / 1000n); // microseconds
const filler = 'x'.repeat(64);
const lat = [];
let sent = 0;
let delivered = 0;
let measuring = false;
let sentMeasured = 0;
let deliveredMeasured = 0;

function received(t0) {
  delivered++;
  if (measuring) {
    deliveredMeasured++;
    lat.push(now() - t0);
  }
}

const a = await open();
const b = await open();
let send;
if (mode === 'rpc') {
  await b.session.register('bench.latency.echo', (args) => args);
  // A callee's one argument comes back as the result; fox-wamp 0.7 returns
  // it as the RESULT's arguments instead (an autobahn.Result).
  const echoed = (r) => (r instanceof autobahn.Result ? r.args : r);
  send = () => a.session.call('bench.latency.echo', [filler, now()]).then((r) => received(echoed(r)[1]));
} else {
  await b.session.subscribe('bench.latency.topic', (args) => received(args[1]));
  send = () => {
    const p = a.session.publish('bench.latency.topic', [filler, now()], {}, { acknowledge: rate === 0 });
    return p;
  };
}

const start = Date.now();
setTimeout(() => {
  measuring = true;
  sentMeasured = -sent;
}, WARMUP_MS);
const end = start + WARMUP_MS + seconds * 1000;

if (rate > 0) {
  // Fixed rate: every millisecond, whatever is due.
  await new Promise((resolve) => {
    const t = setInterval(() => {
      const due = Math.floor(((Date.now() - start) * rate) / 1000);
      while (sent < due) {
        sent++;
        const p = send();
        if (p && p.catch) p.catch(() => {});
      }
      if (Date.now() >= end) {
        clearInterval(t);
        resolve();
      }
    }, 1);
  });
} else {
  // As fast as possible, WINDOW in flight.
  await new Promise((resolve) => {
    let inFlight = 0;
    const pump = () => {
      while (inFlight < WINDOW && Date.now() < end) {
        inFlight++;
        sent++;
        send().then(
          () => {
            inFlight--;
            pump();
          },
          () => inFlight--,
        );
      }
      if (Date.now() >= end && inFlight === 0) resolve();
      else if (Date.now() >= end) setTimeout(pump, 10);
    };
    pump();
  });
}
sentMeasured += sent;
measuring = false;
await new Promise((r) => setTimeout(r, 1000)); // drain
lat.sort((x, y) => x - y);
const pct = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : null);
console.log(
  JSON.stringify({
    mode,
    serializer: ser,
    rate_target: rate,
    sent,
    delivered,
    lost: sent - delivered,
    delivered_per_s: Math.round(deliveredMeasured / seconds),
    sent_per_s: Math.round(sentMeasured / seconds),
    p50_us: pct(0.5),
    p99_us: pct(0.99),
    p999_us: pct(0.999),
    max_us: lat.length ? lat[lat.length - 1] : null,
  }),
);
a.c.close();
b.c.close();
process.exit(0);
