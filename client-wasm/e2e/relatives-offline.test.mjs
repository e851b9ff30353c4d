// Two relatives, two phones, one case. The mother's phone loses the
// network; both keep writing; she reloads the app with no network and
// everything is still there; the network comes back and both phones show
// the merged case within seconds, with nothing lost, and the one field they
// both changed shown as a conflict with both values and who wrote them.
//
// Olena creates the case and invites her mother and her sister; each
// accepts the invitation link in the app, with her own account.

import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, requireDist } from './support/server.mjs';
import {
  launch,
  phone,
  screenshot,
  signIn,
  syncIndicator,
  waitForSync,
  waitForServiceWorker,
  openSection,
  field,
  setRegister,
  typeInNarrative,
} from './support/browser.mjs';

const ORIGINAL = 'Last call near Bakhmut on 12 February.';
const MOTHER_TEXT = ' Mother: he said they were moving east.';
const SISTER_TEXT = 'Sister: his commander confirmed he was there. ';

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

async function narrativeValue(page) {
  return field(page, 'disappearance.circumstances').locator('textarea').inputValue();
}

test('two relatives edit one case, one of them offline through a reload, and both see the merged case', async () => {
  // Step 1: Olena opens the case for her brother with what she knows.
  const owner = server.token('olena', 'laptop');
  const url = await server.createCase(owner, {
    'person.given_name': 'Andrii',
    'person.family_name': 'Kovalenko',
    'military.unit': '93rd brigade',
    'disappearance.circumstances': ORIGINAL,
  });

  // Step 2: she sends their mother and sister an invitation link each (by
  // messenger); they open it on their phones, sign in and accept. The
  // sister first tries the link her mother already used: it is refused.
  const mother = await phone(browser, server);
  const sister = await phone(browser, server);
  const invitations = { mother: await server.invite(owner, url), sister: await server.invite(owner, url) };
  for (const [who, p] of [
    ['mother', mother],
    ['sister', sister],
  ]) {
    await p.page.goto(p.app);
    await signIn(p.page, server.token(who === 'mother' ? 'nina' : 'daria', 'phone'));
    if (who === 'sister') {
      await p.page.goto(p.app + '#invite=' + invitations.mother.code);
      await p.page.locator('#invite-code').waitFor();
      await p.page.getByRole('button', { name: 'Accept' }).click();
      const refused = p.page.locator('form .error');
      await refused.waitFor();
      assert.match(await refused.innerText(), /already used/);
      await screenshot(p.page, 'relatives-00-used-invitation-refused');
    }
    await p.page.goto(p.app + '#invite=' + invitations[who].code);
    assert.equal(await p.page.locator('#invite-code').inputValue(), invitations[who].code);
    await p.page.getByRole('button', { name: 'Accept' }).click();
    await p.page.locator('.case-title', { hasText: 'Andrii Kovalenko' }).waitFor();
    await waitForSync(p.page, 'saved');
    await waitForServiceWorker(p.page);
    await openSection(p.page, 'military');
    await openSection(p.page, 'disappearance');
    assert.equal(await narrativeValue(p.page), ORIGINAL);
    assert.equal(await field(p.page, 'military.unit').locator('input').inputValue(), '93rd brigade');
    assert.equal((await syncIndicator(p.page)).text, 'Everything saved to the server');
  }
  await screenshot(mother.page, 'relatives-01-mother-online');

  // Step 3: the mother's phone loses the network.
  await mother.context.setOffline(true);
  await waitForSync(mother.page, 'offline');

  // Step 4: both write: the same narrative, different registers, and the
  // same register (the unit) with different values.
  await typeInNarrative(mother.page, 'disappearance.circumstances', MOTHER_TEXT, 'end');
  await setRegister(mother.page, 'military.rank', 'Sergeant');
  await setRegister(mother.page, 'military.unit', '93rd mechanized brigade');

  await typeInNarrative(sister.page, 'disappearance.circumstances', SISTER_TEXT, 'start');
  await setRegister(sister.page, 'military.position', 'Driver');
  await setRegister(sister.page, 'military.unit', '93rd brigade, 2nd battalion');
  await waitForSync(sister.page, 'saved');

  const offline = await syncIndicator(mother.page);
  assert.equal(offline.state, 'offline');
  assert.ok(offline.pending > 0, 'the offline edits are counted');
  assert.match(offline.text, /^Offline · \d+ changes kept on this phone$/);
  assert.equal(await narrativeValue(mother.page), ORIGINAL + MOTHER_TEXT);
  await screenshot(mother.page, 'relatives-02-mother-offline-edits', field(mother.page, 'military.unit'));
  await screenshot(sister.page, 'relatives-03-sister-online-edits', field(sister.page, 'military.unit'));

  // Step 5: the mother reloads the app, still with no network. The app
  // comes from the service worker, the case and her edits from IndexedDB.
  await mother.page.reload();
  await mother.page.locator('.case-title', { hasText: 'Andrii Kovalenko' }).waitFor();
  await openSection(mother.page, 'military');
  await openSection(mother.page, 'disappearance');
  assert.equal(await narrativeValue(mother.page), ORIGINAL + MOTHER_TEXT);
  assert.equal(await field(mother.page, 'military.rank').locator('input').inputValue(), 'Sergeant');
  assert.equal(await field(mother.page, 'military.unit').locator('input').inputValue(), '93rd mechanized brigade');
  assert.equal(await field(mother.page, 'military.position').locator('input').inputValue(), '', 'the sister\'s edit has not arrived');
  const afterReload = await syncIndicator(mother.page);
  assert.equal(afterReload.state, 'offline');
  assert.equal(afterReload.pending, offline.pending, 'the same changes still wait');
  await screenshot(mother.page, 'relatives-04-mother-reloaded-offline');
  await screenshot(mother.page, 'relatives-04b-mother-reloaded-offline-narrative', field(mother.page, 'disappearance.circumstances'));

  // Step 6: the network comes back. Within seconds both phones show the
  // merged case, everything saved.
  const back = Date.now();
  await mother.context.setOffline(false);
  const merged = SISTER_TEXT + ORIGINAL + MOTHER_TEXT;
  for (const p of [mother, sister]) {
    await p.page.waitForFunction(
      (text) => document.querySelector('[data-path="disappearance.circumstances"] textarea')?.value === text,
      merged,
      { timeout: 10_000 },
    );
    await p.page.waitForFunction(
      () => document.querySelector('[data-path="military.position"] input')?.value === 'Driver',
      null,
      { timeout: 10_000 },
    );
    await waitForSync(p.page, 'saved', 10_000);
  }
  const took = Date.now() - back;
  assert.ok(took < 10_000, `merged in ${took} ms`);
  for (const p of [mother, sister]) {
    assert.equal(await narrativeValue(p.page), merged);
    assert.equal(await field(p.page, 'military.rank').locator('input').inputValue(), 'Sergeant');
    assert.equal(await field(p.page, 'military.position').locator('input').inputValue(), 'Driver');
    assert.equal((await syncIndicator(p.page)).text, 'Everything saved to the server');
  }

  // Step 7: the unit was changed on both phones at once: each page shows
  // both values where the unit is, and who wrote each.
  for (const [p, mine, theirs] of [
    [mother, '93rd mechanized brigade', '93rd brigade, 2nd battalion'],
    [sister, '93rd brigade, 2nd battalion', '93rd mechanized brigade'],
  ]) {
    const box = field(p.page, 'military.unit').locator('.conflict');
    await box.waitFor({ timeout: 10_000 });
    assert.match(await box.innerText(), /Different values were entered at the same time/);
    const rows = box.locator('.conflict-value');
    assert.equal(await rows.count(), 2);
    const mineRow = rows.filter({ hasText: mine });
    const theirsRow = rows.filter({ hasText: theirs });
    assert.equal((await mineRow.locator('.who').innerText()).trim(), 'you, on this phone');
    assert.match((await theirsRow.locator('.who').innerText()).trim(), /^device [0-9a-f]{8}$/);
  }
  await screenshot(mother.page, 'relatives-05-mother-merged-conflict', field(mother.page, 'military.unit'));
  await screenshot(sister.page, 'relatives-06-sister-merged-conflict', field(sister.page, 'military.unit'));
  await screenshot(sister.page, 'relatives-06b-sister-merged-narrative', field(sister.page, 'disappearance.circumstances'));

  // Step 8: the sister keeps her mother's value; the conflict is gone on
  // both phones and the unit reads the same everywhere.
  await field(sister.page, 'military.unit')
    .locator('.conflict-value', { hasText: '93rd mechanized brigade' })
    .getByRole('button', { name: 'Keep this' })
    .click();
  for (const p of [mother, sister]) {
    await p.page.waitForFunction(
      () =>
        !document.querySelector('[data-path="military.unit"] .conflict') &&
        document.querySelector('[data-path="military.unit"] input')?.value === '93rd mechanized brigade',
      null,
      { timeout: 10_000 },
    );
    await waitForSync(p.page, 'saved');
  }
  await screenshot(mother.page, 'relatives-07-conflict-resolved', field(mother.page, 'military.unit'));

  // The server holds the same merged case.
  const onServer = await server.getCase(owner, url);
  assert.equal(onServer.case.disappearance.circumstances, merged);
  assert.equal(onServer.case.military.unit, '93rd mechanized brigade');
  assert.equal(onServer.case.military.rank, 'Sergeant');
  assert.equal(onServer.case.military.position, 'Driver');
  assert.deepEqual(onServer.conflicts, []);

  // Nothing went anywhere but the server, and no page error happened.
  for (const p of [mother, sister]) {
    const foreign = p.requests.filter((u) => !u.startsWith(server.url + '/') && !u.startsWith(server.url.replace('http', 'ws') + '/'));
    assert.deepEqual(foreign, []);
    assert.deepEqual(p.errors, []);
  }
  await mother.context.close();
  await sister.context.close();
});
