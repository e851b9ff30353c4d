// The field app's screens, each through what the page shows: every section
// of a case, photos with their metadata stripped, invitations, a token that
// expires and is renewed, and forgetting the device.

import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, requireDist, until } from './support/server.mjs';
import { launch, phone, screenshot, signIn, syncIndicator, waitForSync, openSection, field, setRegister, typeInNarrative } from './support/browser.mjs';

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

async function signedIn(user, device, options) {
  const p = await phone(browser, server, options);
  const token = server.token(user, device);
  await p.page.goto(p.app);
  await signIn(p.page, token);
  return { ...p, token };
}

function item(page, collection, text) {
  return page.locator(`article.item[data-collection="${collection}"]`, { hasText: text });
}

test('a relative creates a case and fills every section; the server holds it all', async () => {
  const p = await signedIn('olha', 'phone');
  const { page } = p;
  await waitForSync(page, 'saved');
  await page.getByRole('button', { name: 'New case' }).click();
  await page.locator('.case-title', { hasText: 'Unnamed case' }).waitFor();
  const url = decodeURIComponent(new URL(page.url()).hash.slice('#/case/'.length));
  assert.match(url, /^automerge:/);

  // Person, with a name variant.
  await setRegister(page, 'person.given_name', 'Taras');
  await setRegister(page, 'person.family_name', 'Melnyk');
  await setRegister(page, 'person.height_cm', '181');
  await page.getByRole('button', { name: 'Add a name' }).click();
  const variant = page.locator('article.item[data-collection="person.name_variants"]').first();
  await variant.locator('input').first().fill('Taras Melnik');
  await variant.locator('input').first().press('Enter');
  await page.locator('.case-title', { hasText: 'Taras Melnyk' }).waitFor();

  // A register refuses what it cannot hold, and says why.
  await setRegister(page, 'person.date_of_birth', '1990-13-01');
  await field(page, 'person.date_of_birth').getByText(/^Not a date this app understands/).waitFor();
  await setRegister(page, 'person.date_of_birth', '1990-05');
  await until(async () => (await field(page, 'person.date_of_birth').locator('.error').isHidden()), 5000, 'the error goes');

  // Military and disappearance.
  await openSection(page, 'military');
  await setRegister(page, 'military.unit', '72nd brigade');
  await openSection(page, 'disappearance');
  await setRegister(page, 'disappearance.date', '2023-02-01/2023-03');
  await typeInNarrative(page, 'disappearance.circumstances', 'Went out on a mission near Vuhledar and did not come back.');

  // A source, then a status claim citing it.
  await openSection(page, 'sources');
  await page.getByRole('button', { name: 'Add a source' }).click();
  const source = page.locator('article.item[data-collection="sources"]').first();
  await source.locator('[data-path$=".title"] input').fill('Call from his commander');
  await source.locator('[data-path$=".title"] input').press('Enter');
  await source.locator('[data-path$=".kind"] input').fill('testimony');
  await source.locator('[data-path$=".kind"] input').press('Enter');
  await openSection(page, 'status_claims');
  await page.getByRole('button', { name: 'Add what someone says happened' }).click();
  const form = page.locator('form.adder');
  await form.locator('select').selectOption('captured');
  await form.getByLabel('Who says so').fill('His commander');
  await form.getByLabel('As of').fill('2023-02');
  await form.getByLabel('What they said').fill('Seen being led away by soldiers.');
  await form.getByLabel('Call from his commander').check();
  await form.getByRole('button', { name: 'Add', exact: true }).click();
  const claim = item(page, 'status_claims', 'Captured · His commander');
  await claim.waitFor();
  assert.equal(await claim.getByLabel('Call from his commander').isChecked(), true);
  assert.equal(await claim.locator('select').inputValue(), 'captured');

  // A request to an authority, and its reply.
  await openSection(page, 'requests');
  await page.getByRole('button', { name: 'Add a request' }).click();
  const request = page.locator('article.item[data-collection="requests"]').first();
  await request.locator('[data-path$=".authority"] input').fill('ICRC Central Tracing Agency');
  await request.locator('[data-path$=".authority"] input').press('Enter');
  await request.getByRole('button', { name: 'Add a reply' }).click();
  const reply = request.locator('article.item[data-collection="requests.*.replies"]').first();
  await reply.locator('[data-path$=".outcome"] input').fill('registered, no information yet');
  await reply.locator('[data-path$=".outcome"] input').press('Enter');

  // DNA, remains and burial, timeline.
  await openSection(page, 'dna');
  await page.getByRole('button', { name: 'Add a DNA sample' }).click();
  const dna = page.locator('article.item[data-collection="dna"]').first();
  await dna.locator('[data-path$=".donor_relation"] input').fill('mother');
  await dna.locator('[data-path$=".donor_relation"] input').press('Enter');
  await openSection(page, 'remains_burial');
  await page.getByRole('button', { name: 'Add a report of remains' }).click();
  const remains = page.locator('article.item[data-collection="remains"]').first();
  await remains.locator('[data-path$=".place"] input').fill('Zaporizhzhia morgue');
  await remains.locator('[data-path$=".place"] input').press('Enter');
  await setRegister(page, 'burial.cemetery', 'Lychakiv');
  await openSection(page, 'timeline');
  await page.getByRole('button', { name: 'Add an event' }).click();
  const event = page.locator('article.item[data-collection="timeline"]').first();
  await event.locator('[data-path$=".date"] input').fill('2023-02-12');
  await event.locator('[data-path$=".date"] input').press('Enter');
  await event.locator('[data-path$=".title"] input').fill('Last call');
  await event.locator('[data-path$=".title"] input').press('Enter');
  await item(page, 'timeline', '2023-02-12 · Last call').waitFor();

  // Deleting is soft and can be undone.
  await remains.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Show 1 deleted' }).click();
  await remains.getByRole('button', { name: 'Restore' }).click();
  await remains.locator('[data-path$=".place"] input').waitFor();

  await waitForSync(page, 'saved');
  await screenshot(page, 'editor-01-status-claim', claim);
  await screenshot(page, 'editor-02-request-reply', request);

  const onServer = (await server.getCase(p.token, url)).case;
  assert.equal(onServer.person.given_name, 'Taras');
  assert.equal(onServer.person.height_cm, 181);
  assert.equal(onServer.person.date_of_birth, '1990-05');
  assert.deepEqual(Object.values(onServer.person.name_variants).map((v) => v.name), ['Taras Melnik']);
  assert.equal(onServer.military.unit, '72nd brigade');
  assert.equal(onServer.disappearance.date, '2023-02-01/2023-03');
  assert.equal(onServer.disappearance.circumstances, 'Went out on a mission near Vuhledar and did not come back.');
  const [sourceId] = Object.keys(onServer.sources);
  const [c] = Object.values(onServer.status_claims);
  assert.equal(c.status, 'captured');
  assert.equal(c.claimed_by, 'His commander');
  assert.equal(c.as_of, '2023-02');
  assert.equal(c.statement, 'Seen being led away by soldiers.');
  assert.deepEqual(Object.keys(c.source_ids), [sourceId]);
  const [r] = Object.values(onServer.requests);
  assert.equal(r.authority, 'ICRC Central Tracing Agency');
  assert.deepEqual(Object.values(r.replies).map((x) => x.outcome), ['registered, no information yet']);
  assert.deepEqual(Object.values(onServer.dna).map((x) => x.donor_relation), ['mother']);
  const [rem] = Object.values(onServer.remains);
  assert.equal(rem.place, 'Zaporizhzhia morgue');
  assert.equal(rem.deleted_at, null, 'restored');
  assert.equal(onServer.burial.cemetery, 'Lychakiv');
  assert.deepEqual(Object.values(onServer.timeline).map((x) => [x.date, x.title]), [['2023-02-12', 'Last call']]);
  assert.deepEqual(p.errors, []);
  await p.context.close();
});

