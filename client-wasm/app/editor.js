// The case editor: every section of the case document, rendered from the
// engine's schema (sections, collections, field kinds), with translated
// labels. Widgets are built once and updated in place on every change, so
// a remote edit never steals the focus or the cursor from the person
// typing. Conflicting register values are shown where they occur, with who
// wrote each one.

import { h, clear, nextId } from './dom.js';
import { t, tn, formatBytes, formatDate } from './i18n.js';
import { randomId } from './js/casesync.js';
import { reencodeJpeg, sha256Hex, jpegName } from './photo.js';
import { LAYOUT, READ_ONLY, labelId } from './layout.js';

// A pause this long in typing ends one change of a narrative.
const TYPING_PAUSE_MS = 700;

// ------------------------------------------------------------ text diffs

function isHigh(c) {
  return c >= 0xd800 && c <= 0xdbff;
}
function isLow(c) {
  return c >= 0xdc00 && c <= 0xdfff;
}
function codePoints(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** The one splice that turns `a` into `b` (common prefix and suffix), in
 *  UTF-16 units, never splitting a surrogate pair. */
export function diffText(a, b) {
  const max = Math.min(a.length, b.length);
  let p = 0;
  while (p < max && a.charCodeAt(p) === b.charCodeAt(p)) p++;
  if (p > 0 && isHigh(a.charCodeAt(p - 1))) p--;
  let s = 0;
  while (s < max - p && a.charCodeAt(a.length - 1 - s) === b.charCodeAt(b.length - 1 - s)) s++;
  if (s > 0 && isLow(a.charCodeAt(a.length - s))) s--;
  return { pos: p, del: a.length - p - s, ins: b.slice(p, b.length - s) };
}

// ---------------------------------------------------------------- fields

function who(ctx, actor) {
  return actor === ctx.actor ? t('conflict.you') : t('conflict.device', { id: String(actor).slice(0, 8) });
}

function displayValue(ctx, kind, value) {
  if (value === null || value === undefined) return t('conflict.cleared');
  if (kind === 'status' && typeof value === 'string') return t(`status.${value}`);
  if (typeof value === 'object') return '…';
  return String(value);
}

/** The conflict box under a register: every concurrent value, who wrote
 *  it, and a button to keep it (a new write supersedes all of them). */
function conflictBox(ctx, conflict, kind, keep) {
  return h(
    'div',
    { class: 'conflict', role: 'group', 'aria-label': t('conflict.title') },
    h('p', { class: 'conflict-title' }, t('conflict.title')),
    h(
      'ul',
      null,
      conflict.values.map((v) =>
        h(
          'li',
          { class: 'conflict-value', dataset: { actor: v.actor } },
          h('span', { class: 'value' }, displayValue(ctx, kind, v.value)),
          h('span', { class: 'who' }, who(ctx, v.actor)),
          keep && (v.value === null || typeof v.value !== 'object')
            ? h('button', { type: 'button', class: 'small', onclick: () => keep(v.value) }, t('conflict.keep'))
            : null,
        ),
      ),
    ),
  );
}

/**
 * One field: a register (string, date, integer, status), a narrative, or a
 * set of cited sources. `target` builds the edits:
 *   set(value), splice(pos, delete, insert), cite(sourceId, on).
 */
class FieldWidget {
  constructor(ctx, { path, kind, label, target, readOnly }) {
    this.ctx = ctx;
    this.path = path;
    this.kind = kind;
    this.target = target;
    this.readOnly = readOnly;
    this.value = undefined;
    this.localDirty = false;
    this.composing = false;
    const id = nextId();
    this.error = h('p', { class: 'error', role: 'alert', hidden: true });
    this.conflict = h('div', { class: 'conflict-slot' });
    this.el = h('div', { class: `field kind-${kind.replace(/\W/g, '-')}`, dataset: { path } });
    const labelEl = h('label', { for: id }, label);

    if (readOnly) {
      this.input = h('output', { id, class: 'readonly' });
      this.el.append(labelEl, this.input);
      return;
    }
    if (kind === 'narrative') {
      this.input = h('textarea', { id, rows: 4 });
      this.input.addEventListener('input', () => this.scheduleFlush());
      this.input.addEventListener('blur', () => this.flushNarrative());
      this.input.addEventListener('compositionstart', () => {
        this.composing = true;
      });
      this.input.addEventListener('compositionend', () => {
        this.composing = false;
        if (this.pending !== undefined) this.showNarrative(this.pending);
        this.scheduleFlush();
      });
      ctx.narratives.add(this);
    } else if (kind === 'status') {
      this.input = h(
        'select',
        { id },
        h('option', { value: '' }, t('status.none')),
        ctx.schema.statuses.map((s) => h('option', { value: s }, t(`status.${s}`))),
      );
      this.input.addEventListener('change', () => {
        this.localDirty = true;
        this.commit();
      });
    } else if (kind === 'source-id set') {
      this.input = h('div', { id, class: 'checks', role: 'group', 'aria-label': label });
      this.el.append(h('p', { class: 'label' }, label), this.input, this.error);
      return;
    } else {
      this.input = h('input', {
        id,
        type: 'text',
        autocomplete: 'off',
        inputmode: kind === 'integer' ? 'numeric' : undefined,
        placeholder: kind === 'date' ? t('hint.date_placeholder') : undefined,
      });
      this.input.addEventListener('input', () => {
        this.localDirty = true;
        clearTimeout(this.debounce);
        // Kept even if the phone never blurs the field (app switched away).
        this.debounce = setTimeout(() => this.commit(), 1200);
      });
      this.input.addEventListener('change', () => this.commit());
      this.input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') this.commit();
      });
    }
    this.el.append(labelEl, this.input);
    if (kind === 'date') this.el.append(h('p', { class: 'hint' }, t('hint.date')));
    this.el.append(this.error, this.conflict);
  }

  showError(message) {
    this.error.textContent = message;
    this.error.hidden = false;
    this.el.classList.add('invalid');
  }

  clearError() {
    this.error.hidden = true;
    this.error.textContent = '';
    this.el.classList.remove('invalid');
  }

  refused(e) {
    const msg = String(e && e.message ? e.message : e);
    if (this.kind === 'date' && /invalid value|not a date|outside|does not exist|range/i.test(msg)) {
      this.showError(t('error.invalid_date'));
    } else {
      this.showError(t('error.edit_refused', { message: msg }));
    }
  }

  commit() {
    clearTimeout(this.debounce);
    if (!this.localDirty) return;
    const raw = this.input.value.trim();
    let value = raw === '' ? null : raw;
    if (this.kind === 'integer' && value !== null) {
      if (!/^-?\d{1,15}$/.test(value)) {
        this.showError(t('error.invalid_number'));
        return;
      }
      value = Number(value);
    }
    if (value === (this.value ?? null) && !this.conflicted) {
      this.localDirty = false;
      this.clearError();
      return;
    }
    if (this.ctx.edit(this.target.set(value), this)) {
      this.localDirty = false;
      this.clearError();
    }
  }

  // Typing in a narrative becomes one change per pause (not one per key),
  // so the count of changes waiting and the coordinators' history stay
  // readable. Typed text is always spliced against the text it was typed
  // over: the session flushes it before any frame from the server is
  // applied (`session.beforeSync`), and `showNarrative` rebases it if the
  // document moved anyway.
  //
  // Android keyboards compose most words; while a composition runs the
  // textarea is never rewritten (that breaks the IME): remote text waits.
  scheduleFlush() {
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.flushNarrative(), TYPING_PAUSE_MS);
  }

  flushNarrative() {
    clearTimeout(this.typingTimer);
    if (this.kind !== 'narrative' || this.readOnly) return;
    const before = this.shown ?? '';
    const after = this.input.value;
    if (before === after) return;
    this.spliceAgainst(before, diffText(before, after), after);
  }

  /** Splices `d` (a diff of `base`) into the document; `result` is the
   *  text the document then holds. */
  spliceAgainst(base, d, result) {
    const edit = this.target.splice(codePoints(base.slice(0, d.pos)), codePoints(base.slice(d.pos, d.pos + d.del)), d.ins);
    this.shown = result;
    if (!this.ctx.edit(edit, this)) {
      // Refused (too long…): show the document's text again.
      this.shown = undefined;
      this.showNarrative(this.value ?? '');
    } else {
      this.clearError();
    }
  }

  showNarrative(text) {
    if (this.composing) {
      this.pending = text;
      return;
    }
    this.pending = undefined;
    const current = this.input.value;
    const shown = this.shown ?? '';
    if (current !== shown) {
      // Typing not yet in the document.
      if (text === shown) return;
      // The document moved under it: put the typing on top of the new text.
      const local = diffText(shown, current);
      const remote = diffText(shown, text);
      let pos;
      let del = local.del;
      if (local.pos >= remote.pos + remote.del) pos = local.pos + remote.ins.length - remote.del;
      else if (local.pos + local.del <= remote.pos) pos = local.pos;
      else {
        // Both changed the same stretch: keep theirs, add ours after it.
        pos = remote.pos + remote.ins.length;
        del = 0;
      }
      const merged = text.slice(0, pos) + local.ins + text.slice(pos + del);
      this.value = text;
      this.spliceAgainst(text, { pos, del, ins: local.ins }, merged);
      text = merged;
    }
    if (current === text) {
      this.shown = text;
      return;
    }
    const focused = document.activeElement === this.input;
    const start = this.input.selectionStart;
    const end = this.input.selectionEnd;
    this.input.value = text;
    this.shown = text;
    if (focused) {
      // Keep the cursor where it was relative to the text around it.
      const d = diffText(current, text);
      const map = (i) => (i <= d.pos ? i : i >= d.pos + d.del ? i + d.ins.length - d.del : d.pos + d.ins.length);
      this.input.setSelectionRange(map(start), map(end));
    }
  }

  update(value, conflict) {
    this.value = value;
    this.conflicted = !!conflict;
    if (conflict) this.ctx.used.add(this.path);
    if (this.readOnly) {
      this.input.textContent = value === null || value === undefined ? '—' : this.kind === 'integer' && /size/.test(this.path) ? formatBytes(value) : String(value);
      return;
    }
    if (this.kind === 'narrative') {
      this.showNarrative(typeof value === 'string' ? value : '');
    } else if (this.kind === 'source-id set') {
      this.updateSources(value && typeof value === 'object' ? value : {});
    } else if (!this.localDirty) {
      const shown = value === null || value === undefined ? '' : String(value);
      if (this.input.value !== shown) this.input.value = shown;
    }
    const key = conflict ? JSON.stringify(conflict.values) : '';
    if (key !== this.conflictKey) {
      this.conflictKey = key;
      clear(this.conflict);
      this.el.classList.toggle('conflicted', !!conflict);
      if (conflict) {
        this.conflict.append(
          conflictBox(this.ctx, conflict, this.kind, this.kind === 'narrative' ? null : (v) => this.ctx.edit(this.target.set(v), this)),
        );
      }
    }
  }

  updateSources(cited) {
    const sources = this.ctx.sources;
    const key = JSON.stringify([sources, cited]);
    if (key === this.sourcesKey) return;
    this.sourcesKey = key;
    clear(this.input);
    if (sources.length === 0) {
      this.input.append(h('p', { class: 'hint' }, t('sources.none')));
      return;
    }
    for (const s of sources) {
      const id = nextId('src');
      const box = h('input', { type: 'checkbox', id, checked: !!cited[s.id] });
      box.addEventListener('change', () => {
        if (!this.ctx.edit(this.target.cite(s.id, box.checked), this)) box.checked = !box.checked;
      });
      this.input.append(h('div', { class: 'check' }, box, h('label', { for: id }, s.label)));
    }
  }
}

