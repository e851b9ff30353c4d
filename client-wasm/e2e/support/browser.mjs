// Debian's chromium driven by playwright-core (Playwright's own browser
// download does not work here), a phone-sized context per relative, and
// helpers that read what the app shows.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './server.mjs';

export const screenshotDir = join(repoRoot, 'artifacts', 'screenshots');

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A phone: 360 px wide, touch, its own profile (IndexedDB, caches, service
 *  worker). Records every request so a test can check none left the
 *  server's origin. */
export async function phone(browser, server, { locale = 'en-GB' } = {}) {
  const context = await browser.newContext({
    viewport: { width: 360, height: 740 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale,
  });
  const page = await context.newPage();
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { context, page, requests, errors, app: server.url + '/app/' };
}

/** Saves what the phone's screen shows, scrolled to `focus` (a locator)
 *  when given. */
export async function screenshot(page, name, focus) {
  mkdirSync(screenshotDir, { recursive: true });
  if (focus) await focus.first().evaluate((el) => el.scrollIntoView({ block: 'start' }));
  else await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(screenshotDir, `${name}.png`) });
}

/** Signs in by pasting the token, as a relative would. */
export async function signIn(page, token) {
  await page.locator('#token').fill(token);
  await page.locator('form.signin button[type="submit"]').click();
  await page.locator('#sync').waitFor();
}

/** The sync indicator: `{state, text, pending}`. */
export async function syncIndicator(page) {
  const el = page.locator('#sync');
  return {
    state: await el.getAttribute('data-state'),
    pending: Number(await el.getAttribute('data-pending')),
    text: (await el.innerText()).trim(),
  };
}

export async function waitForSync(page, state, timeout = 15_000) {
  await page.locator(`#sync[data-state="${state}"]`).waitFor({ timeout });
}

/** Waits until the service worker controls the page (so it reloads
 *  offline). */
export async function waitForServiceWorker(page) {
  await page.waitForFunction(() => navigator.serviceWorker && navigator.serviceWorker.controller !== null, null, {
    timeout: 20_000,
  });
}

export async function openSection(page, key) {
  const details = page.locator(`details[data-section="${key}"]`);
  if (!(await details.evaluate((d) => d.open))) await details.locator('> summary').click();
}

export function field(page, path) {
  return page.locator(`[data-path="${path}"]`);
}

/** Sets a register as a person does: type, then Enter. */
export async function setRegister(page, path, value) {
  const input = field(page, path).locator('input, select').first();
  await input.fill(value);
  await input.press('Enter');
}

/** Types into a narrative at its start or end. */
export async function typeInNarrative(page, path, text, where = 'end') {
  const area = field(page, path).locator('textarea');
  await area.click();
  await area.press(where === 'end' ? 'Control+End' : 'Control+Home');
  await page.keyboard.type(text, { delay: 5 });
}
