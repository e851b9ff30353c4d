// The interface language follows the browser (`navigator.languages`):
// the first of them we have a catalogue for, else English. Every visible
// string comes from `i18n/<lang>.json`.

export const LANGUAGES = ['en', 'ru'];
const FALLBACK = 'en';

let lang = FALLBACK;
let catalogue = {};
let fallback = {};
let plurals = new Intl.PluralRules(FALLBACK);

export function pickLanguage(preferred = navigator.languages || [navigator.language]) {
  for (const tag of preferred) {
    const primary = String(tag || '').toLowerCase().split('-')[0];
    if (LANGUAGES.includes(primary)) return primary;
  }
  return FALLBACK;
}

async function fetchCatalogue(code) {
  const res = await fetch(new URL(`./i18n/${code}.json`, import.meta.url));
  if (!res.ok) throw new Error(`catalogue ${code}: HTTP ${res.status}`);
  return res.json();
}

export async function loadLanguage(code = pickLanguage()) {
  fallback = await fetchCatalogue(FALLBACK);
  catalogue = code === FALLBACK ? fallback : await fetchCatalogue(code).catch(() => fallback);
  lang = catalogue === fallback ? FALLBACK : code;
  plurals = new Intl.PluralRules(lang);
  document.documentElement.lang = lang;
  return lang;
}

export function language() {
  return lang;
}

/** The string for `key`, with `{name}` placeholders filled from `params`.
 *  A missing key shows the key itself, so a gap is visible, not silent. */
export function t(key, params) {
  let s = catalogue[key] ?? fallback[key] ?? key;
  if (params) {
    s = s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
  }
  return s;
}

/** Plural form: `key.one`, `key.few`, `key.many` or `key.other` by the
 *  language's rules, with `{count}` filled in. */
export function tn(key, count, params = {}) {
  const form = plurals.select(count);
  const k = `${key}.${form}` in catalogue || `${key}.${form}` in fallback ? `${key}.${form}` : `${key}.other`;
  return t(k, { count, ...params });
}

/** Whether the catalogue has `key` (for optional labels). */
export function has(key) {
  return key in catalogue || key in fallback;
}

export function formatBytes(n) {
  const units = ['bytes', 'kb', 'mb'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const num = new Intl.NumberFormat(lang, { maximumFractionDigits: i ? 1 : 0 }).format(v);
  return t(`unit.${units[i]}`, { n: num });
}

export function formatDate(ms) {
  try {
    return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(ms));
  } catch {
    return '';
  }
}