// ------------------------------------------------------------ collections

function itemSortKey(coll, item) {
  const created = String(item.created_at ?? 0).padStart(16, '0');
  if (coll.name === 'timeline') return `${item.date || '9999'}|${created}`;
  return created;
}

function itemTitle(coll, item) {
  const first = coll.fields.find((f) => f.kind === 'string' && typeof item[f.key] === 'string' && item[f.key]);
  if (coll.name === 'timeline' && item.date) return [item.date, item.title].filter(Boolean).join(' · ');
  if (coll.name === 'status_claims' && item.status) {
    return [t(`status.${item.status}`), item.claimed_by].filter(Boolean).join(' · ');
  }
  return first ? item[first.key] : t('item.untitled');
}

/** One item of a collection, with a widget per field. */
class ItemCard {
  constructor(ctx, coll, id, parentId) {
    this.ctx = ctx;
    this.coll = coll;
    this.id = id;
    this.parentId = parentId;
    const name = coll.name;
    const base = parentId ? { collection: name, id, request: parentId } : { collection: name, id };
    this.prefix = parentId ? `requests.${parentId}.replies.${id}` : `${coll.path.join('.')}.${id}`;
    this.title = h('h4', { class: 'item-title' });
    this.meta = h('p', { class: 'item-meta' });
    this.deleteBtn = h('button', { type: 'button', class: 'small quiet', onclick: () => ctx.edit({ op: 'delete_item', ...base }) }, t('action.delete'));
    this.restoreBtn = h('button', { type: 'button', class: 'small', onclick: () => ctx.edit({ op: 'restore_item', ...base }) }, t('action.restore'));
    this.body = h('div', { class: 'item-body' });
    this.el = h(
      'article',
      { class: 'item', dataset: { item: id, collection: name } },
      h('header', { class: 'item-head' }, this.title, this.deleteBtn, this.restoreBtn),
      this.meta,
      this.body,
    );
    this.widgets = [];
    this.replies = null;
    const readOnly = READ_ONLY[name] || new Set();
    for (const f of coll.fields) {
      if (f.kind === 'reply collection') {
        const replies = ctx.schema.collections.find((c) => c.name === 'requests.*.replies');
        this.replies = new CollectionWidget(ctx, replies, id);
        continue;
      }
      const w = new FieldWidget(ctx, {
        path: `${this.prefix}.${f.key}`,
        kind: f.kind,
        label: t(`item.${labelId(name)}.${f.key}`),
        readOnly: readOnly.has(f.key),
        target: {
          set: (value) => ({ op: 'set_item', ...base, field: f.key, value }),
          splice: (pos, del, insert) => ({ op: 'splice_item', ...base, field: f.key, pos, delete: del, insert }),
          cite: (source, on) => ({ op: on ? 'cite_source' : 'uncite_source', collection: name, id, source }),
        },
      });
      this.widgets.push([f.key, w]);
      this.body.append(w.el);
    }
    if (this.replies) this.body.append(this.replies.el);
  }

