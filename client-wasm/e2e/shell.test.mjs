// The app shell: it opens with no network after the first visit (service
// worker), speaks the browser's language, fits a 360 px phone with large
// touch targets, and asks nothing of any other origin.

import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, requireDist } from './support/server.mjs';
import { launch, phone, screenshot, signIn, syncIndicator, waitForSync, waitForServiceWorker, openSection } from './support/browser.mjs';

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

test('after one visit the app shell loads from the service worker with no network', async () => {
  const p = await phone(browser, server);
  await p.page.goto(p.app);
  await p.page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await waitForServiceWorker(p.page);

  await p.context.setOffline(true);
  const fromWorker = new Map();
  p.page.on('response', (r) => fromWorker.set(new URL(r.url()).pathname, r.fromServiceWorker()));
  await p.page.reload();
  await p.page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await p.page.getByText('Paste the sign-in token you were given.').count(), 1);
  for (const path of ['/app/', '/app/app.js', '/app/style.css', '/app/js/casesync.js', '/app/pkg/casesync_client_wasm_bg.wasm', '/app/i18n/en.json']) {
    assert.equal(fromWorker.get(path), true, `${path} from the service worker`);
  }

  // Signing in needs no network either: the token is read on the phone;
  // the app says it is offline.
  await signIn(p.page, server.token('nadia', 'phone'));
  await waitForSync(p.page, 'offline');
  assert.equal((await syncIndicator(p.page)).text, 'Offline');
  await p.page.getByText('No cases yet. Create one, or accept an invitation.').waitFor();
  await screenshot(p.page, 'shell-01-offline-first-start');

  // A route deep in the app opens offline too.
  await p.page.goto(p.app + '#/device');
  await p.page.getByRole('heading', { name: 'This phone' }).waitFor();
  assert.match(await p.page.locator('dl').innerText(), /user:nadia:phone/);

  // Back online, it connects by itself.
  await p.context.setOffline(false);
  await waitForSync(p.page, 'saved');
  assert.deepEqual(p.errors, []);
  await p.context.close();
});

test('the interface follows the browser language: Russian', async () => {
  const p = await phone(browser, server, { locale: 'ru-RU' });
  await p.page.goto(p.app);
  await p.page.getByRole('heading', { name: 'Вход' }).waitFor();
  assert.equal(await p.page.locator('html').getAttribute('lang'), 'ru');
  assert.equal(await p.page.getByRole('button', { name: 'Войти' }).count(), 1);
  await signIn(p.page, server.token('mariia', 'phone'));
  await waitForSync(p.page, 'saved');
  assert.equal((await syncIndicator(p.page)).text, 'Всё сохранено на сервере');
  assert.deepEqual(await p.page.locator('#nav a').allInnerTexts(), ['Дела', 'Приглашение', 'Этот телефон']);
  await p.page.getByRole('button', { name: 'Новое дело' }).click();
  await p.page.locator('.case-title', { hasText: 'Дело без имени' }).waitFor();
  await openSection(p.page, 'disappearance');
  await p.page.getByText('Обстоятельства', { exact: true }).waitFor();
  await screenshot(p.page, 'shell-02-russian-editor');
  await p.context.close();
});

test('an unknown language falls back to English', async () => {
  const p = await phone(browser, server, { locale: 'de-DE' });
  await p.page.goto(p.app);
  await p.page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await p.page.locator('html').getAttribute('lang'), 'en');
  await p.context.close();
});

test('the editor fits a 360 px screen and every control is at least 44 px tall', async () => {
  const p = await phone(browser, server);
  const token = server.token('halyna', 'phone');
  const url = await server.createCase(token, { 'person.given_name': 'Serhii', 'military.unit': '24th brigade' });
  await p.page.goto(p.app);
  await signIn(p.page, token);
  await p.page.locator(`a.case-link[data-url="${url}"]`).click();
  await p.page.locator('.case-title', { hasText: 'Serhii' }).waitFor();
  for (const key of ['person', 'military', 'disappearance', 'status_claims', 'sources', 'requests', 'dna', 'remains_burial', 'timeline', 'references', 'attachments']) {
    await openSection(p.page, key);
  }
  const width = await p.page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `page is ${width} px wide`);
  const small = await p.page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('button, input:not([type=checkbox]):not([type=file]), select, textarea, summary, #nav a, .case-link, label.button, .back')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue; // hidden
      if (r.height < 44 || r.width < 44) out.push(`${el.tagName.toLowerCase()} "${(el.textContent || el.getAttribute('aria-label') || '').trim().slice(0, 30)}" ${Math.round(r.width)}x${Math.round(r.height)}`);
    }
    return out;
  });
  assert.deepEqual(small, []);
  await screenshot(p.page, 'shell-03-editor-360px');
  // No request ever left the server's origin.
  const foreign = p.requests.filter((u) => !u.startsWith(server.url + '/') && !u.startsWith(server.url.replace('http', 'ws') + '/'));
  assert.deepEqual(foreign, []);
  await p.context.close();
});
