// Two relatives on a network that breaks WebSockets (a proxy that accepts
// the upgrade and drops the socket at once). Their phones notice that
// sockets keep failing while plain HTTP works, sync over `POST /sync/http`
// by themselves, and both see each other's edits, everything saved. Then
// the network lets sockets through again: the phones go back to the socket
// on their next probe and keep syncing over it.
//
// Sockets are broken with Playwright's `routeWebSocket` (the `route`
// interception does not see WebSockets): while `blocked`, each socket to
// /sync is closed before it reaches the server; afterwards it is connected
// to the real server. The phones' clocks are Playwright's, so the test can
// jump to the next socket probe (30-60 s later) instead of waiting for it.
//
// Membership is "the creator is the only member" until invitations land,
// so the family shares one account (`olena`) on two devices.

import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, requireDist, until } from './support/server.mjs';
import { launch, phone, screenshot, signIn, syncIndicator, openSection, field, setRegister, typeInNarrative } from './support/browser.mjs';

const ORIGINAL = 'Last call near Bakhmut on 12 February.';
const MOTHER_TEXT = ' Mother: he said they were moving east.';
// "via HTTP" is kept on one line (a no-break space).
const VIA_HTTP = /^Everything saved to the server · via\u00a0HTTP$/;

let server;
let browser;

before(async () => {
  requireDist();
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A phone on a network that breaks WebSockets until `net.blocked` is
 *  cleared. Counts the sockets refused and let through, and the sync
 *  requests sent over HTTP. */
async function phoneBehindBadProxy() {
  const p = await phone(browser, server);
  const net = { blocked: true, refused: 0, passed: 0 };
  await p.context.routeWebSocket(
    (url) => url.pathname === '/sync',
    (ws) => {
      if (net.blocked) {
        net.refused += 1;
        ws.close({ code: 1011, reason: 'proxy' });
      } else {
        net.passed += 1;
        ws.connectToServer();
      }
    },
  );
  await p.context.clock.install();
  const httpSync = [];
  p.page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/sync/http') httpSync.push(r.method());
  });
  return { ...p, net, httpSync };
}

async function metric(name) {
  const text = await (await fetch(server.url + '/metrics')).text();
  const m = text.match(new RegExp(`^casesync_${name} (\\d+)$`, 'm'));
  assert.ok(m, `metric ${name}`);
  return Number(m[1]);
}

async function waitForIndicator(page, state, transport, timeout = 15_000) {
  await page.locator(`#sync[data-state="${state}"][data-transport="${transport}"]`).waitFor({ timeout });
}

/** Records every state the sync indicator shows from now on. */
async function recordIndicator(page) {
  await page.evaluate(() => {
    window.syncStates = [];
    const record = () => {
      const el = document.getElementById('sync');
      if (el) window.syncStates.push(el.dataset.state);
    };
    new MutationObserver(record).observe(document.getElementById('header'), { childList: true, subtree: true, attributes: true });
  });
}

/** Lets the phone's clock run ahead, half a minute at a time, until its
 *  next socket probe has found the socket working and the app syncs over
 *  it. */
async function backOnSocket(p) {
  const onSocket = p.page.locator('#sync[data-state="saved"][data-transport="ws"]');
  for (let jumps = 0; jumps < 12 && !(await onSocket.count()); jumps++) {
    await p.context.clock.fastForward(30_000);
    await onSocket.waitFor({ timeout: 3_000 }).catch(() => {});
  }
  await waitForIndicator(p.page, 'saved', 'ws');
  assert.equal((await syncIndicator(p.page)).text, 'Everything saved to the server');
  assert.ok(p.net.passed >= 2, 'the probe and the connection');
}

function inputValue(page, path) {
  return field(page, path).locator('input').inputValue();
}

async function waitForValue(page, path, value, timeout = 15_000) {
  await page.waitForFunction(
    ([p, v]) => {
      const el = document.querySelector(`[data-path="${p}"] input, [data-path="${p}"] textarea`);
      return el && el.value === v;
    },
    [path, value],
    { timeout },
  );
}

