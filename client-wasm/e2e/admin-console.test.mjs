// The coordinator console (issue 6) in Debian's chromium against a real
// `casesync serve`: two relatives edit a case from their phones (Node
// devices running the real client engine), one of them hours offline, and
// they disagree on the unit. The coordinator signs in with a token, opens
// the case, moves to an earlier point and sees the older value, compares
// two points and sees the changed field, resolves the conflict, and
// exports. Screenshots go to client-wasm/e2e/artifacts/.

import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, serverBinary, until } from './support/server.mjs';
import { launch } from './support/browser.mjs';
import { NodeDevice } from './support/engine.mjs';

const artifacts = join(dirname(fileURLToPath(import.meta.url)), 'artifacts');

let server;
let browser;

before(async () => {
  // The console is served from the repository's admin/ (the server's
  // default when started from the repository root, as startServer does).
  server = await startServer({ appDir: null });
  browser = await launch();
  mkdirSync(artifacts, { recursive: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

function tokenFor(user, device, role) {
  return execFileSync(
    serverBinary(),
    ['token', '--data-dir', server.dataDir, '--user', user, '--device', device, '--role', role, '--ttl', '1h'],
    { encoding: 'utf8' },
  ).trim();
}

async function call(method, path, token, body) {
  const res = await fetch(server.url + path, {
    method,
    headers: {
      Authorization: 'Bearer ' + token,
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

test('a coordinator reads the history, compares two points, resolves a conflict and exports', async () => {
  const olena = server.token('olena', 'phone');
  const ivan = server.token('ivan', 'phone');
  const natalia = tokenFor('natalia', 'laptop', 'coordinator');
  const admin = tokenFor('root', 'laptop', 'admin');

  // Olena opens the case; an admin assigns Natalia; Ivan joins.
  const url = await server.createCase(olena, {
    'person.given_name': 'Taras',
    'person.family_name': 'Melnyk',
    'disappearance.place': 'Kharkiv Oblast',
  });
  const base = '/api/cases/' + encodeURIComponent(url);
  assert.equal((await call('PUT', `${base}/coordinators/natalia`, admin)).status, 204);
  const invitation = await call('POST', `${base}/invitations`, olena, {});
  assert.equal(invitation.status, 201);
  assert.equal((await call('POST', `/api/invitations/${invitation.body.code}/accept`, ivan)).status, 200);

  const mother = new NodeDevice(olena, 'mother');
  const brother = new NodeDevice(ivan, 'brother');
  try {
    for (const d of [mother, brother]) {
      d.client.openNew(url);
      await d.connect(server.url);
      await until(() => d.read(url).loaded, 10_000, `${d.name} loads the case`);
    }
    // Olena corrects the place.
    mother.edit(url, { op: 'set', path: 'disappearance.place', value: 'near Izium' });
    await until(() => mother.status().unacknowledged === 0, 10_000, 'the place is stored');
    await until(() => brother.read(url).case.disappearance.place === 'near Izium', 10_000, 'Ivan has it');
    // Both write the unit while offline; Ivan's phone was offline for two hours.
    mother.disconnect();
    brother.disconnect();
    mother.edit(url, { op: 'set', path: 'military.unit', value: '72nd brigade' });
    brother.edit(url, { op: 'set', path: 'military.unit', value: '93rd brigade' }, Date.now() - 2 * 3_600_000);
    await mother.connect(server.url);
    await until(() => mother.status().unacknowledged === 0, 10_000, 'Olena delivers');
    await brother.connect(server.url);
    await until(() => brother.status().unacknowledged === 0, 10_000, 'Ivan delivers');
    await until(() => mother.read(url).conflicts.length === 1, 10_000, 'the conflict reaches Olena');

    const history = (await call('GET', `${base}/history`, natalia)).body.changes;
    const byMessage = (m) => history.filter((c) => c.message === m);
    const created = byMessage('set person.given_name')[0];
    const corrected = byMessage('set disappearance.place').find((c) => c.user === 'olena' && c.log_seq > created.log_seq);
    assert.ok(created && corrected, JSON.stringify(history.map((c) => c.message)));

    // The coordinator signs in on a laptop by pasting her token.
    const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: 'en-GB' });
    const page = await context.newPage();
    const requests = [];
    context.on('request', (r) => requests.push(r.url()));
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url + '/admin/');
    await page.locator('#token').fill(natalia);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#who-name', { hasText: 'natalia' }).waitFor();

    // The case list, filtered to cases with conflicts.
    const entry = page.locator(`#case-list button[data-case="${url}"]`);
    await entry.waitFor();
    assert.match(await entry.innerText(), /Taras Melnyk/);
    assert.match(await entry.innerText(), /1 conflict/);
    await page.locator('#filter-conflicts').check();
    await entry.waitFor();
    await page.locator('#filter-status').selectOption('killed');
    await entry.waitFor({ state: 'detached' });
    await page.locator('#filter-status').selectOption('');
    await entry.click();

    // The timeline: who, which device, how long offline; the case now.
    await page.locator('#case-title', { hasText: 'Taras Melnyk' }).waitFor();
    const ivanChange = page.locator('#changes button', { hasText: 'ivan' }).filter({ hasText: 'set military.unit' });
    await ivanChange.waitFor();
    assert.match(await ivanChange.innerText(), /delivered after 2 h( \d+ min)? offline/);
    const place = page.locator('#point-state [data-path="disappearance.place"]');
    await until(async () => (await place.innerText()) === 'near Izium', 10_000, 'the current place');
    await shot(page, 'admin-console-timeline');

    // An earlier point: the case as it was when it was created.
    await page.locator(`#changes button[data-hash="${created.hash}"]`).click();
    await until(async () => (await place.innerText()) === 'Kharkiv Oblast', 10_000, 'the older place');
    assert.match(await page.locator('#point-caption').innerText(), new RegExp(`after change #${created.log_seq} arrived`));
    assert.equal(await page.locator('#point-state [data-path="military.unit"]').count(), 0, 'no unit yet');
    await shot(page, 'admin-console-earlier-point');
    // The slider moves through time as well: to the end, and the new place.
    await page.locator('#slider').focus();
    await page.keyboard.press('End');
    await until(async () => (await place.innerText()) === 'near Izium', 10_000, 'back to now');

    // A diff between the creation and Olena's correction.
    await page.getByRole('tab', { name: 'Compare' }).click();
    await page.locator('#diff-from').selectOption(created.hash);
    await page.locator('#diff-to').selectOption(corrected.hash);
    await page.getByRole('button', { name: 'Show differences' }).click();
    const line = page.locator('#diff-lines li[data-path="disappearance.place"]');
    await line.waitFor();
    assert.equal(await line.innerText(), "disappearance.place: 'Kharkiv Oblast' → 'near Izium'");
    assert.equal(await page.locator('#diff-lines li').count(), 1);
    await shot(page, 'admin-console-diff');

    // The conflict, with who wrote each value; Natalia chooses Ivan's.
    await page.getByRole('tab', { name: /Conflicts/ }).click();
    const conflict = page.locator('.conflict[data-conflict="military.unit"]');
    await conflict.waitFor();
    const text = await conflict.innerText();
    assert.match(text, /72nd brigade/);
    assert.match(text, /olena · phone/);
    assert.match(text, /93rd brigade/);
    assert.match(text, /ivan · phone/);
    await shot(page, 'admin-console-conflict');
    await conflict.locator('li', { hasText: '93rd brigade' }).getByRole('button', { name: 'Choose this value' }).click();
    await page.locator('#resolved', { hasText: 'Resolved military.unit' }).waitFor();
    await page.locator('#no-conflicts').waitFor();
    await shot(page, 'admin-console-resolved');
    // The choice is a change under Natalia's name, and the phones get it.
    const after = (await call('GET', `${base}/history?order=desc&limit=1`, natalia)).body.changes[0];
    assert.equal(after.user, 'natalia');
    assert.equal(after.device, 'laptop');
    assert.equal(after.message, 'resolve conflict at military.unit');
    await until(
      () => mother.read(url).conflicts.length === 0 && mother.read(url).case.military.unit === '93rd brigade',
      10_000,
      'the resolution reaches Olena',
    );
    await page.getByRole('tab', { name: 'Timeline' }).click();
    await page.locator('#changes button', { hasText: 'resolve conflict at military.unit' }).waitFor();

    // The official status, with the basis it rests on (no sources yet).
    await page.getByRole('tab', { name: 'Official status' }).click();
    await page.locator('#official-basis', { hasText: 'The case has no sources yet.' }).waitFor();
    await page.locator('#official-status').selectOption('missing');
    await page.getByRole('button', { name: 'Set official status' }).click();
    await page.locator('#official-result', { hasText: 'Official status set to Missing.' }).waitFor();
    await page.locator('#official-current .status', { hasText: 'Missing' }).waitFor();

    // Export: the JSON with its provenance, and the readable report.
    await page.getByRole('tab', { name: 'Export' }).click();
    const [json] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download JSON' }).click(),
    ]);
    const jsonPath = join(artifacts, 'admin-console-export.json');
    await json.saveAs(jsonPath);
    const exported = JSON.parse(readFileSync(jsonPath, 'utf8'));
    assert.equal(exported.format, 'casesync-export');
    assert.equal(exported.exported_by.user, 'natalia');
    assert.equal(exported.case.state.military.unit, '93rd brigade');
    const people = exported.contributors.map((c) => `${c.user}/${c.device}`).sort();
    assert.deepEqual(people, ['ivan/phone', 'natalia/laptop', 'olena/phone']);
    const unitChanges = exported.changes.filter((c) => c.message === 'set military.unit').map((c) => c.user).sort();
    assert.deepEqual(unitChanges, ['ivan', 'olena']);
    await page.locator('#export-result', { hasText: /Exported case-.*\.json\. \d+ changes by 3 people and devices\./ }).waitFor();
    const [html] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download report (HTML)' }).click(),
    ]);
    const htmlPath = join(artifacts, 'admin-console-report.html');
    await html.saveAs(htmlPath);
    const report = readFileSync(htmlPath, 'utf8');
    assert.match(report, /<h1>Taras Melnyk<\/h1>/);
    assert.match(report, /93rd brigade/);
    await shot(page, 'admin-console-export');

    // Both exports are in the audit log.
    const audit = (await call('GET', '/api/audit?limit=1000', admin)).body.rows;
    assert.equal(audit.filter((r) => r.kind === 'export' && r.user === 'natalia' && r.doc === url).length, 2);

    // Nothing left this server's origin, and the page raised no errors.
    const foreign = requests.filter((r) => !r.startsWith(server.url) && !r.startsWith('blob:') && !r.startsWith('data:'));
    assert.deepEqual(foreign, []);
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    mother.close();
    brother.close();
  }
});

test('the console refuses a relative and signs out on a refused token', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(server.url + '/admin/');
  const csp = (await page.request.get(server.url + '/admin/')).headers()['content-security-policy'];
  assert.match(csp, /default-src 'self'/);
  await page.locator('#token').fill(server.token('olena', 'phone'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#signin-error', { hasText: 'not a coordinator' }).waitFor();
  await page.locator('#token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#signin-error', { hasText: 'refused or has expired' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await context.close();
});