// A small JPEG from the browser's own encoder, with an EXIF segment put in
// after the start marker: a camera make and a GPS-looking string.
async function jpegWithExif(page) {
  const plain = await page.evaluate(async () => {
    const c = document.createElement('canvas');
    c.width = 64;
    c.height = 48;
    const g = c.getContext('2d');
    g.fillStyle = '#3a7';
    g.fillRect(0, 0, 64, 48);
    const blob = await new Promise((r) => c.toBlob(r, 'image/jpeg', 0.9));
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  });
  const make = Buffer.from('SpyCam GPS 48.0159N 37.8028E\0', 'latin1');
  const ifd = Buffer.alloc(2 + 12 + 4);
  ifd.writeUInt16BE(1, 0);
  ifd.writeUInt16BE(0x010f, 2); // Make
  ifd.writeUInt16BE(2, 4); // ASCII
  ifd.writeUInt32BE(make.length, 6);
  ifd.writeUInt32BE(8 + ifd.length, 10);
  ifd.writeUInt32BE(0, 14);
  const tiff = Buffer.concat([Buffer.from('MM\0\x2a\0\0\0\x08', 'latin1'), ifd, make]);
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const seg = Buffer.alloc(4);
  seg.writeUInt16BE(0xffe1, 0);
  seg.writeUInt16BE(payload.length + 2, 2);
  const bytes = Buffer.from(plain);
  return Buffer.concat([bytes.subarray(0, 2), seg, payload, bytes.subarray(2)]);
}

