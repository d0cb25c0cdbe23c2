// Drives the web console in headless Chromium (Debian's, through
// playwright-core), for tests/console.rs:
//
//   node tests/browser/console.mjs ADMIN_URL SESSION_TO_KILL TOPIC [SCREENSHOT.png]
//
// Checks that the page goes live, lists a WAMP and an MQTT session and the
// subscription to TOPIC, the registration of console.proc, the sessions'
// message counts and realm1's rate, that the messages-in total rises between two
// refreshes, then clicks "kill" on SESSION_TO_KILL and waits for the page to
// say it was killed. Prints "ok" and exits 0, or throws.

import { createRequire } from 'module';
const require = createRequire(new URL('../node/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const [url, kill, topic, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('pageerror', (e) => { throw e; });
  await page.goto(url);
  await page.waitForSelector('#status.live', { timeout: 10_000 });
  const row = `#t-sessions tr[data-session="${kill}"]`;
  await page.waitForSelector(row, { timeout: 10_000 });
  const sessions = await page.textContent('#t-sessions');
  for (const want of ['wamp', 'mqtt', 'realm1']) {
    if (!sessions.includes(want)) throw new Error(`sessions table without ${want}: ${sessions}`);
  }
  await page.waitForFunction((t) => document.querySelector('#t-subs').textContent.includes(t), topic, { timeout: 10_000 });
  // The callee's registration, with its one callee.
  await page.waitForFunction(() => [...document.querySelectorAll('#t-regs tr')].some((tr) => tr.cells[0]?.textContent === 'console.proc' && tr.cells[4]?.textContent === '1'), null, { timeout: 10_000 });
  // The victim has sent HELLO and SUBSCRIBE and been sent WELCOME and SUBSCRIBED (and events).
  const cell = async (i) => Number(await page.textContent(`${row} td:nth-child(${i})`));
  if (!((await cell(9)) >= 2 && (await cell(10)) >= 2)) throw new Error(`victim's messages in / out: ${await cell(9)} / ${await cell(10)}`);
  // realm1's row: the publisher keeps it busy, so its rate in is above zero once two refreshes are in.
  await page.waitForFunction(() => [...document.querySelectorAll('#t-realms tr')].some((tr) => tr.cells[0]?.textContent === 'realm1' && Number(tr.cells[6]?.textContent.replace(/[^0-9.]/g, '')) > 0), null, { timeout: 10_000 });
  const total = async () => Number((await page.textContent('#f-total-in')).replace(/[^0-9.]/g, '')) * ((await page.textContent('#f-total-in')).includes('k') ? 1000 : 1);
  const before = await total();
  await page.waitForTimeout(2500);
  const after = await total();
  if (!(after > before)) throw new Error(`messages in did not rise: ${before} then ${after}`);
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  await page.click(`${row} button.kill`);
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.includes('killed') || !document.querySelector(sel), row, { timeout: 10_000 });
  // The kill shows among the last closes.
  await page.waitForFunction(() => document.querySelector('#t-last').textContent.includes('killed'), null, { timeout: 10_000 });
  console.log('ok');
} finally {
  await browser.close();
}
