// casesync's JS glue: the IO around the Rust engine (client-wasm).
//
// The engine decides everything about documents and the protocol; this
// module only moves bytes and keeps them:
//   - the WebSocket to the server, with reconnect and jittered backoff;
//   - IndexedDB: the device's actor and storage id, the token, and each
//     case's bytes and sync state, so the app reopens offline with
//     everything;
//   - token renewal (`getToken()` before every connect, `onAuthRequired`
//     when the server refuses the token);
//   - the clock (`now`) and randomness (actor, item ids), which the engine
//     never reads itself;
//   - the small HTTP API (list, create cases, accept invitations).
//
// No third-party requests: every URL is on the server's own origin. Nothing
// here logs case contents or tokens.

import init, { CasesyncClient, schema as wasmSchema } from '../pkg/casesync_client_wasm.js';

export const DB_NAME = 'casesync';
const DB_VERSION = 1;
const META = 'meta';
const DOCS = 'docs';

// Backoff between reconnect attempts: 0.5 s doubling to 30 s, each delay
// drawn uniformly from its upper half so that many phones coming back after
// a mast outage do not all knock at once.
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;

const WS_PROTOCOL = 'casesync.v1';
const WS_BEARER_PREFIX = 'casesync.bearer.';

// ------------------------------------------------------------------ wasm

let wasmReady = null;

/** Loads the wasm module once. `wasmUrl` defaults to the file next to the
 *  generated JS (`pkg/casesync_client_wasm_bg.wasm`). */
export function loadEngine(wasmUrl) {
  if (!wasmReady) {
    wasmReady = init(wasmUrl ? { module_or_path: wasmUrl } : undefined);
  }
  return wasmReady;
}

let schemaCache = null;

/** The case model's sections, collections and their field kinds. */
export async function schema() {
  await loadEngine();
  if (!schemaCache) schemaCache = JSON.parse(wasmSchema());
  return schemaCache;
}

// ------------------------------------------------------------- randomness

function randomBytes(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}

function base64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A fresh item id (16 random bytes, base64url: 22 characters of
 *  `[A-Za-z0-9_-]`). */
export function randomId() {
  return base64url(randomBytes(16));
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// ------------------------------------------------------------------ token

/** The token's claims, unverified (the server verifies). `null` when the
 *  token is not a readable JWT. Used only for `exp`, to ask for a new token
 *  before knocking with an expired one. */
export function tokenClaims(token) {
  try {
    const part = String(token).split('.')[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function tokenExpired(token, nowMs) {
  const claims = tokenClaims(token);
  return !!(claims && typeof claims.exp === 'number' && claims.exp * 1000 <= nowMs);
}

/** Raised when the server (or the token itself) says to sign in again. */
export class AuthError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AuthError';
  }
}

/** An HTTP API failure, with the server's own message when it sent one. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** The network is not reachable (offline, DNS, connection refused). */
export class OfflineError extends Error {
  constructor() {
    super('offline');
    this.name = 'OfflineError';
  }
}

// -------------------------------------------------------------- IndexedDB

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function openDb(name) {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(name, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(META)) db.createObjectStore(META);
      if (!db.objectStoreNames.contains(DOCS)) db.createObjectStore(DOCS, { keyPath: 'url' });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error('the local database is open elsewhere'));
  });
}

/** The device's local store: one IndexedDB database. */
class LocalStore {
  constructor(db) {
    this.db = db;
  }

  static async open(name) {
    return new LocalStore(await openDb(name));
  }

  async get(store, key) {
    const tx = this.db.transaction(store, 'readonly');
    return request(tx.objectStore(store).get(key));
  }

  async all(store) {
    const tx = this.db.transaction(store, 'readonly');
    return request(tx.objectStore(store).getAll());
  }

  /** Writes `records` ([store, value, key?]) in one transaction and resolves
   *  once it is committed. */
  write(records) {
    return new Promise((resolve, reject) => {
      const stores = [...new Set(records.map((r) => r[0]))];
      const tx = this.db.transaction(stores, 'readwrite', { durability: 'strict' });
      for (const [store, value, key] of records) {
        if (key === undefined) tx.objectStore(store).put(value);
        else tx.objectStore(store).put(value, key);
      }
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error('local write aborted'));
    });
  }

  close() {
    this.db.close();
  }
}

// ---------------------------------------------------------------- session

/**
 * One signed-in device: the engine, its local store and its link to the
 * server.
 *
 * Status is one of:
 *   - `offline`: no connection to the server (edits wait on the phone);
 *   - `syncing`: connected, and some changes are not yet durable on the
 *     server (or the connection is being set up);
 *   - `saved`: connected and every change is durable on the server.
 */
