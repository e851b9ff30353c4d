// casesync's JS glue: the IO around the Rust engine (client-wasm).
//
// The engine decides everything about documents and the protocol; this
// module only moves bytes and keeps them:
//   - the WebSocket to the server, with reconnect and jittered backoff,
//     and the HTTP fallback (`POST /sync/http`) for networks that break
//     WebSockets: used by itself when sockets keep failing while plain
//     HTTP works, left again as soon as a socket works;
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

function backoff(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

// A socket that has not completed the protocol handshake (the server's
// `peer`) in this time has failed: some proxies hold an upgrade forever.
const HANDSHAKE_TIMEOUT_MS = 15_000;
// Sockets that fail this many times in a row, while the API answers over
// plain HTTP, mean a network that breaks WebSockets: use the HTTP fallback.
const WS_FAILURES_BEFORE_HTTP = 3;
// On the fallback, try a socket again after 30-60 s, then less and less
// often (up to every 2.5-5 min); at once when the network changes.
const WS_PROBE_BASE_MS = 60_000;
const WS_PROBE_MAX_MS = 300_000;
// HTTP fallback: an idle device long-polls (the server holds at most
// 25 s); for a while after a local edit it polls briefly instead, so that
// the next edit never waits behind a long poll.
const HTTP_LONG_POLL_MS = 20_000;
const HTTP_ACTIVE_POLL_MS = 1_000;
const HTTP_ACTIVE_FOR_MS = 30_000;
// The server drops a session idle for 120 s; after a gap of half that,
// start a new one rather than talk to a session that may be gone.
const HTTP_SESSION_GAP_MS = 60_000;
// How long past its wait a request may take before it counts as lost.
const HTTP_REQUEST_SLACK_MS = 25_000;
// One request's frames: the server accepts at most 1024 frames and a body
// of a few frames of its largest size.
const HTTP_MAX_FRAMES = 256;
const HTTP_MAX_BYTES = 512 * 1024;

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

// ---------------------------------------------------------------- framing

/** The HTTP fallback's body: each frame as a 4-byte big-endian length and
 *  its bytes (the frames are the socket's, unchanged). */
export function encodeFrames(frames) {
  let size = 0;
  for (const f of frames) size += 4 + f.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const f of frames) {
    view.setUint32(at, f.length);
    out.set(f, at + 4);
    at += 4 + f.length;
  }
  return out;
}