test('a photo is re-encoded without its EXIF metadata and only its metadata joins the case', async () => {
  const p = await signedIn('iryna', 'phone');
  const { page } = p;
  const url = await server.createCase(p.token, { 'person.given_name': 'Oleh' });
  await page.goto(p.app + '#/case/' + encodeURIComponent(url));
  await page.locator('.case-title', { hasText: 'Oleh' }).waitFor();
  const jpeg = await jpegWithExif(page);
  assert.ok(jpeg.includes(Buffer.from('Exif')) && jpeg.includes(Buffer.from('SpyCam')), 'the test photo carries EXIF');

  // The re-encoder itself: what comes out has no EXIF and none of its text.
  const out = await page.evaluate(async (bytes) => {
    const { reencodeJpeg } = await import('./photo.js');
    const { blob, width, height } = await reencodeJpeg(new Blob([new Uint8Array(bytes)], { type: 'image/jpeg' }));
    return { bytes: Array.from(new Uint8Array(await blob.arrayBuffer())), type: blob.type, width, height };
  }, Array.from(jpeg));
  const reencoded = Buffer.from(out.bytes);
  assert.equal(out.type, 'image/jpeg');
  assert.deepEqual([out.width, out.height], [64, 48]);
  assert.deepEqual([...reencoded.subarray(0, 2)], [0xff, 0xd8]);
  assert.equal(reencoded.includes(Buffer.from('Exif')), false, 'no EXIF segment');
  assert.equal(reencoded.includes(Buffer.from('SpyCam')), false, 'nothing of the old metadata');
  assert.equal(reencoded.indexOf(Buffer.from([0xff, 0xe1])), -1, 'no APP1 segment at all');

  // Through the app: the attachment shows its name, type and size.
  await openSection(page, 'attachments');
  await page.getByText('Location and camera details are removed from each photo on this phone').waitFor();
  await page.locator('[data-section="attachments"] input[type="file"]').setInputFiles({ name: 'IMG_20230214_0630.jpeg', mimeType: 'image/jpeg', buffer: jpeg });
  const card = item(page, 'attachments', 'IMG_20230214_0630.jpg');
  await card.waitFor();
  assert.equal((await card.locator('[data-path$=".media_type"] output').innerText()).trim(), 'image/jpeg');
  assert.match((await card.locator('[data-path$=".size_bytes"] output').innerText()).trim(), /^\d+(\.\d)? (bytes|KB)$/);
  assert.match((await card.locator('[data-path$=".sha256"] output').innerText()).trim(), /^[0-9a-f]{64}$/);
  await card.locator('[data-path$=".caption"] input').fill('At the station, 2022');
  await card.locator('[data-path$=".caption"] input').press('Enter');
  await waitForSync(page, 'saved');
  await screenshot(page, 'editor-03-photo-attachment', card);

  const [a] = Object.values((await server.getCase(p.token, url)).case.attachments);
  assert.equal(a.file_name, 'IMG_20230214_0630.jpg');
  assert.equal(a.media_type, 'image/jpeg');
  assert.equal(a.caption, 'At the station, 2022');
  assert.ok(a.size_bytes > 0);
  assert.equal(JSON.stringify(a).includes('SpyCam'), false);
  await p.context.close();
});