test('with WebSockets broken, two relatives sync over HTTP and converge; the app goes back to the socket when it works', async () => {
  const owner = server.token('olena', 'laptop');
  const url = await server.createCase(owner, {
    'person.given_name': 'Andrii',
    'person.family_name': 'Kovalenko',
    'military.unit': '93rd brigade',
    'disappearance.circumstances': ORIGINAL,
  });

  // Step 1: mother and sister open the case on phones whose network breaks
  // every WebSocket. The case arrives anyway, over HTTP.
  const mother = await phoneBehindBadProxy();
  const sister = await phoneBehindBadProxy();
  for (const [who, p] of [
    ['mother', mother],
    ['sister', sister],
  ]) {
    await p.page.goto(p.app);
    await signIn(p.page, server.token('olena', `${who}-phone`));
    const link = p.page.locator(`a.case-link[data-url="${url}"]`);
    await link.getByText('Andrii Kovalenko').waitFor();
    await link.click();
    await p.page.locator('.case-title', { hasText: 'Andrii Kovalenko' }).waitFor();
    await waitForIndicator(p.page, 'saved', 'http');
    await openSection(p.page, 'military');
    await openSection(p.page, 'disappearance');
    await waitForValue(p.page, 'disappearance.circumstances', ORIGINAL);
    assert.equal(await inputValue(p.page, 'military.unit'), '93rd brigade');
    assert.match((await syncIndicator(p.page)).text, VIA_HTTP);
    assert.ok(p.net.refused >= 3, `${who}: ${p.net.refused} sockets refused before the fallback`);
    assert.equal(p.net.passed, 0);
  }
  // No socket ever reached the server: all of it went over HTTP.
  assert.equal(await metric('connections_total'), 0);
  await screenshot(mother.page, 'http-fallback-01-mother-via-http');

  // Step 2: each writes something.
  for (const p of [mother, sister]) await recordIndicator(p.page);
  await setRegister(mother.page, 'military.rank', 'Sergeant');
  await typeInNarrative(mother.page, 'disappearance.circumstances', MOTHER_TEXT, 'end');
  await setRegister(sister.page, 'military.position', 'Driver');

  // Step 3: both phones show both edits, everything saved, still over HTTP.
  for (const p of [mother, sister]) {
    await waitForValue(p.page, 'military.rank', 'Sergeant');
    await waitForValue(p.page, 'military.position', 'Driver');
    await waitForValue(p.page, 'disappearance.circumstances', ORIGINAL + MOTHER_TEXT);
    await waitForIndicator(p.page, 'saved', 'http');
    const s = await syncIndicator(p.page);
    assert.match(s.text, VIA_HTTP);
    assert.equal(s.pending, 0);
    assert.ok(p.httpSync.length >= 3, `${p.httpSync.length} requests to /sync/http`);
    assert.ok(p.httpSync.every((m) => m === 'POST'));
    // The indicator went from syncing to saved, and never said "offline"
    // while edits were on their way.
    const states = await p.page.evaluate(() => window.syncStates);
    assert.ok(states.includes('syncing'), states.join(' '));
    assert.ok(!states.includes('offline'), states.join(' '));
  }
  assert.equal(await metric('connections_total'), 0);
  await screenshot(mother.page, 'http-fallback-02-mother-converged', field(mother.page, 'military.rank'));
  await screenshot(sister.page, 'http-fallback-03-sister-converged', field(sister.page, 'military.rank'));
  const onServer = await server.getCase(owner, url);
  assert.equal(onServer.case.military.rank, 'Sergeant');
  assert.equal(onServer.case.military.position, 'Driver');
  assert.equal(onServer.case.disappearance.circumstances, ORIGINAL + MOTHER_TEXT);

  // Step 4: the sister's network lets sockets through again. At her next
  // probe (30-60 s on the phone's clock after the switch to HTTP, later
  // after a failed probe) her phone opens a socket, which the server
  // accepts, and syncs over it. Her clock jumps ahead half a minute at a
  // time until it has.
  sister.net.blocked = false;
  await backOnSocket(sister);
  await until(async () => (await metric('connections')) === 1, 10_000, 'one open socket');
  await screenshot(sister.page, 'http-fallback-04-sister-back-on-socket');

  // Step 5: one phone on the socket, the other still on HTTP: they still
  // sync with each other.
  await setRegister(mother.page, 'military.service_number', '0012345');
  await waitForValue(sister.page, 'military.service_number', '0012345');
  await waitForIndicator(mother.page, 'saved', 'http');
  await waitForIndicator(sister.page, 'saved', 'ws');
  await screenshot(mother.page, 'http-fallback-05-mother-still-via-http', field(mother.page, 'military.service_number'));

  // Step 6: the mother's network lets sockets through too.
  mother.net.blocked = false;
  await backOnSocket(mother);
  // Both phones hold an open socket to the server (the probes are closed).
  await until(async () => (await metric('connections')) === 2, 10_000, 'two open sockets');
  assert.ok((await metric('connections_total')) >= 4);

  // Step 7: syncing continues over the sockets, with no more HTTP sync.
  const httpBefore = [mother.httpSync.length, sister.httpSync.length];
  await setRegister(sister.page, 'military.call_sign', 'Sokil');
  for (const p of [mother, sister]) {
    await waitForValue(p.page, 'military.call_sign', 'Sokil');
    await waitForIndicator(p.page, 'saved', 'ws');
  }
  assert.deepEqual([mother.httpSync.length, sister.httpSync.length], httpBefore, 'nothing more over /sync/http');
  await screenshot(mother.page, 'http-fallback-06-mother-socket-edit', field(mother.page, 'military.call_sign'));
  const final = await server.getCase(owner, url);
  assert.equal(final.case.military.call_sign, 'Sokil');
  assert.equal(final.case.military.service_number, '0012345');

  // Nothing went anywhere but the server, and no page error happened.
  for (const p of [mother, sister]) {
    const foreign = p.requests.filter((u) => !u.startsWith(server.url + '/') && !u.startsWith(server.url.replace('http', 'ws') + '/'));
    assert.deepEqual(foreign, []);
    assert.deepEqual(p.errors, []);
  }
  await mother.context.close();
  await sister.context.close();
});