/** A response's whole body, calling `progress()` as each part arrives. */
async function readBody(res, progress) {
  if (!res.body || !res.body.getReader) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const parts = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    progress();
    parts.push(value);
    size += value.length;
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Splits a response body into frames; throws on broken framing. */
export function decodeFrames(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < 4) throw new Error('truncated frame length');
    const len = view.getUint32(at);
    at += 4;
    if (len > bytes.length - at) throw new Error('truncated frame');
    frames.push(bytes.subarray(at, at + len));
    at += len;
  }
  return frames;
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
    this.wsReady = false;
    // 'ws', or 'http' while sockets fail on this network.
    this.mode = 'ws';
    this.wsFailures = 0;
    this.http = null;
    this.probe = null;
    this.probeTimer = null;
    this.wsProbeAttempt = 0;
    this.lastLocalEdit = 0;
    // Set while a working link is being restarted on purpose (a new HTTP
    // session, the switch back to the socket): the indicator says
    // "syncing" then, not "offline".
    this.restarting = false;
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
    this.onOffline = () => this.goOffline();
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

  /** `{state, online, unacknowledged, authRequired, transport}`;
   *  `transport` is `'ws'` or `'http'` (the fallback) while online. */
  status() {
    const s = JSON.parse(this.client.status());
    let state;
    if (!s.online) state = this.restarting ? 'syncing' : 'offline';
    else if (s.unacknowledged > 0 || this.dirty.size > 0) state = 'syncing';
    else state = 'saved';
    const transport = !s.online && !this.restarting ? null : this.http ? 'http' : 'ws';
    return { state, online: s.online, unacknowledged: s.unacknowledged, authRequired: this.authBlocked, transport };
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
    this.lastLocalEdit = Date.now();
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
    this.transmit();
    const events = JSON.parse(this.client.takeEvents());
    for (const ev of events) {
      if (ev.type === 'connected') {
        // The server accepted our join: the link works, reset the backoff.
        this.attempt = 0;
        this.restarting = false;
        if (this.ws) {
          this.wsReady = true;
          this.wsFailures = 0;
        }
        if (this.http) this.http.failures = 0;
        this.emit(ev);
      } else if (ev.type === 'changed') {
        this.notifyDoc(ev.document);
      } else {
        // Over HTTP, an `error` from the server means it closed our session
        // (a socket would have closed): start a new one.
        if (ev.type === 'error' && this.http) this.http.serverError = String(ev.message || '');
        this.emit(ev);
      }
    }
    // Handling events may have queued replies.
    if (events.length) this.transmit();
    this.flush();
    this.notifyStatus();
  }

  /** Moves the engine's outgoing frames to the transport in use: straight
   *  onto an open socket, or into the next HTTP request. */
  transmit() {
    if (this.ws) {
      if (this.ws.readyState !== 1) return;
      for (let frame = this.client.pollTransmit(); frame; frame = this.client.pollTransmit()) {
        this.ws.send(frame);
      }
      return;
    }
    const h = this.http;
    if (!h) return;
    let queued = false;
    for (let frame = this.client.pollTransmit(); frame; frame = this.client.pollTransmit()) {
      h.outbox.push(frame);
      queued = true;
    }
    if (queued) this.httpWake(h);
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
    this.restarting = false;
    this.stopProbe();
    this.stopHttp();
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

  /** A token to connect with, or `null` after asking to sign in again. */
  async connectToken() {
    let token;
    try {
      token = await this.getToken();
    } catch {
      token = null;
    }
    if (!token || tokenExpired(token, this.now())) {
      if (this.running) this.requireAuth('expired');
      return null;
    }
    return token;
  }

  /** Connects over the transport in use: the socket, or the HTTP fallback
   *  when sockets keep failing on this network. */
  async connect() {
    if (!this.running || this.ws || this.http || this.authBlocked) return;
    clearTimeout(this.timer);
    this.timer = null;
    if (globalThis.navigator && navigator.onLine === false) {
      // The `online` event brings us back.
      return;
    }
    if (this.mode === 'http') {
      this.startHttp();
      return;
    }
    const token = await this.connectToken();
    if (!token || !this.running || this.ws || this.http || this.mode !== 'ws') return;
    let ws;
    try {
      ws = new WebSocket(this.wsUrl(), [WS_PROTOCOL, WS_BEARER_PREFIX + token]);
    } catch {
      this.wsFailures += 1;
      this.probeHttp(token);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.wsReady = false;
    // A proxy may hold the upgrade (or the socket) without ever answering:
    // a handshake that does not complete in time is a failed one.
    const handshake = setTimeout(() => {
      if (this.ws === ws && !this.wsReady) this.socketFailed(ws, token);
    }, HANDSHAKE_TIMEOUT_MS);
    ws.onopen = () => {
      if (this.ws !== ws) return;
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
      clearTimeout(handshake);
      const ready = this.wsReady;
      this.ws = null;
      this.client.disconnected();
      this.pump();
      const authClose = ev.code === 1008 && /token|auth/i.test(ev.reason || '');
      if (authClose) {
        this.requireAuth('refused');
      } else if (!ready) {
        // The socket failed before the server said `peer`: the network,
        // the token, or a network that breaks WebSockets. A browser does
        // not say which, so ask over plain HTTP (same origin, same token).
        this.restarting = false;
        this.wsFailures += 1;
        this.probeHttp(token);
      } else {
        this.scheduleReconnect();
      }
    };
  }

  /** Gives up on a socket whose handshake did not complete. */
  socketFailed(ws, token) {
    if (this.ws !== ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000, 'handshake timeout');
    } catch {
      // Already closed.
    }
    this.restarting = false;
    this.client.disconnected();
    this.pump();
    this.wsFailures += 1;
    this.probeHttp(token);
  }

  /** After a failed socket: is the server reachable over plain HTTP with
   *  this token? A 401 means sign in again; a server that answers while
   *  sockets keep failing means this network breaks WebSockets, and the
   *  session switches to the HTTP fallback. Otherwise, back off. */
  async probeHttp(token) {
    let reachable = false;
    try {
      const res = await fetch(this.baseUrl + '/api/cases', {
        headers: { Authorization: 'Bearer ' + token },
        cache: 'no-store',
        credentials: 'omit',
      });
      if (res.status === 401) {
        this.requireAuth('refused');
        return;
      }
      // The API's own answer, not a captive portal's page.
      reachable = res.ok && (res.headers.get('content-type') || '').includes('json');
    } catch {
      // Network: back off.
    }
    if (!this.running || this.ws || this.http || this.authBlocked) return;
    if (reachable && this.mode === 'ws' && this.wsFailures >= WS_FAILURES_BEFORE_HTTP) {
      this.switchToHttp();
      return;
    }
    this.scheduleReconnect();
  }

  requireAuth(reason) {
    this.authBlocked = true;
    this.restarting = false;
    this.stopHttp();
    this.notifyStatus();
    this.emit({ type: 'auth', reason });
    this.onAuthRequired(reason);
  }

  scheduleReconnect() {
    if (!this.running || this.timer || this.authBlocked) return;
    const delay = backoff(this.attempt);
    this.attempt = Math.min(this.attempt + 1, 16);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /** Reconnects now (the network came back, or a new token). Over the
   *  HTTP fallback this is also the moment to try the socket again: the
   *  phone may be on another network. */
  reconnectNow() {
    if (!this.running) return;
    this.attempt = 0;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.mode === 'http') {
      this.stopHttp();
      this.connect();
      this.wsProbeAttempt = 0;
      this.probeSocket();
    } else if (!this.ws) {
      this.connect();
    }
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
    if (!this.crashed) this.client.disconnected();
    this.pump();
    if (this.running) this.scheduleReconnect();
  }

  /** The network is gone: every transport stops until `online`. */
  goOffline() {
    this.restarting = false;
    this.stopProbe();
    this.stopHttp();
    this.dropSocket();
  }

  // ---- the HTTP fallback (POST /sync/http)
  //
  // The same protocol frames as the socket, length-prefixed, in request
  // and response bodies. The server keeps one session per device between
  // requests, so the engine sees one connection: `connected()` once, then
  // frames both ways. Rules of this loop:
  //   - everything the engine has to send goes in the next request, sent
  //     at once; with nothing to send the request long-polls (`?wait=`);
  //   - the server's session lives on only if every response arrived: a
  //     request that failed or was cancelled may have taken frames that
  //     never reached us, and the sync protocol does not resend what it
  //     believes sent. So after any such request the engine starts over
  //     (`disconnected()`, `connected()`: a new `join`); the server ends
  //     the old session when it sees that join ("unexpected join") and
  //     the next join opens a new one;
  //   - an `error` from the server means it ended our session (a socket
  //     would have closed): start over the same way;
  //   - the server drops a session idle for 120 s: after a long gap
  //     (a sleeping phone), start over before sending.
  // A long poll holds the device's session on the server, so a request
  // sent beside it would wait for it. A local edit during an idle long
  // poll cancels the poll (and starts over, see above); while the person
  // is editing, polls are short instead, so that edits never wait long
  // and nothing is cancelled.

  /** Sockets keep failing here while plain HTTP works: sync over HTTP,
   *  and try the socket again now and then. */
  switchToHttp() {
    this.mode = 'http';
    this.attempt = 0;
    this.wsProbeAttempt = 0;
    this.emit({ type: 'transport', transport: 'http' });
    this.connect();
    this.scheduleSocketProbe();
  }

  /** A socket works again: stop the HTTP loop and sync over the socket. */
  switchToSocket() {
    this.mode = 'ws';
    this.wsFailures = 0;
    this.attempt = 0;
    this.restarting = true;
    this.stopProbe();
    this.stopHttp();
    this.emit({ type: 'transport', transport: 'ws' });
    this.connect();
  }

  syncHttpUrl(wait) {
    return `${this.baseUrl}/sync/http${wait > 0 ? `?wait=${wait}` : ''}`;
  }

  startHttp() {
    if (!this.running || this.http || this.ws || this.authBlocked) return;
    const h = {
      outbox: [],
      reset: true,
      inFlight: null,
      lastStart: 0,
      failures: 0,
      joinRetries: 0,
      serverError: null,
      cancelSleep: null,
    };
    this.http = h;
    this.httpLoop(h).catch((e) => {
      if (this.trapped(e)) return;
      // An unexpected failure of the loop itself: start again later.
      if (this.http !== h) return;
      this.stopHttp();
      this.scheduleReconnect();
    });
  }

  /** Stops the HTTP loop (cancelling the request in flight) and tells the
   *  engine the connection is gone. */
  stopHttp() {
    const h = this.http;
    if (!h) return;
    this.http = null;
    h.inFlight?.controller.abort();
    h.cancelSleep?.();
    if (!this.crashed) this.client.disconnected();
    this.pump();
  }

  /** There are frames to send: a long poll in flight would hold them for
   *  up to its whole wait, so cancel it. A short request in flight is
   *  simply followed by the next one. */
  httpWake(h) {
    const req = h.inFlight;
    if (req && req.wait >= HTTP_LONG_POLL_MS && !req.kicked) {
      req.kicked = true;
      req.controller.abort();
    }
  }

  httpSleep(h, ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        h.cancelSleep = null;
        resolve();
      }
      h.cancelSleep = done;
    });
  }

  /** One HTTP request's worth of frames (the server takes a bounded body). */
  takeHttpBatch(h) {
    let n = 0;
    let bytes = 0;
    while (n < h.outbox.length && n < HTTP_MAX_FRAMES) {
      const len = h.outbox[n].length + 4;
      if (n > 0 && bytes + len > HTTP_MAX_BYTES) break;
      bytes += len;
      n += 1;
    }
    return h.outbox.splice(0, n);
  }

  async httpLoop(h) {
    while (this.http === h) {
      if (h.lastStart && Date.now() - h.lastStart > HTTP_SESSION_GAP_MS) {
        h.reset = true;
        this.restarting = this.client.isConnected();
      }
      if (h.reset) {
        h.reset = false;
        h.outbox = [];
        h.lastStart = 0;
        this.client.disconnected();
        this.client.connected();
        // Moves the join into the outbox.
        this.pump();
      }
      const token = await this.connectToken();
      if (this.http !== h) return;
      if (!token) return;
      const batch = this.takeHttpBatch(h);
      const active = Date.now() - this.lastLocalEdit < HTTP_ACTIVE_FOR_MS;
      const wait = batch.length > 0 ? 0 : active ? HTTP_ACTIVE_POLL_MS : HTTP_LONG_POLL_MS;
      const upload = encodeFrames(batch);
      const req = { controller: new AbortController(), wait, kicked: false };
      h.inFlight = req;
      // A request the network swallows must not hang the loop: the
      // response must start within its wait plus some slack (and time to
      // upload at 10 KB/s), and its body must keep arriving.
      let timeout = setTimeout(() => req.controller.abort(), wait + HTTP_REQUEST_SLACK_MS + Math.ceil(upload.length / 10));
      const stillArriving = () => {
        clearTimeout(timeout);
        timeout = setTimeout(() => req.controller.abort(), HTTP_REQUEST_SLACK_MS);
      };
      h.lastStart = Date.now();
      let status = 0;
      let body = null;
      try {
        const res = await fetch(this.syncHttpUrl(wait), {
          method: 'POST',
          headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/octet-stream' },
          body: upload,
          cache: 'no-store',
          credentials: 'omit',
          signal: req.controller.signal,
        });
        status = res.status;
        // A captive portal answers with its own page: only our framing counts.
        const type = res.headers.get('content-type') || '';
        if (res.ok && type.startsWith('application/octet-stream')) body = await readBody(res, stillArriving);
      } catch {
        status = 0;
      } finally {
        clearTimeout(timeout);
        if (h.inFlight === req) h.inFlight = null;
      }
      if (this.http !== h) return;

      if (status === 401) {
        this.requireAuth('refused');
        return;
      }
      let frames = null;
      if (status === 200 && body) {
        try {
          frames = decodeFrames(body);
        } catch {
          frames = null;
        }
      }
      if (!frames) {
        // Cancelled for local edits, or failed: what this request carried
        // and what its response held are unknown, so start over.
        h.reset = true;
        if (req.kicked) {
          this.restarting = true;
          continue;
        }
        this.restarting = false;
        this.client.disconnected();
        this.pump();
        h.failures += 1;
        await this.httpSleep(h, backoff(h.failures - 1));
        continue;
      }

      this.flushLocal();
      for (const frame of frames) {
        try {
          this.client.receive(frame);
        } catch (e) {
          if (this.trapped(e)) return;
          this.emit({ type: 'error', message: String(e && e.message ? e.message : e) });
        }
      }
      this.pump();
      if (this.http !== h) return;

      if (h.serverError !== null) {
        // The server ended our session. A lost session (dropped while
        // idle, or still open from before) is answered at once with a new
        // join; anything else backs off, as a closed socket would.
        const message = h.serverError;
        h.serverError = null;
        h.reset = true;
        const aboutJoin = /join|session/i.test(message);
        if (aboutJoin && h.joinRetries < 2) {
          h.joinRetries += 1;
          this.restarting = true;
          continue;
        }
        this.restarting = false;
        this.client.disconnected();
        this.pump();
        h.failures += 1;
        await this.httpSleep(h, backoff(h.failures - 1));
        continue;
      }
      if (this.client.isConnected()) h.joinRetries = 0;
    }
  }

  // ---- probing the socket while on HTTP

  scheduleSocketProbe() {
    if (!this.running || this.mode !== 'http' || this.probeTimer || this.probe) return;
    const ceiling = Math.min(WS_PROBE_MAX_MS, WS_PROBE_BASE_MS * 2 ** this.wsProbeAttempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.wsProbeAttempt = Math.min(this.wsProbeAttempt + 1, 8);
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      this.probeSocket();
    }, delay);
  }

  stopProbe() {
    clearTimeout(this.probeTimer);
    this.probeTimer = null;
    const p = this.probe;
    if (!p) return;
    this.probe = null;
    p.end();
  }

  /** Tries a socket beside the HTTP loop, with a throwaway engine that has
   *  no documents: the probe succeeds when the server answers its `join`
   *  with `peer`, exactly the handshake the real connection needs. Then
   *  the session switches back to the socket. */
  async probeSocket() {
    if (!this.running || this.mode !== 'http' || this.probe || this.authBlocked) return;
    clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (globalThis.navigator && navigator.onLine === false) return;
    const token = await this.connectToken();
    if (!token || !this.running || this.mode !== 'http' || this.probe) return;
    let engine = null;
    let ws = null;
    let timer = null;
    const probe = {
      end() {
        clearTimeout(timer);
        if (ws) {
          ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
          try {
            ws.close(1000, 'probe');
          } catch {
            // Already closed.
          }
        }
        try {
          engine?.free();
        } catch {
          // Already freed.
        }
        engine = null;
      },
    };
    this.probe = probe;
    const finish = (works) => {
      if (this.probe !== probe) return;
      this.probe = null;
      probe.end();
      if (works) this.switchToSocket();
      else this.scheduleSocketProbe();
    };
    try {
      engine = new CasesyncClient(token, this.identity.storageId, randomBytes(16));
      ws = new WebSocket(this.wsUrl(), [WS_PROTOCOL, WS_BEARER_PREFIX + token]);
    } catch {
      finish(false);
      return;
    }
    ws.binaryType = 'arraybuffer';
    timer = setTimeout(() => finish(false), HANDSHAKE_TIMEOUT_MS);
    ws.onopen = () => {
      engine.connected();
      for (let f = engine.pollTransmit(); f; f = engine.pollTransmit()) ws.send(f);
    };
    ws.onmessage = (ev) => {
      try {
        engine.receive(new Uint8Array(ev.data));
      } catch {
        finish(false);
        return;
      }
      const events = JSON.parse(engine.takeEvents());
      if (events.some((e) => e.type === 'connected')) finish(true);
      else if (events.some((e) => e.type === 'error')) finish(false);
    };
    ws.onerror = () => {};
    ws.onclose = () => finish(false);
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