export class Session {
  /**
   * Opens the device's session from local storage, or returns `null` when
   * this device has never signed in.
   *
   * Options:
   *   baseUrl        server origin (default: `location.origin`)
   *   dbName         IndexedDB database name (default `casesync`)
   *   getToken       async () => token, called before every connect
   *                  (default: the token stored at sign-in)
   *   onAuthRequired (reason) => void, when the token is refused or expired
   *   now            () => ms since the epoch (default Date.now)
   *   connect        false to stay offline until `start()` (default true)
   */
  static async resume(options = {}) {
    await loadEngine(options.wasmUrl);
    const store = await LocalStore.open(options.dbName || DB_NAME);
    const identity = await store.get(META, 'identity');
    if (!identity || !identity.token) {
      store.close();
      return null;
    }
    const session = new Session(store, identity, options);
    await session.loadDocuments();
    if (options.connect !== false) session.start();
    return session;
  }

  /**
   * Signs this device in with `token`. The first sign-in draws the
   * device's actor (16 random bytes) and storage id and keeps them. A token
   * for the same user and device keeps them too; another device of the same
   * user gets a new actor (the server binds each actor to one device); a
   * different user must first forget this device.
   */
  static async signIn(token, options = {}) {
    token = String(token).trim();
    await loadEngine(options.wasmUrl);
    // Throws a clear error for a token that is not a readable JWT.
    const probe = new CasesyncClient(token, 'probe', new Uint8Array(16));
    const peerId = probe.peerId();
    const user = probe.user();
    probe.free();
    const store = await LocalStore.open(options.dbName || DB_NAME);
    const old = await store.get(META, 'identity');
    if (old && old.user !== user) {
      store.close();
      throw new Error('another-user');
    }
    const identity = {
      token,
      user,
      peerId,
      actor: old && old.peerId === peerId ? old.actor : randomBytes(16),
      storageId: (old && old.storageId) || crypto.randomUUID(),
    };
    await store.write([[META, identity, 'identity']]);
    store.close();
    // Ask the browser to keep our data under storage pressure; weeks of a
    // family's offline work live here.
    try {
      await navigator.storage?.persist?.();
    } catch {
      // Not granted: the data is still stored, only evictable.
    }
    return Session.resume(options);
  }

  constructor(store, identity, options) {
    this.store = store;
    this.identity = identity;
    this.options = options;
    this.baseUrl = (options.baseUrl || globalThis.location.origin).replace(/\/$/, '');
    this.now = options.now || (() => Date.now());
    this.getToken = options.getToken || (async () => this.identity.token);
    this.onAuthRequired = options.onAuthRequired || (() => {});
    this.client = new CasesyncClient(identity.token, identity.storageId, identity.actor);
    this.ws = null;
    this.running = false;
    this.attempt = 0;
    this.timer = null;
    this.authBlocked = false;
    this.docListeners = new Map();
    this.statusListeners = new Set();
    this.eventListeners = new Set();
    this.lastStatus = null;
    this.dirty = new Set();
    this.flushing = null;
    this.failed = new Map();
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.dropSocket();
    this.localFlushers = new Set();
    this.onHide = () => {
      this.flushLocal();
      this.flush();
    };
    this.onVisibility = () => {
      if (globalThis.document && document.visibilityState === 'hidden') this.onHide();
    };
  }

  /** `user:<sub>:<device>` */
  get peerId() {
    return this.identity.peerId;
  }

  get user() {
    return this.identity.user;
  }

  /** This device's actor id (hex), to tell "my" values in conflicts. */
  get actor() {
    return toHex(this.identity.actor);
  }

  async loadDocuments() {
    for (const rec of await this.store.all(DOCS)) {
      try {
        this.client.openSaved(rec.url, rec.bytes, rec.syncState || undefined);
      } catch (e) {
        // Keep the bytes; a later version may read them. The case shows as
        // not loadable instead of taking the whole app down.
        this.failed.set(rec.url, String(e && e.message ? e.message : e));
      }
    }
  }

  // ---- subscriptions

  /** Registers `fn`, called before a frame from the server is applied and
   *  before the page is hidden: the UI puts edits it batches (typing) into
   *  the document then, so they are spliced against the text they were
   *  typed over. Returns an unregister function. */
  beforeSync(fn) {
    this.localFlushers.add(fn);
    return () => this.localFlushers.delete(fn);
  }

  flushLocal() {
    for (const fn of this.localFlushers) {
      try {
        fn();
      } catch {
        // One widget's failure does not stop the sync.
      }
    }
  }

