// The catalogues: every string the app shows comes from them, in English
// and Russian, for every field of the engine's schema.

import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { engine } from '../e2e/support/engine.mjs';
import { clientRoot } from '../e2e/support/server.mjs';
import { labelKeys } from '../app/layout.js';

const appDir = join(clientRoot, 'app');
const load = (lang) => JSON.parse(readFileSync(join(appDir, 'i18n', `${lang}.json`), 'utf8'));
const en = load('en');
const ru = load('ru');
const PLURAL = /\.(zero|one|two|few|many|other)$/;

function placeholders(s) {
  return [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
}

test('English and Russian have the same strings, none empty, with the same placeholders', () => {
  const base = (k) => k.replace(PLURAL, '');
  for (const [lang, cat] of [
    ['en', en],
    ['ru', ru],
  ]) {
    for (const [k, v] of Object.entries(cat)) {
      assert.equal(typeof v, 'string', `${lang} ${k}`);
      assert.ok(v.trim().length > 0, `${lang} ${k} is empty`);
      if (PLURAL.test(k)) assert.ok(`${base(k)}.other` in cat, `${lang} ${k} without .other`);
    }
  }
  const enBase = new Set(Object.keys(en).map(base));
  const ruBase = new Set(Object.keys(ru).map(base));
  assert.deepEqual([...enBase].filter((k) => !ruBase.has(k)), [], 'missing in ru');
  assert.deepEqual([...ruBase].filter((k) => !enBase.has(k)), [], 'missing in en');
  for (const k of Object.keys(en)) {
    const other = k in ru ? ru[k] : ru[`${base(k)}.other`];
    assert.deepEqual(placeholders(other), placeholders(en[k]), `placeholders of ${k}`);
  }
  // Russian plurals need all three forms.
  for (const k of Object.keys(en).filter((k) => k.endsWith('.one'))) {
    for (const form of ['one', 'few', 'many', 'other']) assert.ok(`${base(k)}.${form}` in ru, `ru ${base(k)}.${form}`);
  }
});

test('every section, field, collection and status of the schema has a label', () => {
  const schema = JSON.parse(engine.schema());
  const keys = labelKeys(schema);
  assert.ok(keys.length > 100);
  for (const k of keys) {
    assert.ok(k in en, `en lacks ${k}`);
    assert.ok(k in ru, `ru lacks ${k}`);
  }
});

test('every key the app asks for by name is in the catalogue', () => {
  const used = new Set();
  for (const file of readdirSync(appDir).filter((f) => f.endsWith('.js'))) {
    const src = readFileSync(join(appDir, file), 'utf8');
    for (const m of src.matchAll(/\bt\(\s*'([^']+)'/g)) used.add(m[1]);
    for (const m of src.matchAll(/\btn\(\s*'([^']+)'/g)) used.add(`${m[1]}.other`);
    // errorText(e, 'key') shows `key` or `key_offline`.
    for (const m of src.matchAll(/\berrorText\([^,]+,\s*'([^']+)'/g)) {
      used.add(m[1]);
      used.add(`${m[1]}_offline`);
    }
  }
  assert.ok(used.size > 60, `found ${used.size} keys`);
  for (const k of used) {
    assert.ok(k in en, `en lacks ${k}`);
    assert.ok(k in ru, `ru lacks ${k}`);
  }
});
