// What the Node interop suites share: the router's address, timeouts, unique
// names, and the serializers of autobahn-js and wampy. Not a test file (the
// runner takes *.test.mjs).

import autobahn from 'autobahn';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';

/** The router's WAMP WebSocket URL (tests/node.rs sets it). */
export const URL = process.env.FENNEC_URL;

/** The longest any single wait may take. */
export const STEP = 10_000;

/** `promise`, or a rejection naming `what` if it takes longer than `ms`. */
export const within = (promise, what, ms = STEP) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms).unref()),
  ]);

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A name no other test uses: `prefix` and a random suffix after `sep`. */
export const unique = (prefix, sep = '.') =>
  `${prefix}${sep}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;

/** A promise and the function that resolves it. */
export function signal() {
  let fire;
  const fired = new Promise((resolve) => (fire = resolve));
  return { fired, fire };
}

export const AUTOBAHN = {
  json: () => new autobahn.serializer.JSONSerializer(),
  msgpack: () => new autobahn.serializer.MsgpackSerializer(),
  cbor: () => new autobahn.serializer.CBORSerializer(),
};

export const WAMPY = { json: () => undefined, msgpack: () => new MsgpackSerializer(), cbor: () => new CborSerializer() };