  /** Calls `fn(view)` now and whenever the case changes here or remotely. */
  subscribe(url, fn) {
    if (!this.docListeners.has(url)) this.docListeners.set(url, new Set());
    this.docListeners.get(url).add(fn);
    try {
      fn(this.read(url));
    } catch {
      // Not open yet.
    }
    return () => this.docListeners.get(url)?.delete(fn);
  }

  /** Calls `fn(status)` now and whenever the sync status changes. */
  onStatus(fn) {
    this.statusListeners.add(fn);
    fn(this.status());
    return () => this.statusListeners.delete(fn);
  }

  /** Calls `fn(event)` for `connected`, `unavailable` and `error` events
   *  from the server, and `{type: 'auth'}` when a new token is needed. */
  onEvent(fn) {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  notifyDoc(url) {
    const fns = this.docListeners.get(url);
    if (!fns || fns.size === 0) return;
    let view;
    try {
      view = this.read(url);
    } catch {
      return;
    }
    for (const fn of fns) fn(view);
  }

  notifyStatus() {
    const s = this.status();
    const key = JSON.stringify(s);
    if (key === this.lastStatus) return;
    this.lastStatus = key;
    for (const fn of this.statusListeners) fn(s);
    // Acknowledgements change a case's unacknowledged count without
    // changing the case: tell its subscribers too.
    for (const url of this.docListeners.keys()) this.notifyDoc(url);
  }

  emit(event) {
    for (const fn of this.eventListeners) fn(event);
  }

  // ---- documents

  /** `{state, online, unacknowledged, authRequired}` */
  status() {
    const s = JSON.parse(this.client.status());
    let state;
    if (!s.online) state = 'offline';
    else if (s.unacknowledged > 0 || this.dirty.size > 0) state = 'syncing';
    else state = 'saved';
    return { state, online: s.online, unacknowledged: s.unacknowledged, authRequired: this.authBlocked };
  }

  /** Case urls this device holds. */
  documents() {
    return this.client.documents();
  }

  /** Urls whose local bytes could not be loaded, with the reason. */
  unreadable() {
    return new Map(this.failed);
  }

  isOpen(url) {
    return this.client.documents().includes(url);
  }

  /** The case as the engine reads it (see `CasesyncClient.read`). */
  read(url) {
    return JSON.parse(this.client.read(url));
  }

  /** Applies one edit (an object, see client-wasm/src/edit.rs). Returns
   *  the change hash, or undefined when nothing changed. Throws the
   *  engine's message when the edit is refused. */
  edit(url, edit) {
    let hash;
    try {
      hash = this.client.edit(url, JSON.stringify(edit), this.now());
    } catch (e) {
      this.trapped(e);
      throw e;
    }
    this.pump();
    this.notifyDoc(url);
    return hash;
  }

  /** Makes sure the case is on this device (fetched from the server on
   *  the next sync if it is new here) and stored locally. */
  async open(url) {
    if (!this.isOpen(url)) {
      this.client.openNew(url);
      this.dirty.add(url);
      this.pump();
      await this.flush();
    }
    return url;
  }

  /** A wasm trap (a panic: on wasm32 panics abort, `catch_unwind` cannot
   *  catch them) leaves the engine unusable. Stop everything and tell the
   *  app, which restarts from what IndexedDB holds (written after every
   *  change). Returns whether `e` was one. */
  trapped(e) {
    if (!(e instanceof WebAssembly.RuntimeError)) return false;
    if (!this.crashed) {
      this.crashed = true;
      this.stop();
      this.emit({ type: 'fatal' });
    }
    return true;
  }

  // ---- persistence

  /** Writes every changed case to IndexedDB. Resolves when committed. */
  flush() {
    if (this.crashed) return Promise.resolve();
    for (const url of this.client.takeDirty()) this.dirty.add(url);
    if (this.flushing) {
      this.flushAgain = true;
      return this.flushing;
    }
    if (this.dirty.size === 0) return Promise.resolve();
    this.flushing = (async () => {
      try {
        do {
          this.flushAgain = false;
          for (const url of this.client.takeDirty()) this.dirty.add(url);
          const urls = [...this.dirty];
          this.dirty.clear();
          const records = [];
          for (const url of urls) {
            if (!this.isOpen(url)) continue;
            records.push([
              DOCS,
              {
                url,
                bytes: this.client.save(url),
                syncState: this.client.syncState(url) || null,
                savedAt: this.now(),
              },
            ]);
          }
          if (records.length) {
            try {
              await this.store.write(records);
            } catch (e) {
              // Retry on the next flush; nothing is dropped from memory.
              for (const [, rec] of records) this.dirty.add(rec.url);
              this.emit({ type: 'storage-error', message: String(e && e.message ? e.message : e) });
              break;
            }
          }
        } while (this.flushAgain || this.dirty.size > 0);
      } finally {
        this.flushing = null;
        this.notifyStatus();
      }
    })();
    return this.flushing;
  }

  // ---- the engine loop

  /** Sends what the engine has to send, handles its events and schedules
   *  the local write of what changed. */
  pump() {
    if (this.crashed) return;
    const open = this.ws && this.ws.readyState === 1;
    if (open) {
      for (let frame = this.client.pollTransmit(); frame; frame = this.client.pollTransmit()) {
        this.ws.send(frame);
      }
    }
    const events = JSON.parse(this.client.takeEvents());
    for (const ev of events) {
      if (ev.type === 'connected') {
        // The server accepted our join: the link works, reset the backoff.
        this.attempt = 0;
        this.emit(ev);
      } else if (ev.type === 'changed') {
        this.notifyDoc(ev.document);
      } else {
        this.emit(ev);
      }
    }
    if (open && events.length) {
      // Handling events may have queued replies.
      for (let frame = this.client.pollTransmit(); frame; frame = this.client.pollTransmit()) {
        this.ws.send(frame);
      }
    }
    this.flush();
    this.notifyStatus();
  }

  // ---- the connection

  /** Starts connecting (and reconnecting) to the server. */
  start() {
    if (this.running) return;
    this.running = true;
    if (globalThis.addEventListener) {
      globalThis.addEventListener('online', this.onOnline);
      globalThis.addEventListener('offline', this.onOffline);
      globalThis.addEventListener('pagehide', this.onHide);
      globalThis.document?.addEventListener('visibilitychange', this.onVisibility);
    }
    this.connect();
  }

  /** Stops the connection and any reconnect. */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
    if (globalThis.removeEventListener) {
      globalThis.removeEventListener('online', this.onOnline);
      globalThis.removeEventListener('offline', this.onOffline);
      globalThis.removeEventListener('pagehide', this.onHide);
      globalThis.document?.removeEventListener('visibilitychange', this.onVisibility);
    }
    this.dropSocket();
  }

