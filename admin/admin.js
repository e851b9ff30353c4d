// casesync coordinator console: the history API (GET/POST /api/cases/{id}/…)
// in a page. Plain JS, no framework, no third-party requests. Every value
// from a case goes into the page as text (textContent), never as HTML.
//
// The token is kept in sessionStorage: it lives as long as the tab.

const TOKEN_KEY = 'casesync.console.token';
const PAGE = 100;

const $ = (id) => document.getElementById(id);

/** `h('p', {class: 'x'}, 'text', child)`: an element; strings become text. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// ---------------------------------------------------------------- formats

const STATUS_LABELS = {
  missing: 'Missing',
  alive: 'Alive',
  wounded: 'Wounded',
  captured: 'Captured',
  killed: 'Killed',
  remains_identified: 'Remains identified',
};

function statusLabel(s) {
  return s ? STATUS_LABELS[s] || s : 'No official status';
}

function fmtTime(ms) {
  if (typeof ms !== 'number') return '—';
  return new Date(ms).toLocaleString('en-GB', {
    day: 'numeric',
    month: 'short',
    year: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

function fmtDuration(ms) {
  const min = Math.round(ms / 60_000);
  if (min < 1) return 'under a minute';
  if (min < 60) return `${min} min`;
  const hours = Math.floor(min / 60);
  if (hours < 48) return min % 60 ? `${hours} h ${min % 60} min` : `${hours} h`;
  return `${Math.round(hours / 24)} days`;
}

function label(key) {
  const s = String(key).replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function shortHash(hash) {
  return hash ? hash.slice(0, 8) : '';
}

/** One line about a change: "#12 · 3 Mar 2024, 14:07 · maria (phone) — set military.rank". */
function changeLabel(c) {
  return `#${c.log_seq} · ${fmtTime(c.received_at_ms)} · ${c.user} (${c.device}) — ${c.message || 'change'}`;
}

function touched(summary) {
  if (!summary) return '';
  const parts = [
    ...(summary.fields || []),
    ...(summary.added || []).map((p) => '+ ' + p),
    ...(summary.deleted || []).map((p) => '− ' + p),
    ...(summary.restored || []).map((p) => '↺ ' + p),
  ];
  return parts.join(', ');
}

// ------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);

async function api(path, { method = 'GET', body, raw = false } = {}) {
  const headers = { Authorization: 'Bearer ' + token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (res.status === 401) {
    signOut('Your token was refused or has expired. Sign in again.');
    throw new ApiError(401, 'unauthorized');
  }
  if (raw && res.ok) return res;
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data?.error?.message || `HTTP ${res.status}`);
  return data;
}

function casePath(id, rest = '') {
  return '/api/cases/' + encodeURIComponent(id) + rest;
}

/** The claims of a JWT, for showing who is signed in (the server checks it). */
function claims(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return {};
  }
}

// --------------------------------------------------------------- sign in

function showSignIn(message) {
  $('console-view').hidden = true;
  $('who').hidden = true;
  $('signin-view').hidden = false;
  $('signin-error').hidden = !message;
  $('signin-error').textContent = message || '';
  $('token').focus();
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.selected = null;
  showSignIn(message);
}

