// The field app: sign-in, my cases, the case editor, invitations and this
// device. Served by casesync at /app/; every URL here is relative, and the
// only origin it talks to is the server's own (`location.origin`).

import { Session, schema as loadSchema, forgetDevice, ApiError, AuthError, OfflineError } from './js/casesync.js';
import { h, clear } from './dom.js';
import { t, tn, loadLanguage } from './i18n.js';
import { CaseEditor } from './editor.js';

const main = document.getElementById('main');
const header = document.getElementById('header');
const nav = document.getElementById('nav');

let session = null;
let schema = null;
let screen = null; // { destroy() }
let forgotten = false;
let unsubscribeStatus = null;

// ------------------------------------------------------------------- boot

async function boot() {
  await loadLanguage();
  document.title = t('app.title');
  registerServiceWorker();
  await oneTabAtATime();
  try {
    schema = await loadSchema();
    session = await Session.resume({ onAuthRequired: () => renderHeader() });
  } catch (e) {
    showFatal(e);
    return;
  }
  if (session) attachSession();
  window.addEventListener('hashchange', route);
  route();
}

function showFatal(e) {
  clear(main).append(h('div', { class: 'panel' }, h('h1', null, t('error.engine_title')), h('p', null, t('error.engine'))));
  // No contents in the console: only the error's kind.
  console.error('casesync: start failed', e && e.name);
}

function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || forgotten) return;
  navigator.serviceWorker.register('./sw.js', { scope: './' }).catch(() => {
    // The app still works online without it.
  });
}

// Two tabs on one device would write with the same automerge actor at the
// same time, which automerge cannot tell apart. One tab holds the device.
function oneTabAtATime() {
  if (!navigator.locks) return Promise.resolve();
  return new Promise((resolve) => {
    navigator.locks.request('casesync-device', { ifAvailable: true }, (lock) => {
      if (lock) {
        resolve();
        return new Promise(() => {});
      }
      clear(main).append(h('div', { class: 'panel' }, h('p', null, t('app.other_tab'))));
      navigator.locks.request('casesync-device', () => {
        resolve();
        return new Promise(() => {});
      });
      return undefined;
    });
  });
}

function attachSession() {
  unsubscribeStatus?.();
  unsubscribeStatus = session.onStatus(() => renderHeader());
  session.onEvent((ev) => {
    if (ev.type === 'unavailable' && screen && screen.url === ev.document) screen.unavailable?.();
    if (ev.type === 'storage-error') renderHeader(t('error.storage'));
    if (ev.type === 'fatal') {
      // The engine stopped; everything up to the last change is in
      // IndexedDB. Starting again reloads it.
      screen?.destroy?.();
      screen = {};
      clear(main).append(
        h('div', { class: 'panel' }, h('h1', null, t('error.engine_title')), h('p', null, t('error.crashed')), h('button', { type: 'button', class: 'primary', onclick: () => location.reload() }, t('error.restart'))),
      );
    }
  });
}

// ----------------------------------------------------------------- header

function syncText(s) {
  if (s.authRequired) return t('sync.auth');
  if (s.state === 'offline') return s.unacknowledged > 0 ? tn('sync.offline_pending', s.unacknowledged) : t('sync.offline');
  // On a network that breaks WebSockets the app syncs over plain HTTP:
  // it works the same, only slower, and says so.
  // (Kept on one line when the pill wraps on a narrow screen.)
  const via = s.transport === 'http' ? ` · ${t('sync.via_http').replace(/ /g, '\u00a0')}` : '';
  if (s.state === 'syncing') return t('sync.syncing') + via;
  return t('sync.saved') + via;
}

function renderHeader(problem) {
  clear(header);
  // Signed in, the bottom bar leads home and the top bar is all sync
  // status: one short row on a 360 px screen.
  if (!session) header.append(h('a', { class: 'brand', href: '#/' }, t('app.name')));
  if (session) {
    const s = session.status();
    header.append(
      h(
        'p',
        { id: 'sync', class: 'sync', role: 'status', 'aria-live': 'polite', dataset: { state: s.authRequired ? 'auth' : s.state, pending: String(s.unacknowledged), transport: s.transport || 'none' } },
        h('span', { class: 'dot', 'aria-hidden': 'true' }),
        syncText(s),
      ),
    );
    if (s.authRequired) {
      header.append(
        h('div', { class: 'banner' }, h('p', null, t('banner.auth')), h('a', { class: 'button small', href: '#/signin' }, t('banner.auth_action'))),
      );
    }
  }
  if (problem) header.append(h('p', { class: 'banner error' }, problem));
  clear(nav);
  if (session) {
    const here = location.hash || '#/';
    const link = (href, key) => h('a', { href, class: here === href || (href === '#/' && here.startsWith('#/case/')) ? 'current' : '' }, t(key));
    nav.append(link('#/', 'nav.cases'), link('#/invite', 'nav.invite'), link('#/device', 'nav.device'));
  }
  nav.hidden = !session;
}

// ----------------------------------------------------------------- router