  /** Gives the session a new token (after the user signed in again) and
   *  reconnects with it. Local data is kept. */
  async renewToken(token) {
    token = String(token).trim();
    const probe = new CasesyncClient(token, 'probe', new Uint8Array(16));
    const peerId = probe.peerId();
    probe.free();
    if (peerId !== this.identity.peerId) throw new Error('another-device');
    this.identity = { ...this.identity, token };
    await this.store.write([[META, this.identity, 'identity']]);
    this.authBlocked = false;
    this.notifyStatus();
    this.reconnectNow();
  }

  wsUrl() {
    const u = new URL('/sync', this.baseUrl);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.toString();
  }

  async connect() {
    if (!this.running || this.ws || this.authBlocked) return;
    clearTimeout(this.timer);
    this.timer = null;
    if (globalThis.navigator && navigator.onLine === false) {
      // The `online` event brings us back.
      return;
    }
    let token;
    try {
      token = await this.getToken();
    } catch {
      token = null;
    }
    if (!this.running || this.ws) return;
    if (!token || tokenExpired(token, this.now())) {
      this.requireAuth('expired');
      return;
    }
    let ws;
    try {
      ws = new WebSocket(this.wsUrl(), [WS_PROTOCOL, WS_BEARER_PREFIX + token]);
    } catch {
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      opened = true;
      this.client.connected();
      this.pump();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.flushLocal();
      try {
        this.client.receive(new Uint8Array(ev.data));
      } catch (e) {
        if (this.trapped(e)) return;
        // A frame the engine refuses: report it and keep the session; the
        // server decides whether to close.
        this.emit({ type: 'error', message: String(e && e.message ? e.message : e) });
      }
      this.pump();
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.client.disconnected();
      this.pump();
      const authClose = ev.code === 1008 && /token|auth/i.test(ev.reason || '');
      if (authClose) {
        this.requireAuth('refused');
      } else if (!opened) {
        // The handshake failed: either the network or the token. A browser
        // does not say which, so ask the API (same origin, same token).
        this.probeAuth(token);
      } else {
        this.scheduleReconnect();
      }
    };
  }

  async probeAuth(token) {
    try {
      const res = await fetch(this.baseUrl + '/api/cases', {
        headers: { Authorization: 'Bearer ' + token },
        cache: 'no-store',
      });
      if (res.status === 401) {
        this.requireAuth('refused');
        return;
      }
    } catch {
      // Network: back off.
    }
    this.scheduleReconnect();
  }