  update(item) {
    const deleted = item.deleted_at !== undefined && item.deleted_at !== null;
    this.deleted = deleted;
    this.el.classList.toggle('deleted', deleted);
    this.title.textContent = itemTitle(this.coll, item);
    const parts = [];
    if (item.created_at) parts.push(t('item.added', { date: formatDate(item.created_at) }));
    if (deleted) parts.push(t('item.deleted'));
    this.meta.textContent = parts.join(' · ');
    this.deleteBtn.hidden = deleted;
    this.restoreBtn.hidden = !deleted;
    this.body.hidden = deleted;
    for (const [key, w] of this.widgets) w.update(item[key], this.ctx.conflicts.get(`${this.prefix}.${key}`));
    if (this.replies) this.replies.update(item.replies);
  }
}

/** A collection: its items (deleted ones behind a toggle) and an "add"
 *  button. */
class CollectionWidget {
  constructor(ctx, coll, parentId, { adder } = {}) {
    this.ctx = ctx;
    this.coll = coll;
    this.parentId = parentId;
    this.cards = new Map();
    this.showDeleted = false;
    const name = coll.name;
    this.list = h('div', { class: 'items' });
    this.empty = h('p', { class: 'empty' }, t(`collection.${labelId(name)}.empty`));
    this.toggle = h('button', { type: 'button', class: 'small quiet', hidden: true, onclick: () => this.flipDeleted() });
    const addButton = h('button', { type: 'button', class: 'add', onclick: () => this.add() }, t(`collection.${labelId(name)}.add`));
    this.el = h(
      'section',
      { class: `collection${parentId ? ' nested' : ''}`, dataset: { collection: name } },
      h(parentId ? 'h4' : 'h3', null, t(`collection.${labelId(name)}`)),
      this.empty,
      this.list,
      this.toggle,
      adder ? adder(this) : addButton,
    );
  }