function route() {
  screen?.destroy?.();
  screen = null;
  const hash = location.hash || '#/';
  window.scrollTo(0, 0);
  if (!session || hash === '#/signin') {
    showSignIn();
  } else if (hash.startsWith('#/case/')) {
    showCase(decodeHash(hash.slice('#/case/'.length)));
  } else if (/^#invite[=/]/.test(hash)) {
    // A shared invitation link: …/app/#invite=CODE
    showInvite(decodeHash(hash.slice('#invite'.length + 1)));
  } else if (hash.startsWith('#/invite')) {
    showInvite(decodeHash(hash.slice('#/invite'.length).replace(/^\//, '')));
  } else if (hash === '#/device') {
    showDevice();
  } else {
    showCases();
  }
  renderHeader();
}

function decodeHash(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function errorText(e, key) {
  if (e instanceof OfflineError) return t(`${key}_offline`);
  if (e instanceof AuthError) return t('sync.auth');
  if (e instanceof ApiError) return t(key, { message: e.message || t('error.status', { status: e.status }) });
  return t(key, { message: String(e && e.message ? e.message : e) });
}

// ---------------------------------------------------------------- sign-in

function showSignIn() {
  const renewing = !!session;
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const token = h('textarea', { id: 'token', rows: 5, autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false' });
  const submit = h('button', { type: 'submit', class: 'primary' }, t('signin.submit'));
  const form = h(
    'form',
    { class: 'panel signin' },
    h('h1', null, t('signin.title')),
    forgotten ? h('p', { class: 'notice' }, t('device.forgotten')) : null,
    h('p', null, renewing ? t('signin.renew_intro') : t('signin.intro')),
    h('label', { for: 'token' }, t('signin.token_label')),
    token,
    error,
    submit,
    h('p', { class: 'hint' }, t('signin.dev_hint_before'), h('code', null, 'casesync token --user NAME'), t('signin.dev_hint_after')),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const value = token.value.trim();
    if (!value) return;
    submit.disabled = true;
    try {
      if (renewing) {
        try {
          await session.renewToken(value);
        } catch (err) {
          if (String(err && err.message) !== 'another-device') throw err;
          // Same person, another device name: a new session (and actor).
          await session.close();
          session = await Session.signIn(value, { onAuthRequired: () => renderHeader() });
          attachSession();
        }
      } else {
        session = await Session.signIn(value, { onAuthRequired: () => renderHeader() });
        forgotten = false;
        registerServiceWorker();
        attachSession();
      }
      go('#/');
    } catch (err) {
      const m = String(err && err.message);
      error.textContent = m === 'another-user' ? t('signin.error_other_user') : /token/.test(m) ? t('signin.error_malformed') : t('signin.error', { message: m });
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  clear(main).append(form);
}

// ------------------------------------------------------------------ cases

function caseSummary(url) {
  try {
    const v = session.read(url);
    const p = (v.case && v.case.person) || {};
    const m = (v.case && v.case.military) || {};
    const name = [p.given_name, p.patronymic, p.family_name].filter((x) => typeof x === 'string' && x).join(' ');
    return { loaded: v.loaded, name, unit: typeof m.unit === 'string' ? m.unit : '', pending: v.unacknowledged, conflicts: v.conflicts.length };
  } catch {
    return { loaded: false, name: '', unit: '', pending: 0, conflicts: 0 };
  }
}

function showCases() {
  const list = h('ul', { class: 'case-list' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const create = h('button', { type: 'button', class: 'primary' }, t('cases.create'));
  const panel = h('div', { class: 'panel' }, h('h1', null, t('cases.title')), error, list, create);
  const subs = new Map();

  const render = () => {
    clear(list);
    const urls = session.documents();
    if (urls.length === 0) list.append(h('li', { class: 'empty' }, t('cases.empty')));
    const rows = urls.map((url) => ({ url, ...caseSummary(url) })).sort((a, b) => a.name.localeCompare(b.name) || a.url.localeCompare(b.url));
    for (const r of rows) {
      const lines = [h('span', { class: 'case-name' }, r.name || (r.loaded ? t('cases.unnamed') : t('cases.not_arrived')))];
      if (r.unit) lines.push(h('span', { class: 'case-unit' }, r.unit));
      if (r.pending > 0) lines.push(h('span', { class: 'case-pending' }, tn('cases.pending', r.pending)));
      if (r.conflicts > 0) lines.push(h('span', { class: 'case-conflicts' }, tn('cases.conflicts', r.conflicts)));
      list.append(h('li', null, h('a', { class: 'case-link', href: '#/case/' + encodeURIComponent(r.url), dataset: { url: r.url } }, lines)));
    }
    for (const url of urls) {
      if (subs.has(url)) continue;
      let first = true;
      subs.set(
        url,
        session.subscribe(url, () => {
          if (first) first = false;
          else schedule();
        }),
      );
    }
  };
  let queued = false;
  const schedule = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      if (screen === self) render();
    });
  };

  create.addEventListener('click', async () => {
    error.hidden = true;
    create.disabled = true;
    try {
      const url = await session.createCase();
      go('#/case/' + encodeURIComponent(url));
    } catch (e) {
      error.textContent = errorText(e, 'cases.error_create');
      error.hidden = false;
    } finally {
      create.disabled = false;
    }
  });

  const refresh = () =>
    session
      .listCases()
      .then(() => {
        if (screen !== self) return;
        error.hidden = true;
        render();
      })
      .catch((e) => {
        if (screen === self && !(e instanceof AuthError)) {
          error.textContent = errorText(e, 'cases.error_list');
          error.hidden = false;
        }
      });
  // Cases created or shared elsewhere appear whenever the phone connects.
  const offEvent = session.onEvent((ev) => {
    if (ev.type === 'connected') refresh();
  });
  const self = {
    destroy() {
      offEvent();
      for (const u of subs.values()) u();
    },
  };
  screen = self;
  clear(main).append(panel);
  render();
  refresh();
}

function showCase(url) {
  const back = h('a', { class: 'back', href: '#/' }, t('case.back'));
  let editor;
  let unsubscribe = () => {};
  const self = {
    url,
    destroy() {
      unsubscribe();
      editor?.destroy();
    },
    unavailable() {
      editor?.showNotice(t('case.unavailable'));
      if (editor) editor.notice.dataset.sticky = '1';
    },
  };
  screen = self;
  const wrap = h('div', { class: 'panel case' }, back);
  clear(main).append(wrap);
  const problem = session.unreadable().get(url);
  if (problem) {
    wrap.append(h('p', { class: 'error' }, t('case.unreadable')));
    return;
  }
  session.open(url).then(() => {
    if (screen !== self) return;
    if (!session.isOpen(url)) return;
    editor = new CaseEditor({ session, url, schema, onTitle: (title) => (document.title = `${title} · ${t('app.name')}`) });
    wrap.append(editor.el);
    // Updated synchronously: a frame from the server and the screen it
    // changes are handled in one task, so typing can never land between
    // them (see CaseEditor.flushTyping).
    unsubscribe = session.subscribe(url, (view) => {
      if (screen === self) editor.update(view);
    });
  }, () => {
    // Not a case id this app can read (a mistyped link).
    if (screen === self) wrap.append(h('p', { class: 'error' }, t('case.unavailable')));
  });
}

// ------------------------------------------------------------- invitation

function showInvite(prefill) {
  const input = h('input', { id: 'invite-code', type: 'text', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false', value: prefill || '' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const done = h('p', { class: 'notice', role: 'status', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, t('invite.submit'));
  const form = h(
    'form',
    { class: 'panel' },
    h('h1', null, t('invite.title')),
    h('p', null, t('invite.intro')),
    h('label', { for: 'invite-code' }, t('invite.label')),
    input,
    error,
    done,
    submit,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    done.hidden = true;
    submit.disabled = true;
    try {
      const url = await session.acceptInvitation(input.value);
      done.textContent = t('invite.done');
      done.hidden = false;
      if (url) go('#/case/' + encodeURIComponent(url));
    } catch (err) {
      const known = ['bad_code', 'not_found', 'invitation_expired', 'invitation_revoked', 'invitation_used'];
      error.textContent =
        err instanceof ApiError && known.includes(err.code) ? t(`invite.error_${err.code.replace('invitation_', '')}`) : errorText(err, 'invite.error');
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  clear(main).append(form);
  screen = {};
}

// ----------------------------------------------------------------- device

function showDevice() {
  const s = session.status();
  const confirmBox = h('div', { class: 'confirm', hidden: true });
  const forget = h('button', { type: 'button', class: 'danger' }, t('device.forget'));
  forget.addEventListener('click', () => {
    const pending = session.status().unacknowledged;
    clear(confirmBox).append(
      h('p', null, t('device.forget_explain')),
      pending > 0 ? h('p', { class: 'error' }, tn('device.forget_pending', pending)) : null,
      h(
        'div',
        { class: 'row' },
        h('button', { type: 'button', class: 'danger', id: 'forget-confirm', onclick: doForget }, t('device.forget_confirm')),
        h('button', { type: 'button', class: 'quiet', onclick: () => (confirmBox.hidden = true) }, t('action.cancel')),
      ),
    );
    confirmBox.hidden = false;
  });
  const row = (label, value) => h('div', { class: 'kv' }, h('dt', null, label), h('dd', null, value));
  clear(main).append(
    h(
      'div',
      { class: 'panel' },
      h('h1', null, t('device.title')),
      h('dl', null, row(t('device.user'), session.user), row(t('device.peer'), session.peerId), row(t('device.actor'), session.actor.slice(0, 8))),
      h('p', null, s.unacknowledged > 0 ? tn('sync.offline_pending', s.unacknowledged) : t('device.all_saved')),
      h('h2', null, t('device.forget')),
      h('p', null, t('device.forget_explain')),
      forget,
      confirmBox,
    ),
  );
  screen = {};
}

async function doForget() {
  const s = session;
  session = null;
  forgotten = true;
  unsubscribeStatus?.();
  try {
    await s.forget();
  } catch {
    await forgetDevice();
  }
  go('#/signin');
}

boot();