  requireAuth(reason) {
    this.authBlocked = true;
    this.notifyStatus();
    this.emit({ type: 'auth', reason });
    this.onAuthRequired(reason);
  }

  scheduleReconnect() {
    if (!this.running || this.timer || this.authBlocked) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt = Math.min(this.attempt + 1, 16);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /** Reconnects now (the network came back, or a new token). */
  reconnectNow() {
    if (!this.running) return;
    this.attempt = 0;
    clearTimeout(this.timer);
    this.timer = null;
    if (!this.ws) this.connect();
  }

  dropSocket() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000, 'offline');
    } catch {
      // Already closed.
    }
    this.client.disconnected();
    this.pump();
    if (this.running) this.scheduleReconnect();
  }

  // ---- HTTP API

  async api(method, path, body) {
    const token = await this.getToken();
    let res;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers: {
          Authorization: 'Bearer ' + token,
          ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch {
      throw new OfflineError();
    }
    let json = null;
    try {
      json = await res.json();
    } catch {
      json = null;
    }
    if (res.status === 401) {
      this.requireAuth('refused');
      throw new AuthError((json && json.error && json.error.message) || 'unauthorized');
    }
    if (!res.ok) {
      const err = json && json.error;
      throw new ApiError(res.status, err && err.code, (err && err.message) || res.statusText || `HTTP ${res.status}`);
    }
    return json;
  }

  /** The cases this device holds, plus (when online) every case the server
   *  lists for this user; new ones are opened so they sync and stay
   *  available offline. Returns urls. */
  async listCases() {
    try {
      const res = await this.api('GET', '/api/cases');
      for (const c of res.cases || []) await this.open(c.id);
    } catch (e) {
      if (!(e instanceof OfflineError)) throw e;
    }
    return this.documents();
  }

  /** Creates a case on the server (needs a connection) and opens it. */
  async createCase(values) {
    const res = await this.api('POST', '/api/cases', values ? { values } : undefined);
    await this.open(res.id);
    return res.id;
  }

  /** Accepts an invitation by its code, or by a link that carries it. */
  async acceptInvitation(codeOrLink) {
    const code = invitationCode(codeOrLink);
    if (!code) throw new ApiError(0, 'bad_code', '');
    const res = await this.api('POST', `/api/invitations/${encodeURIComponent(code)}/accept`);
    const url = res && (res.case || res.id || (res.case_id && `automerge:${res.case_id}`));
    if (typeof url === 'string' && url) await this.open(url);
    return url || null;
  }

  /** Writes what is pending, stops and releases the session (the local
   *  data stays). */
  async close() {
    this.flushLocal();
    await this.flush();
    this.stop();
    try {
      this.client.free();
    } catch {
      // Already freed.
    }
    this.store.close();
  }

  // ---- forgetting

  /** Wipes this device: closes the socket, deletes the local database, the
   *  app's caches and its service worker. Unsynced changes are lost; the
   *  caller asks first. */
  async forget() {
    this.stop();
    this.docListeners.clear();
    this.statusListeners.clear();
    this.eventListeners.clear();
    try {
      this.client.free();
    } catch {
      // Already freed.
    }
    this.store.close();
    await forgetDevice(this.options.dbName || DB_NAME);
  }
}

/** Deletes everything the app keeps on this device. */
export async function forgetDevice(dbName = DB_NAME) {
  await new Promise((resolve) => {
    const req = indexedDB.deleteDatabase(dbName);
    req.onsuccess = req.onerror = req.onblocked = () => resolve();
  });
  // The worker first, so that it cannot fill a cache again afterwards.
  if (globalThis.navigator && navigator.serviceWorker) {
    for (const reg of await navigator.serviceWorker.getRegistrations()) await reg.unregister();
  }
  if (globalThis.caches) {
    for (const key of await caches.keys()) await caches.delete(key);
  }
}

/** The invitation code in what the user pasted: a bare code, or a link
 *  with `invite=`/`code=`, `#invite/CODE` or `/invitations/CODE`. */
export function invitationCode(input) {
  const s = String(input || '').trim();
  if (!s) return '';
  const m =
    s.match(/[?&#](?:invite|invitation|code)=([^&#\s]+)/i) ||
    s.match(/\/invit(?:e|ations?)\/([^/?#\s]+)/i) ||
    s.match(/#invite\/([^/?#\s]+)/i);
  const code = m ? decodeURIComponent(m[1]) : s;
  return /^[A-Za-z0-9_-]{1,200}$/.test(code) ? code : '';
}