  flipDeleted() {
    this.showDeleted = !this.showDeleted;
    this.update(this.lastItems);
  }

  add(values = {}) {
    const id = randomId();
    const edit = { op: 'add_item', collection: this.coll.name, id, values };
    if (this.parentId) edit.request = this.parentId;
    this.focusNext = id;
    if (!this.ctx.edit(edit)) this.focusNext = null;
    return id;
  }

  update(items) {
    this.lastItems = items;
    const entries = Object.entries(items && typeof items === 'object' ? items : {}).filter(
      ([, v]) => v && typeof v === 'object' && !Array.isArray(v),
    );
    entries.sort(([a, x], [b, y]) => itemSortKey(this.coll, x).localeCompare(itemSortKey(this.coll, y)) || a.localeCompare(b));
    let deletedCount = 0;
    const seen = new Set();
    for (const [id, item] of entries) {
      seen.add(id);
      let card = this.cards.get(id);
      if (!card) {
        card = new ItemCard(this.ctx, this.coll, id, this.parentId);
        this.cards.set(id, card);
      }
      card.update(item);
      if (card.deleted) deletedCount++;
      card.el.hidden = card.deleted && !this.showDeleted;
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.el.remove();
        this.cards.delete(id);
      }
    }
    // Reorder only when nobody is typing in this list: moving a focused
    // field would drop the focus.
    if (!this.list.contains(document.activeElement)) {
      entries.forEach(([id], i) => {
        const el = this.cards.get(id).el;
        if (this.list.children[i] !== el) this.list.insertBefore(el, this.list.children[i] || null);
      });
    } else {
      for (const [id] of entries) {
        const el = this.cards.get(id).el;
        if (el.parentNode !== this.list) this.list.append(el);
      }
    }
    this.empty.hidden = entries.length - deletedCount > 0;
    this.toggle.hidden = deletedCount === 0;
    this.toggle.textContent = this.showDeleted ? t('action.hide_deleted') : tn('action.show_deleted', deletedCount);
    if (this.focusNext && this.cards.has(this.focusNext)) {
      const card = this.cards.get(this.focusNext);
      this.focusNext = null;
      card.el.querySelector('input, textarea, select')?.focus();
      card.el.scrollIntoView?.({ block: 'nearest' });
    }
  }
}