async function signIn(candidate) {
  token = candidate.trim();
  try {
    const list = await api('/api/coordinator/cases');
    sessionStorage.setItem(TOKEN_KEY, token);
    const c = claims(token);
    $('who-name').textContent = `${c.sub || '?'} · ${c.role || 'coordinator'}`;
    $('who').hidden = false;
    $('signin-view').hidden = true;
    $('console-view').hidden = false;
    state.cases = list.cases;
    renderCases();
    const wanted = decodeURIComponent(location.hash.replace(/^#case=/, ''));
    if (wanted && state.cases.some((k) => k.id === wanted)) openCase(wanted);
  } catch (e) {
    if (e.status === 401) return;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(
      e.status === 404
        ? 'This token is not a coordinator’s or an administrator’s.'
        : `Could not sign in: ${e.message}`,
    );
  }
}

// ------------------------------------------------------------ case list

const state = {
  cases: [],
  selected: null,
  /** The current case document (GET /api/cases/{id}). */
  current: null,
  /** Loaded changes, oldest first. */
  changes: [],
  olderBefore: null,
  total: 0,
  point: -1,
  pointRequest: 0,
};

function filteredCases() {
  const status = $('filter-status').value;
  const recent = Number($('filter-recent').value);
  const conflicts = $('filter-conflicts').checked;
  const quarantine = $('filter-quarantine').checked;
  const since = recent ? Date.now() - recent * 86_400_000 : null;
  return state.cases.filter((c) => {
    if (status === 'none' && c.official_status) return false;
    if (status && status !== 'none' && c.official_status !== status) return false;
    if (since && !(c.last_change_ms >= since)) return false;
    if (conflicts && !(c.conflicts > 0)) return false;
    if (quarantine && !(c.quarantined > 0)) return false;
    return true;
  });
}

function renderCases() {
  const list = clear($('case-list'));
  const shown = filteredCases();
  $('cases-status').textContent = state.cases.length
    ? `${shown.length} of ${state.cases.length} cases`
    : 'No cases are assigned to you yet.';
  for (const c of shown) {
    const badges = [];
    if (c.conflicts > 0) badges.push(h('span', { class: 'badge warn' }, `${c.conflicts} conflict${c.conflicts === 1 ? '' : 's'}`));
    if (c.quarantined > 0) badges.push(h('span', { class: 'badge warn' }, `${c.quarantined} quarantined`));
    list.append(
      h(
        'li',
        {},
        h(
          'button',
          {
            type: 'button',
            'data-case': c.id,
            'aria-current': state.selected === c.id ? 'true' : 'false',
            onclick: () => openCase(c.id),
          },
          h('span', { class: 'title' }, c.title || 'Unnamed case'),
          h('span', { class: 'meta' }, statusLabel(c.official_status), ' · changed ', fmtTime(c.last_change_ms)),
          badges.length ? h('span', { class: 'meta' }, ...badges.flatMap((b) => [b, ' '])) : null,
        ),
      ),
    );
  }
}

async function refreshCases() {
  try {
    state.cases = (await api('/api/coordinator/cases')).cases;
    renderCases();
    const c = state.cases.find((k) => k.id === state.selected);
    if (c) renderCaseHead(c);
  } catch (e) {
    $('cases-status').textContent = `Could not load the cases: ${e.message}`;
  }
}

// ------------------------------------------------------------ one case

function caseError(message) {
  $('case-error').hidden = !message;
  $('case-error').textContent = message || '';
}

function renderCaseHead(summary) {
  $('case-title').textContent = summary.title || 'Unnamed case';
  $('case-status').textContent = statusLabel(summary.official_status);
  $('case-id').textContent = summary.id;
  $('conflict-count').hidden = !(summary.conflicts > 0);
  $('conflict-count').textContent = summary.conflicts;
  $('quarantine-count').hidden = !(summary.quarantined > 0);
  $('quarantine-count').textContent = summary.quarantined;
}

async function openCase(id) {
  state.selected = id;
  state.changes = [];
  state.point = -1;
  location.hash = 'case=' + encodeURIComponent(id);
  renderCases();
  $('case-empty').hidden = true;
  $('case-body').hidden = false;
  caseError('');
  const summary = state.cases.find((c) => c.id === id);
  if (summary) renderCaseHead(summary);
  clear($('changes'));
  clear($('point-state'));
  clear($('diff-lines'));
  $('diff-caption').textContent = '';
  $('diff-patches-box').hidden = true;
  try {
    state.current = await api(casePath(id));
    await loadChanges(true);
  } catch (e) {
    caseError(`Could not open the case: ${e.message}`);
  }
  const tab = document.querySelector('.tabs [aria-selected="true"]')?.dataset.tab || 'timeline';
  showTab(tab);
}

function showTab(name) {
  for (const b of document.querySelectorAll('.tabs [role="tab"]')) {
    b.setAttribute('aria-selected', b.dataset.tab === name ? 'true' : 'false');
  }
  for (const p of document.querySelectorAll('[data-panel]')) p.hidden = p.dataset.panel !== name;
  if (!state.selected) return;
  if (name === 'conflicts') loadConflicts();
  if (name === 'status') loadOfficial();
  if (name === 'quarantine') loadQuarantine();
  if (name === 'compare') fillCompare();
}

// --------------------------------------------------------------- timeline

async function loadChanges(fresh) {
  const before = fresh ? '' : `&before=${state.olderBefore}`;
  const page = await api(casePath(state.selected, `/history?order=desc&limit=${PAGE}${before}`));
  const older = page.changes.slice().reverse();
  state.changes = fresh ? older : older.concat(state.changes);
  state.olderBefore = page.next ? page.next.before : null;
  state.total = page.total;
  if (fresh || state.point < 0) state.point = state.changes.length - 1;
  else state.point += older.length;
  renderChanges();
  if (fresh) await showPoint(state.point);
}

function renderChanges() {
  const list = clear($('changes'));
  $('history-total').textContent = `(${state.total})`;
  $('older').hidden = !state.olderBefore;
  for (let i = state.changes.length - 1; i >= 0; i--) {
    const c = state.changes[i];
    const offline = typeof c.offline_ms === 'number' && c.offline_ms > 5 * 60_000;
    list.append(
      h(
        'li',
        {},
        h(
          'button',
          {
            type: 'button',
            'data-hash': c.hash,
            'data-index': i,
            'aria-current': i === state.point ? 'true' : 'false',
            onclick: () => showPoint(i),
          },
          h(
            'span',
            { class: 'line1' },
            h('span', {}, h('span', { class: 'author' }, c.user), ` · ${c.device}`),
            h('span', {}, `#${c.log_seq} · ${fmtTime(c.received_at_ms)}`),
          ),
          h('span', { class: 'msg' }, c.message || 'change', c.doc === 'coordination' ? ' (coordination)' : ''),
          offline ? h('span', { class: 'touched offline' }, `delivered after ${fmtDuration(c.offline_ms)} offline (written ${fmtTime(c.committed_at_ms)})`) : null,
          touched(c.summary) ? h('span', { class: 'touched' }, touched(c.summary)) : null,
        ),
      ),
    );
  }
  const slider = $('slider');
  slider.max = Math.max(0, state.changes.length - 1);
  slider.value = Math.max(0, state.point);
}

async function showPoint(index) {
  const c = state.changes[index];
  if (!c) return;
  state.point = index;
  $('slider').value = index;
  for (const b of document.querySelectorAll('#changes button')) {
    b.setAttribute('aria-current', Number(b.dataset.index) === index ? 'true' : 'false');
  }
  const author = $('author-view').checked;
  const request = ++state.pointRequest;
  $('point-caption').textContent = `Loading change #${c.log_seq}…`;
  try {
    const at = await api(casePath(state.selected, `/at/${c.hash}${author ? '?view=author' : ''}`));
    if (request !== state.pointRequest) return;
    $('point-caption').textContent =
      (author
        ? `As ${c.user}'s ${c.device} saw the ${at.doc} when writing change #${c.log_seq}`
        : `The ${at.doc} as the server held it after change #${c.log_seq} arrived`) +
      ` (${c.message || 'change'}, by ${c.user} · ${c.device}, ${fmtTime(c.received_at_ms)}).`;
    renderDoc($('point-state'), at.state, at.conflicts, at.doc, c.hash);
  } catch (e) {
    if (request === state.pointRequest) $('point-caption').textContent = `Could not load this point: ${e.message}`;
  }
}

// ------------------------------------------------------- rendering a case

const CASE_SECTIONS = [
  'person', 'military', 'disappearance', 'status_claims', 'sources', 'requests', 'external_refs',
  'dna', 'remains', 'burial', 'timeline', 'attachments', 'links',
];
const COORDINATION_SECTIONS = ['official_status', 'closure', 'source_verification', 'duplicates'];
const COLLECTIONS = new Set([
  'status_claims', 'sources', 'requests', 'external_refs', 'dna', 'remains', 'timeline',
  'attachments', 'links', 'name_variants', 'distinguishing_marks', 'medical_devices',
  'personal_effects', 'replies', 'source_verification', 'duplicates',
]);
const ID_SETS = new Set(['source_ids', 'basis']);
const NARRATIVES = new Set([
  'circumstances', 'last_contact_details', 'description', 'notes', 'note', 'summary', 'statement',
  'provenance',
]);
const BOOKKEEPING = new Set(['created_at', 'created_by', 'deleted_at', 'deleted_by']);
/** Fields in the order the case reads (the server's JSON is alphabetical). */
const FIELD_ORDER = [
  // person
  'given_name', 'patronymic', 'family_name', 'sex', 'date_of_birth', 'place_of_birth', 'citizenship',
  'blood_type', 'height_cm', 'description', 'name_variants', 'distinguishing_marks', 'medical_devices',
  'personal_effects',
  // military
  'branch', 'unit', 'rank', 'position', 'service_number', 'call_sign', 'enlistment_type',
  // disappearance, burial
  'date', 'place', 'last_contact_on', 'last_contact_with', 'last_contact_channel',
  'last_contact_details', 'circumstances', 'cemetery', 'grave', 'buried_on',
  // official status, closure
  'status', 'set_by', 'set_at', 'basis', 'state', 'closed_on', 'reason',
  // items
  'name', 'kind', 'title', 'claimed_by', 'as_of', 'statement', 'authority', 'channel', 'subject',
  'sent_on', 'reference_number', 'received_on', 'from', 'outcome', 'system', 'reference',
  'obtained_on', 'obtained_by', 'reliability', 'provenance', 'summary', 'note', 'notes',
  'source_ids', 'replies',
];

function ordered(obj) {
  const rank = (k) => {
    const i = FIELD_ORDER.indexOf(k);
    return i < 0 ? FIELD_ORDER.length : i;
  };
  return Object.entries(obj || {}).sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
}

function renderDoc(target, doc, conflicts, kind, atHash) {
  clear(target);
  const conflicted = new Map((conflicts || []).map((c) => [c.path, c]));
  const sections = kind === 'coordination' ? COORDINATION_SECTIONS : CASE_SECTIONS;
  for (const key of sections) {
    const value = doc?.[key];
    target.append(h('h3', {}, label(key)));
    if (COLLECTIONS.has(key)) target.append(renderItems(value, key, conflicted, atHash));
    else target.append(renderFields(value, key, conflicted, atHash));
  }
}

function renderFields(obj, path, conflicted, atHash) {
  const dl = h('dl', {});
  let any = false;
  for (const [key, value] of ordered(obj)) {
    if (BOOKKEEPING.has(key)) continue;
    const full = `${path}.${key}`;
    if (COLLECTIONS.has(key)) {
      // Nested collections (name variants, replies) only when they hold items.
      if (!Object.keys(value || {}).length) continue;
      dl.append(h('dt', {}, label(key)), h('dd', {}, renderItems(value, full, conflicted, atHash)));
      any = true;
      continue;
    }
    let text;
    if (ID_SETS.has(key)) text = Object.keys(value || {}).join(', ');
    else if (value === null || value === undefined) text = '';
    else if (typeof value === 'object') text = JSON.stringify(value);
    else text = String(value);
    const conflict = conflicted.get(full);
    if (!text && !conflict) continue;
    any = true;
    const dd = h('dd', { 'data-path': full, class: conflict ? 'conflicted' : null }, text);
    if (conflict) {
      const others = conflict.values.map((v) => `“${v.value}” (${v.author?.user || '?'})`).join(' or ');
      dd.append(h('div', { class: 'muted' }, `Conflict: ${others}`));
    }
    if (NARRATIVES.has(key) && text) {
      dd.append(
        h('button', { type: 'button', class: 'quiet blame-button', onclick: () => showBlame(dd, full, atHash) }, 'Who wrote this'),
      );
    }
    dl.append(h('dt', {}, label(key)), dd);
  }
  return any ? dl : h('p', { class: 'none' }, 'Nothing recorded.');
}

function renderItems(coll, path, conflicted, atHash) {
  const entries = Object.entries(coll || {});
  if (!entries.length) return h('p', { class: 'none' }, 'None recorded.');
  const box = h('div', {});
  for (const [id, item] of entries) {
    const deleted = item && item.deleted_at;
    box.append(
      h(
        'div',
        { class: deleted ? 'item deleted' : 'item', 'data-item': `${path}.${id}` },
        h('div', { class: 'item-id' }, id, item?.created_by ? ` · added by ${item.created_by}` : '', deleted ? ' · deleted' : ''),
        renderFields(item, `${path}.${id}`, conflicted, atHash),
      ),
    );
  }
  return box;
}

async function showBlame(dd, path, atHash) {
  const view = $('author-view').checked ? '&view=author' : '';
  const at = atHash ? `&at=${atHash}${view}` : '';
  try {
    const blame = await api(casePath(state.selected, `/blame?path=${encodeURIComponent(path)}${at}`));
    const authors = [];
    const text = h('div', { class: 'blame' });
    for (const s of blame.spans) {
      const author = blame.authors[s.change] || {};
      const who = author.user ? `${author.user} · ${author.device}` : 'unknown';
      if (!authors.includes(who)) authors.push(who);
      text.append(
        h(
          'span',
          {
            'data-author': who,
            'data-author-index': authors.indexOf(who) % 4,
            title: `${who}, ${fmtTime(author.committed_at_ms ?? author.received_at_ms)}`,
          },
          s.text,
        ),
      );
    }
    dd.querySelector('.blame')?.remove();
    dd.querySelector('.blame-legend')?.remove();
    dd.append(text, h('div', { class: 'blame-legend' }, 'Written by: ', authors.join(', ')));
  } catch (e) {
    caseError(`Could not load who wrote this: ${e.message}`);
  }
}

// ---------------------------------------------------------------- compare

function fillCompare(fromIndex, toIndex) {
  const from = $('diff-from');
  const to = $('diff-to');
  const keepFrom = fromIndex ?? (from.value ? state.changes.findIndex((c) => c.hash === from.value) : Math.max(0, state.point - 1));
  const keepTo = toIndex ?? (to.value ? state.changes.findIndex((c) => c.hash === to.value) : state.point);
  clear(from);
  clear(to);
  from.append(h('option', { value: '' }, 'The beginning'));
  state.changes.forEach((c, i) => {
    from.append(h('option', { value: c.hash, selected: i === keepFrom }, changeLabel(c)));
    to.append(h('option', { value: c.hash, selected: i === keepTo }, changeLabel(c)));
  });
}

async function runDiff() {
  const from = $('diff-from').value;
  const to = $('diff-to').value;
  const lines = clear($('diff-lines'));
  $('diff-patches-box').hidden = true;
  const params = new URLSearchParams();
  if (from) params.set('from', from);
  if (to) params.set('to', to);
  if ($('author-view').checked) params.set('view', 'author');
  $('diff-caption').textContent = 'Comparing…';
  try {
    const diff = await api(casePath(state.selected, `/diff?${params}`));
    const name = (hash) => {
      const c = state.changes.find((k) => k.hash === hash);
      return c ? `change #${c.log_seq} (${c.message})` : 'the beginning';
    };
    $('diff-caption').textContent = `In the ${diff.doc}, from ${name(diff.from.hash)} to ${name(diff.to.hash)}:`;
    if (!diff.lines.length) lines.append(h('li', { class: 'none' }, 'No differences.'));
    for (const line of diff.entries) lines.append(h('li', { 'data-path': line.path }, line.text));
    $('diff-patches').textContent = JSON.stringify(diff.patches, null, 2);
    $('diff-patches-box').hidden = false;
  } catch (e) {
    $('diff-caption').textContent = `Could not compare: ${e.message}`;
  }
}

// -------------------------------------------------------------- conflicts

async function loadConflicts() {
  const box = clear($('conflicts'));
  try {
    const { conflicts } = await api(casePath(state.selected, '/conflicts'));
    $('conflict-count').hidden = !conflicts.length;
    $('conflict-count').textContent = conflicts.length;
    if (!conflicts.length) {
      box.append(h('p', { class: 'none', id: 'no-conflicts' }, 'No conflicts: everyone agrees on every value.'));
      return;
    }
    for (const c of conflicts) {
      box.append(
        h(
          'div',
          { class: 'conflict', 'data-conflict': c.path },
          h('h3', {}, c.path, c.doc === 'coordination' ? ' (coordination)' : ''),
          h(
            'ul',
            {},
            c.values.map((v) =>
              h(
                'li',
                {},
                h(
                  'div',
                  {},
                  h('div', { class: 'value' }, v.value === null ? '(cleared)' : typeof v.value === 'object' ? JSON.stringify(v.value) : String(v.value)),
                  h(
                    'div',
                    { class: 'by' },
                    `${v.author?.user || 'unknown'} · ${v.author?.device || '?'} · written ${fmtTime(v.author?.committed_at_ms)}, received ${fmtTime(v.author?.received_at_ms)}`,
                  ),
                ),
                h('button', { type: 'button', onclick: () => resolve(c, v) }, 'Choose this value'),
              ),
            ),
          ),
        ),
      );
    }
  } catch (e) {
    caseError(`Could not load the conflicts: ${e.message}`);
  }
}

async function resolve(conflict, value) {
  try {
    const done = await api(casePath(state.selected, '/conflicts/resolve'), {
      method: 'POST',
      body: { doc: conflict.doc, path: conflict.path, op: value.op },
    });
    await loadConflicts();
    $('conflicts').prepend(
      h('p', { class: 'result', id: 'resolved' }, `Resolved ${conflict.path}: “${value.value}” was chosen. Recorded as change ${shortHash(done.hash)} under your name.`),
    );
    await Promise.all([refreshCases(), loadChanges(true)]);
  } catch (e) {
    caseError(`Could not resolve: ${e.message}`);
  }
}

// -------------------------------------------------------- official status

async function loadOfficial() {
  const current = clear($('official-current'));
  const basisBox = clear($('official-basis'));
  try {
    const [latest, now] = await Promise.all([
      api(casePath(state.selected, '/history?doc=coordination&order=desc&limit=1')),
      api(casePath(state.selected)),
    ]);
    state.current = now;
    let official = {};
    if (latest.changes.length) {
      const at = await api(casePath(state.selected, `/at/${latest.changes[0].hash}`));
      official = at.state?.official_status || {};
    }
    const sources = Object.entries(now.case?.sources || {}).filter(([, s]) => !s.deleted_at);
    const title = (id) => now.case?.sources?.[id]?.title || id;
    if (official.status) {
      current.append(
        h('div', { class: 'status' }, statusLabel(official.status)),
        h('div', { class: 'muted' }, `Set by ${official.set_by || '?'} on ${fmtTime(official.set_at)}`),
        Object.keys(official.basis || {}).length
          ? h('div', {}, 'Basis: ', Object.keys(official.basis).map(title).join('; '))
          : h('div', { class: 'muted' }, 'No basis given.'),
        official.note ? h('p', {}, official.note) : null,
      );
      $('official-status').value = official.status;
    } else {
      current.append(h('p', { class: 'none' }, 'No official status has been set.'));
    }
    $('official-note').value = official.note || '';
    if (!sources.length) basisBox.append(h('p', { class: 'none' }, 'The case has no sources yet.'));
    for (const [id, s] of sources) {
      basisBox.append(
        h(
          'label',
          { class: 'check' },
          h('input', { type: 'checkbox', value: id, checked: Boolean(official.basis && id in official.basis) }),
          s.title || id,
          s.kind ? h('span', { class: 'muted' }, ` (${s.kind})`) : null,
        ),
      );
    }
  } catch (e) {
    caseError(`Could not load the official status: ${e.message}`);
  }
}

async function setOfficial(event) {
  event.preventDefault();
  const basis = [...document.querySelectorAll('#official-basis input:checked')].map((i) => i.value);
  try {
    await api(casePath(state.selected, '/official-status'), {
      method: 'POST',
      body: { status: $('official-status').value, basis, note: $('official-note').value },
    });
    $('official-result').textContent = `Official status set to ${statusLabel($('official-status').value)}.`;
    await Promise.all([loadOfficial(), refreshCases(), loadChanges(true)]);
  } catch (e) {
    $('official-result').textContent = '';
    caseError(`Could not set the official status: ${e.message}`);
  }
}

// -------------------------------------------------------------- quarantine

async function loadQuarantine() {
  const box = clear($('quarantine'));
  try {
    const { quarantine } = await api(casePath(state.selected, '/quarantine'));
    $('quarantine-count').hidden = !quarantine.length;
    $('quarantine-count').textContent = quarantine.length;
    $('q-accept').disabled = $('q-discard').disabled = !quarantine.length;
    if (!quarantine.length) {
      box.append(h('p', { class: 'none' }, 'Nothing is waiting.'));
      return;
    }
    box.append(
      h(
        'table',
        { class: 'quarantine-table' },
        h('tr', {}, h('th', {}, ''), h('th', {}, 'From'), h('th', {}, 'Received'), h('th', {}, 'Why held'), h('th', {}, 'Size')),
        quarantine.map((q) =>
          h(
            'tr',
            {},
            h('td', {}, h('input', { type: 'checkbox', value: q.id, 'aria-label': `Change ${q.id}` })),
            h('td', {}, `${q.user} · ${q.device}`),
            h('td', {}, fmtTime(q.received_at_ms)),
            h('td', {}, q.reason),
            h('td', {}, `${q.bytes} bytes`),
          ),
        ),
      ),
    );
  } catch (e) {
    caseError(`Could not load the quarantine: ${e.message}`);
  }
}

async function decide(accept) {
  const ids = [...document.querySelectorAll('#quarantine input:checked')].map((i) => Number(i.value));
  if (!ids.length) {
    $('q-result').textContent = 'Select the changes first.';
    return;
  }
  try {
    const done = await api(casePath(state.selected, `/quarantine/${accept ? 'accept' : 'discard'}`), {
      method: 'POST',
      body: { ids },
    });
    $('q-result').textContent = accept
      ? `Accepted ${done.decided.length} change(s) into the case.`
      : `Discarded ${done.decided.length} change(s).`;
    await Promise.all([loadQuarantine(), refreshCases(), loadChanges(true)]);
  } catch (e) {
    caseError(`Could not decide: ${e.message}`);
  }
}

// ------------------------------------------------------------------ export

async function exportCase(format) {
  $('export-result').textContent = 'Preparing the export…';
  try {
    const res = await api(casePath(state.selected, `/export?format=${format}`), { raw: true });
    const disposition = res.headers.get('content-disposition') || '';
    const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || `case.${format}`;
    const blob = await res.blob();
    let detail = '';
    if (format === 'json') {
      const data = JSON.parse(await blob.text());
      detail = ` ${data.changes.length} changes by ${data.contributors.length} people and devices.`;
    }
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    $('export-result').textContent = `Exported ${name}.${detail}`;
  } catch (e) {
    $('export-result').textContent = '';
    caseError(`Could not export: ${e.message}`);
  }
}

// ------------------------------------------------------------------ wiring

let sliderTimer = null;

function wire() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token').value);
  });
  $('sign-out').addEventListener('click', () => signOut());
  for (const id of ['filter-status', 'filter-recent', 'filter-conflicts', 'filter-quarantine']) {
    $(id).addEventListener('change', renderCases);
  }
  $('refresh-cases').addEventListener('click', refreshCases);
  for (const b of document.querySelectorAll('.tabs [role="tab"]')) {
    b.addEventListener('click', () => showTab(b.dataset.tab));
  }
  $('older').addEventListener('click', () => loadChanges(false).catch((e) => caseError(e.message)));
  $('slider').addEventListener('input', () => {
    clearTimeout(sliderTimer);
    const index = Number($('slider').value);
    sliderTimer = setTimeout(() => showPoint(index), 120);
  });
  $('author-view').addEventListener('change', () => showPoint(state.point));
  $('compare-from').addEventListener('click', () => {
    fillCompare(state.point, state.changes.length - 1);
    showTab('compare');
  });
  $('compare-to').addEventListener('click', () => {
    fillCompare(undefined, state.point);
    showTab('compare');
  });
  $('diff-run').addEventListener('click', runDiff);
  $('official-form').addEventListener('submit', setOfficial);
  $('q-accept').addEventListener('click', () => decide(true));
  $('q-discard').addEventListener('click', () => decide(false));
  $('export-json').addEventListener('click', () => exportCase('json'));
  $('export-html').addEventListener('click', () => exportCase('html'));
}

wire();
if (token) signIn(token);
else showSignIn();