test('accepting an invitation shows what the server answered', async () => {
  const p = await signedIn('petro', 'phone');
  const { page } = p;
  await page.getByRole('link', { name: 'Invitation' }).click();
  await page.getByRole('heading', { name: 'Accept an invitation' }).waitFor();
  await page.getByLabel('Invitation code or link').fill('not a code!');
  await page.getByRole('button', { name: 'Accept' }).click();
  await page.getByText('This does not look like an invitation code.').waitFor();

  // A link carrying a code nobody issued: the server refuses it, and the
  // page shows the refusal.
  let asked = null;
  page.on('request', (r) => {
    if (r.url().includes('/api/invitations/')) asked = `${r.method()} ${new URL(r.url()).pathname}`;
  });
  await page.getByLabel('Invitation code or link').fill(`${server.url}/app/#invite=Zx81-unknown`);
  await page.getByRole('button', { name: 'Accept' }).click();
  const error = page.locator('form .error');
  await error.getByText('There is no such invitation. Check the code, or ask for a new one.').waitFor();
  assert.equal(asked, 'POST /api/invitations/Zx81-unknown/accept');
  await screenshot(page, 'editor-04-invitation-refused');

  // Offline, it says a connection is needed.
  await p.context.setOffline(true);
  await page.getByRole('button', { name: 'Accept' }).click();
  await error.getByText('Accepting an invitation needs a connection to the server.').waitFor();
  await p.context.close();
});

test('an expired sign-in stops syncing, keeps the edits, and a new token resumes', async () => {
  const p = await phone(browser, server);
  const { page } = p;
  const shortLived = server.token('vira', 'phone', '4s');
  const url = await server.createCase(shortLived, { 'person.given_name': 'Ivan' });
  await page.goto(p.app);
  await signIn(page, shortLived);
  await page.locator(`a.case-link[data-url="${url}"]`).click();
  await page.locator('.case-title', { hasText: 'Ivan' }).waitFor();
  await waitForSync(page, 'saved');

  // The server closes the socket when the token expires.
  await waitForSync(page, 'auth', 15_000);
  assert.equal((await syncIndicator(page)).text, 'Sign in again to sync');
  await page.getByText('Your sign-in has expired. Your changes are kept on this phone.').waitFor();
  await setRegister(page, 'person.family_name', 'Bondarenko');
  assert.equal((await syncIndicator(page)).state, 'auth');
  await screenshot(page, 'editor-05-sign-in-expired');

  await page.getByRole('link', { name: 'Sign in again' }).click();
  await page.getByText('Your sign-in has expired. Paste a new token to continue syncing.').waitFor();
  await signIn(page, server.token('vira', 'phone'));
  await waitForSync(page, 'saved');
  const reader = server.token('vira', 'laptop');
  await until(async () => (await server.getCase(reader, url)).case.person.family_name === 'Bondarenko', 10_000, 'the edit on the server');
  assert.equal((await syncIndicator(page)).text, 'Everything saved to the server');
  await p.context.close();
});

test('forget this device erases the cases, the sign-in, the caches and the service worker', async () => {
  const p = await signedIn('yulia', 'phone');
  const { page } = p;
  const url = await server.createCase(p.token, { 'person.given_name': 'Maksym' });
  await page.reload();
  await page.locator(`a.case-link[data-url="${url}"]`).getByText('Maksym').waitFor();
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
  await waitForSync(page, 'saved');
  const before = await page.evaluate(async () => ({
    dbs: (await indexedDB.databases()).map((d) => d.name),
    caches: (await caches.keys()).length,
  }));
  assert.ok(before.dbs.includes('casesync'));
  assert.ok(before.caches > 0);

  await page.getByRole('link', { name: 'This phone' }).click();
  await page.getByRole('heading', { name: 'This phone' }).waitFor();
  await page.getByRole('button', { name: 'Forget this device' }).click();
  await page.getByText('Erases every case, the sign-in and the app\'s files from this phone.').first().waitFor();
  await page.getByRole('button', { name: "Yes, erase this phone's data" }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByText("This phone's data has been erased.").waitFor();
  const afterForget = await page.evaluate(async () => ({
    dbs: (await indexedDB.databases()).map((d) => d.name),
    caches: await caches.keys(),
    workers: (await navigator.serviceWorker.getRegistrations()).length,
  }));
  assert.deepEqual(afterForget, { dbs: [], caches: [], workers: 0 });
  await screenshot(page, 'editor-06-forgotten');

  // Signing in again starts from nothing on this phone; the case comes
  // back from the server.
  await signIn(page, server.token('yulia', 'phone'));
  await page.locator(`a.case-link[data-url="${url}"]`).getByText('Maksym').waitFor();
  await p.context.close();
});