// ---------------------------------------------------------- special adders

/** Status claims are added whole: a status, who says so, since when, what
 *  they said and on which sources. */
function statusClaimAdder(ctx) {
  return (collection) => {
    const form = h('form', { class: 'adder', hidden: true });
    const open = h('button', { type: 'button', class: 'add' }, t('collection.status_claims.add'));
    const ids = { status: nextId(), by: nextId(), asOf: nextId(), statement: nextId() };
    const status = h(
      'select',
      { id: ids.status, required: true },
      h('option', { value: '' }, t('status.choose')),
      ctx.schema.statuses.map((s) => h('option', { value: s }, t(`status.${s}`))),
    );
    const by = h('input', { id: ids.by, type: 'text', autocomplete: 'off' });
    const asOf = h('input', { id: ids.asOf, type: 'text', autocomplete: 'off', placeholder: t('hint.date_placeholder') });
    const statement = h('textarea', { id: ids.statement, rows: 3 });
    const sources = h('div', { class: 'checks' });
    const error = h('p', { class: 'error', role: 'alert', hidden: true });
    const fillSources = () => {
      clear(sources);
      if (ctx.sources.length === 0) sources.append(h('p', { class: 'hint' }, t('sources.none')));
      for (const s of ctx.sources) {
        const id = nextId('src');
        sources.append(h('div', { class: 'check' }, h('input', { type: 'checkbox', id, value: s.id }), h('label', { for: id }, s.label)));
      }
    };
    open.addEventListener('click', () => {
      fillSources();
      form.hidden = false;
      open.hidden = true;
      status.focus();
    });
    const close = () => {
      form.reset();
      form.hidden = true;
      open.hidden = false;
      error.hidden = true;
    };
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!status.value) {
        error.textContent = t('claim.error_status');
        error.hidden = false;
        return;
      }
      const edit = {
        op: 'add_status_claim',
        id: randomId(),
        status: status.value,
        claimed_by: by.value.trim(),
        statement: statement.value,
        sources: [...sources.querySelectorAll('input:checked')].map((b) => b.value),
      };
      if (asOf.value.trim()) edit.as_of = asOf.value.trim();
      try {
        ctx.session.edit(ctx.url, edit);
        close();
      } catch (err) {
        const msg = String(err && err.message ? err.message : err);
        error.textContent = /as_of/.test(msg) ? t('error.invalid_date') : t('error.edit_refused', { message: msg });
        error.hidden = false;
      }
    });
    form.append(
      h('h4', null, t('collection.status_claims.add')),
      h('div', { class: 'field' }, h('label', { for: ids.status }, t('item.status_claims.status')), status),
      h('div', { class: 'field' }, h('label', { for: ids.by }, t('item.status_claims.claimed_by')), by),
      h('div', { class: 'field' }, h('label', { for: ids.asOf }, t('item.status_claims.as_of')), asOf, h('p', { class: 'hint' }, t('hint.date'))),
      h('div', { class: 'field' }, h('label', { for: ids.statement }, t('item.status_claims.statement')), statement),
      h('div', { class: 'field' }, h('p', { class: 'label' }, t('item.status_claims.source_ids')), sources),
      error,
      h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, t('claim.submit')), h('button', { type: 'button', class: 'quiet', onclick: close }, t('action.cancel'))),
    );
    return h('div', null, open, form);
  };
}

/** Photos: re-encoded on the phone (photo.js) so that no EXIF metadata is
 *  ever stored or sent; only the metadata goes into `attachments`. */
function photoAdder(ctx) {
  return (collection) => {
    const id = nextId('photo');
    const input = h('input', { type: 'file', id, accept: 'image/*', class: 'visually-hidden' });
    const status = h('p', { class: 'hint', role: 'status' });
    input.addEventListener('change', async () => {
      const file = input.files && input.files[0];
      input.value = '';
      if (!file) return;
      status.textContent = t('photo.processing');
      try {
        const { blob } = await reencodeJpeg(file);
        const values = {
          file_name: jpegName(file.name),
          media_type: blob.type || 'image/jpeg',
          size_bytes: blob.size,
          sha256: await sha256Hex(blob),
        };
        collection.add(values);
        status.textContent = '';
      } catch {
        status.textContent = t('photo.error');
      }
    });
    return h(
      'div',
      { class: 'photo-adder' },
      h('p', { class: 'hint' }, t('photo.note')),
      input,
      h('label', { for: id, class: 'button add' }, t('collection.attachments.add')),
      status,
    );
  };
}

// --------------------------------------------------------------- sections

class SectionWidget {
  constructor(ctx, entry) {
    this.ctx = ctx;
    this.entry = entry;
    this.fields = [];
    this.collections = [];
    const body = h('div', { class: 'section-body' });
    this.el = h('details', { class: 'section', dataset: { section: entry.key } }, h('summary', null, h('h2', null, t(`section.${entry.key}`))), body);
    const section = entry.section && ctx.schema.sections.find((s) => s.key === entry.section);
    const fieldEls = [];
    if (section) {
      for (const f of section.fields) {
        const w = new FieldWidget(ctx, {
          path: f.path,
          kind: f.kind,
          label: t(`field.${f.path}`),
          target: {
            set: (value) => ({ op: 'set', path: f.path, value }),
            splice: (pos, del, insert) => ({ op: 'splice', path: f.path, pos, delete: del, insert }),
          },
        });
        this.fields.push([f, w]);
        fieldEls.push(w.el);
      }
    }
    for (const name of entry.collections || []) {
      const coll = ctx.schema.collections.find((c) => c.name === name);
      if (!coll) continue;
      const adder = name === 'status_claims' ? statusClaimAdder(ctx) : name === 'attachments' ? photoAdder(ctx) : undefined;
      this.collections.push([coll, new CollectionWidget(ctx, coll, null, { adder })]);
    }
    // Burial's registers come after the remains reports they follow from.
    if (entry.key === 'remains_burial') {
      body.append(...this.collections.map(([, c]) => c.el), h('h3', null, t('section.burial')), ...fieldEls);
    } else {
      body.append(...fieldEls, ...this.collections.map(([, c]) => c.el));
    }
  }

  update(doc) {
    for (const [f, w] of this.fields) {
      const sec = doc[this.entry.section] || {};
      w.update(sec[f.key], this.ctx.conflicts.get(f.path));
    }
    for (const [coll, c] of this.collections) {
      let node = doc;
      for (const k of coll.path) node = node && node[k];
      c.update(node);
    }
  }
}

// ----------------------------------------------------------------- editor

export class CaseEditor {
  constructor({ session, url, schema, onTitle }) {
    this.session = session;
    this.url = url;
    this.onTitle = onTitle;
    const ctx = {
      session,
      url,
      schema,
      actor: session.actor,
      conflicts: new Map(),
      used: new Set(),
      sources: [],
      narratives: new Set(),
      edit: (edit, widget) => {
        try {
          session.edit(url, edit);
          return true;
        } catch (e) {
          if (widget) widget.refused(e);
          else this.toast(t('error.edit_refused', { message: String(e && e.message ? e.message : e) }));
          return false;
        }
      },
    };
    this.ctx = ctx;
    const layout = [...LAYOUT];
    const listed = new Set(layout.flatMap((e) => e.collections || []));
    const listedSections = new Set(layout.map((e) => e.section).filter(Boolean));
    for (const c of schema.collections) {
      if (c.doc === 'case' && c.name !== 'requests.*.replies' && !listed.has(c.name)) layout.push({ key: c.name, collections: [c.name] });
    }
    for (const s of schema.sections) {
      if (s.doc === 'case' && !listedSections.has(s.key)) layout.push({ key: s.key, section: s.key });
    }
    this.sections = layout.map((entry) => new SectionWidget(ctx, entry));
    this.title = h('h1', { class: 'case-title' });
    this.subtitle = h('p', { class: 'case-sub' });
    this.pending = h('p', { class: 'case-pending', role: 'status' });
    this.notice = h('p', { class: 'notice', hidden: true });
    this.others = h('section', { class: 'other-conflicts', hidden: true });
    this.toastEl = h('p', { class: 'toast', role: 'alert', hidden: true });
    this.body = h('div', { class: 'sections' }, this.sections.map((s) => s.el));
    this.el = h('div', { class: 'editor' }, this.title, this.subtitle, this.pending, this.notice, this.toastEl, this.body, this.others);
    // The person's section is where a family starts.
    this.sections[0].el.open = true;
    // Typing waiting for its pause goes into the document before anything
    // from the server does, and before the page is hidden.
    this.unhook = session.beforeSync(() => this.flushTyping());
  }

  flushTyping() {
    for (const w of this.ctx.narratives) if (w.el.isConnected) w.flushNarrative();
  }

  destroy() {
    this.flushTyping();
    this.unhook();
  }

  toast(message) {
    this.toastEl.textContent = message;
    this.toastEl.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => {
      this.toastEl.hidden = true;
    }, 6000);
  }

  showNotice(message) {
    this.notice.textContent = message;
    this.notice.hidden = !message;
  }

  update(view) {
    const ctx = this.ctx;
    ctx.conflicts = new Map(view.conflicts.map((c) => [c.path, c]));
    ctx.used = new Set();
    const doc = view.case || {};
    ctx.sources = Object.entries(doc.sources || {})
      .filter(([, s]) => s && typeof s === 'object' && (s.deleted_at === undefined || s.deleted_at === null))
      .sort(([a, x], [b, y]) => (x.created_at ?? 0) - (y.created_at ?? 0) || a.localeCompare(b))
      .map(([id, s]) => ({ id, label: s.title || s.kind || t('item.untitled') }));

    const person = doc.person || {};
    const name = [person.given_name, person.patronymic, person.family_name].filter((x) => typeof x === 'string' && x).join(' ');
    this.title.textContent = name || t('cases.unnamed');
    const military = doc.military || {};
    this.subtitle.textContent = [military.rank, military.unit].filter((x) => typeof x === 'string' && x).join(' · ');
    this.pending.textContent = view.unacknowledged > 0 ? tn('case.pending', view.unacknowledged) : view.loaded ? t('case.saved') : '';
    this.onTitle?.(this.title.textContent);

    this.body.hidden = !view.loaded;
    if (!view.loaded) {
      if (this.notice.hidden || !this.notice.dataset.sticky) this.showNotice(t('case.not_loaded'));
      return;
    }
    if (!this.notice.dataset.sticky) this.showNotice('');
    for (const s of this.sections) s.update(doc);
    this.updateOthers(view.conflicts);
  }

  /** Conflicts on keys no field shows (bookkeeping, keys from other
   *  clients): listed so that nothing is hidden. */
  updateOthers(conflicts) {
    const rest = conflicts.filter((c) => !this.ctx.used.has(c.path));
    const key = JSON.stringify(rest);
    if (key === this.othersKey) return;
    this.othersKey = key;
    clear(this.others);
    this.others.hidden = rest.length === 0;
    if (!rest.length) return;
    this.others.append(h('h2', null, t('conflict.other_title')));
    for (const c of rest) {
      this.others.append(h('div', { class: 'field conflicted', dataset: { path: c.path } }, h('p', { class: 'label' }, c.path), conflictBox(this.ctx, c, 'string', null)));
    }
  }
}
