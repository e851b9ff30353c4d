// Captures golden CBOR wire vectors from the stock JS automerge-repo
// websocket adapters, for casesync's Rust tests.
//
//   cd tests/js && npm ci && node capture-golden.mjs [outDir]
//
// outDir defaults to ../../sync-core/tests/golden (relative to this file).
//
// A stock server Repo (WebSocketServerAdapter on a `ws` WebSocketServer bound to
// 127.0.0.1, random port) talks to stock client Repos (WebSocketClientAdapter).
// Every WebSocket message on every server-side connection is tapped, in both
// directions, before the adapter sees it / exactly as the adapter hands it to
// `ws`. Nothing on the wire is produced by this script except where a vector is
// explicitly marked `constructed` (see CONSTRUCTED below and the README).
//
// Determinism: peer ids, storage ids and the unknown document id are fixed.
// The random sources that stock code reads *synchronously* inside a few calls
// (repo construction -> ephemeral sessionId via Math.random; repo.create() ->
// document id via uuid/crypto.randomFillSync, automerge actor id via
// crypto.getRandomValues, empty-change time via Date.now) are replaced by a
// seeded PRNG / fixed clock for the duration of that one synchronous call only
// (see `deterministically`). Everything else runs on real time and real
// randomness. Only `timestamp` in remote-heads-changed varies between runs.

import nodeCrypto from "node:crypto"
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import assert from "node:assert/strict"

import { WebSocketServer, WebSocket } from "ws"
import { decode as cborXDecode } from "cbor-x"
import {
  Repo,
  cbor as repoCbor,
  stringifyAutomergeUrl,
  parseAutomergeUrl,
} from "@automerge/automerge-repo"
import {
  WebSocketServerAdapter,
  WebSocketClientAdapter,
} from "@automerge/automerge-repo-network-websocket"

const here = path.dirname(fileURLToPath(import.meta.url))
const OUT_DIR = path.resolve(
  process.argv[2] ?? path.join(here, "../../sync-core/tests/golden")
)

// ---------------------------------------------------------------------------
// Fixed identities
// ---------------------------------------------------------------------------
const SERVER_PEER = "casesync-golden-server"
const PHONE_PEER = "user:olena:phone-1" // no storage => isEphemeral, no storageId
const LAPTOP_PEER = "user:olena:laptop-1" // has storage => storageId, !isEphemeral
const LEGACY_PEER = "user:olena:legacy-app-1" // raw ws client, bad protocol version
const SERVER_STORAGE_ID = "c0ffee00-0000-4000-8000-000000000001"
const LAPTOP_STORAGE_ID = "c0ffee00-0000-4000-8000-000000000002"
// A document id (16 bytes, base58check) that nobody has.
const MISSING_DOC_BYTES = Uint8Array.from([
  0xca, 0x5e, 0x5c, 0x00, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x04, 0x04,
])
const MISSING_DOC_URL = stringifyAutomergeUrl({ documentId: MISSING_DOC_BYTES })
// 2025-01-01T00:00:00Z; used as the automerge change time of the created doc.
const FIXED_EPOCH_MS = 1735689600000
const FIXED_EPOCH_S = FIXED_EPOCH_MS / 1000

// ---------------------------------------------------------------------------
// Determinism helpers
// ---------------------------------------------------------------------------
function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Run `fn` synchronously with seeded randomness and a frozen clock. */
function deterministically(seed, fn) {
  const rand = mulberry32(seed)
  const fill = buf => {
    const u8 = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
    for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(rand() * 256)
    return buf
  }
  const webCrypto = globalThis.crypto
  const saved = {
    getRandomValues: Object.getOwnPropertyDescriptor(webCrypto, "getRandomValues"),
    randomFillSync: nodeCrypto.randomFillSync,
    now: Date.now,
    random: Math.random,
  }
  Object.defineProperty(webCrypto, "getRandomValues", {
    value: fill,
    configurable: true,
    writable: true,
  })
  nodeCrypto.randomFillSync = fill
  Date.now = () => FIXED_EPOCH_MS
  Math.random = rand
  try {
    const result = fn()
    assert(!(result instanceof Promise), "deterministically() is sync-only")
    return result
  } finally {
    if (saved.getRandomValues)
      Object.defineProperty(webCrypto, "getRandomValues", saved.getRandomValues)
    else delete webCrypto.getRandomValues
    nodeCrypto.randomFillSync = saved.randomFillSync
    Date.now = saved.now
    Math.random = saved.random
  }
}

// ---------------------------------------------------------------------------
// In-memory storage adapter (StorageAdapterInterface), optionally pre-seeded
// with a fixed storage id (StorageSubsystem.id() reads ["storage-adapter-id"]).
// ---------------------------------------------------------------------------
class MemoryStorage {
  #data = new Map()
  constructor(storageId) {
    if (storageId)
      this.#data.set(
        JSON.stringify(["storage-adapter-id"]),
        new TextEncoder().encode(storageId)
      )
  }
  async load(key) {
    return this.#data.get(JSON.stringify(key))
  }
  async save(key, data) {
    this.#data.set(JSON.stringify(key), data)
  }
  async remove(key) {
    this.#data.delete(JSON.stringify(key))
  }
  #matches(prefix) {
    return [...this.#data.entries()]
      .map(([k, v]) => [JSON.parse(k), v])
      .filter(([k]) => prefix.every((p, i) => k[i] === p))
  }
  async loadRange(prefix) {
    return this.#matches(prefix).map(([key, data]) => ({ key, data }))
  }
  async removeRange(prefix) {
    for (const [k] of this.#matches(prefix)) this.#data.delete(JSON.stringify(k))
  }
}

// ---------------------------------------------------------------------------
// Wire tap
// ---------------------------------------------------------------------------
const frames = [] // { seq, conn, dir: "c2s"|"s2c", bytes: Buffer, msg, step }
let currentStep = "setup"
let connCount = 0

function toBuffer(data) {
  if (Buffer.isBuffer(data)) return Buffer.from(data) // copy
  if (data instanceof ArrayBuffer) return Buffer.from(new Uint8Array(data))
  if (ArrayBuffer.isView(data))
    return Buffer.from(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
  if (Array.isArray(data)) return Buffer.concat(data.map(toBuffer))
  throw new Error(`unexpected ws payload ${typeof data}`)
}

function record(conn, dir, data, isBinary) {
  const bytes = toBuffer(data)
  const msg = cborXDecode(bytes)
  const f = { seq: frames.length, conn, dir, bytes, msg, step: currentStep, isBinary }
  frames.push(f)
  const who = dir === "c2s" ? `${msg.senderId} -> server` : `server -> ${msg.targetId}`
  console.log(
    `[${String(f.seq).padStart(3)}] conn${conn} ${dir} ${msg.type.padEnd(27)} ${who}` +
      ` (${bytes.length} B${isBinary ? "" : ", TEXT FRAME"}) step=${currentStep}`
  )
}

/** Must be installed before the server adapter registers its own listener. */
function tapServer(wss) {
  wss.on("connection", socket => {
    const conn = ++connCount
    socket.on("message", (data, isBinary) => record(conn, "c2s", data, isBinary))
    const origSend = socket.send.bind(socket)
    socket.send = (data, ...rest) => {
      const isBinary = typeof data !== "string"
      record(conn, "s2c", data, isBinary)
      return origSend(data, ...rest)
    }
  })
}

const sleep = ms => new Promise(r => setTimeout(r, ms))

async function waitFor(pred, what, timeoutMs = 10000) {
  const start = Date.now()
  for (;;) {
    const f = frames.find(pred)
    if (f) return f
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

/** Wait until no frame has been recorded for `ms` milliseconds. */
async function quiet(ms = 400) {
  let n = frames.length
  for (;;) {
    await sleep(ms)
    if (frames.length === n) return
    n = frames.length
  }
}

// ---------------------------------------------------------------------------
// Output rendering
// ---------------------------------------------------------------------------
function toJsonValue(v) {
  if (v === undefined) return { $undefined: true }
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString("hex") }
  if (Array.isArray(v)) return v.map(toJsonValue)
  if (v instanceof Map)
    return { $map: [...v.entries()].map(([k, x]) => [toJsonValue(k), toJsonValue(x)]) }
  if (v && typeof v === "object") {
    const o = {}
    for (const [k, x] of Object.entries(v)) o[k] = toJsonValue(x)
    return o
  }
  return v
}

const vectors = [] // { name, bytes, origin, step, dir, note }
const counters = {}
function addVector(frameOrBytes, { origin = "captured", note = "", step, dir } = {}) {
  const bytes = Buffer.isBuffer(frameOrBytes) ? frameOrBytes : frameOrBytes.bytes
  const msg = cborXDecode(bytes)
  const n = (counters[msg.type] = (counters[msg.type] ?? 0) + 1)
  const name = `${msg.type}-${n}`
  vectors.push({
    name,
    bytes,
    msg,
    origin,
    note,
    step: frameOrBytes.step ?? step,
    dir: frameOrBytes.dir ?? dir,
  })
  return name
}

// ---------------------------------------------------------------------------
// Scenario
// ---------------------------------------------------------------------------
const pick = (pred, what) => {
  const f = frames.find(pred)
  if (!f) throw new Error(`no frame for ${what}`)
  return f
}
const isType = t => f => f.msg.type === t

async function main() {
  // --- server --------------------------------------------------------------
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
  await new Promise(r => wss.once("listening", r))
  tapServer(wss)
  const port = wss.address().port
  const url = `ws://127.0.0.1:${port}`
  console.log(`server listening on ${url}`)

  const serverAdapter = new WebSocketServerAdapter(wss)
  const server = deterministically(1, () =>
    new Repo({
      peerId: SERVER_PEER,
      network: [serverAdapter],
      storage: new MemoryStorage(SERVER_STORAGE_ID),
      // A typical sync server: never announce documents, only serve what is asked for.
      sharePolicy: async () => false,
      enableRemoteHeadsGossiping: true,
    })
  )

  // --- phone: join / peer ---------------------------------------------------
  currentStep = "phone-connect"
  const phoneAdapter = new WebSocketClientAdapter(url)
  const phone = deterministically(2, () =>
    new Repo({
      peerId: PHONE_PEER,
      network: [phoneAdapter],
      // no storage: storageId undefined, isEphemeral true
      enableRemoteHeadsGossiping: true,
    })
  )
  const joinPhone = await waitFor(f => f.msg.type === "join" && f.msg.senderId === PHONE_PEER, "phone join")
  const peerPhone = await waitFor(f => f.msg.type === "peer" && f.msg.targetId === PHONE_PEER, "peer to phone")
  await quiet()

  // --- phone subscribes to the laptop's storage id ---------------------------
  currentStep = "phone-subscribe-to-laptop-storage"
  phone.subscribeToRemotes([LAPTOP_STORAGE_ID])
  const subChange = await waitFor(
    f => f.msg.type === "remote-subscription-change" && f.step === currentStep,
    "remote-subscription-change"
  )
  await quiet()

  // --- phone creates a doc --------------------------------------------------
  currentStep = "phone-create-doc"
  const handle = deterministically(3, () => phone.create())
  const docId = handle.documentId
  await waitFor(f => f.msg.type === "sync" && f.step === currentStep && f.dir === "s2c", "server sync reply")
  await quiet()

  // --- phone changes the doc ------------------------------------------------
  currentStep = "phone-change-doc"
  handle.change(
    d => {
      d.title = "Case 2025-0001"
      d.status = "open"
      d.tags = ["golden"]
    },
    { time: FIXED_EPOCH_S + 60, message: "golden change" }
  )
  await waitFor(f => f.msg.type === "sync" && f.step === currentStep && f.dir === "c2s", "phone sync after change")
  await quiet()

  // --- phone asks for a document nobody has ----------------------------------
  currentStep = "phone-find-missing-doc"
  const missingDocId = parseAutomergeUrl(MISSING_DOC_URL).documentId
  const findMissing = phone.find(MISSING_DOC_URL).then(
    () => "found?!",
    e => `rejected: ${e.message}`
  )
  await waitFor(f => f.msg.type === "doc-unavailable" && f.step === currentStep, "doc-unavailable")
  console.log(`phone.find(missing) ${await findMissing}`)
  await quiet()

  // --- laptop (with storage) joins and fetches the doc -----------------------
  currentStep = "laptop-connect"
  const laptopAdapter = new WebSocketClientAdapter(url)
  const laptop = deterministically(4, () =>
    new Repo({
      peerId: LAPTOP_PEER,
      network: [laptopAdapter],
      storage: new MemoryStorage(LAPTOP_STORAGE_ID),
    })
  )
  const joinLaptop = await waitFor(f => f.msg.type === "join" && f.msg.senderId === LAPTOP_PEER, "laptop join")
  const peerLaptop = await waitFor(f => f.msg.type === "peer" && f.msg.targetId === LAPTOP_PEER, "peer to laptop")
  await quiet()

  currentStep = "laptop-find-doc"
  const laptopHandle = await laptop.find(handle.url)
  assert.equal(laptopHandle.doc().title, "Case 2025-0001")
  await waitFor(
    f =>
      f.msg.type === "remote-heads-changed" &&
      f.msg.targetId === PHONE_PEER &&
      f.msg.newHeads?.[LAPTOP_STORAGE_ID]?.heads?.length > 0,
    "remote-heads-changed with the laptop's heads"
  )
  await quiet()

  // --- ephemeral ------------------------------------------------------------
  currentStep = "phone-broadcast"
  handle.broadcast({ cursor: { path: ["title"], index: 4 }, user: "olena" })
  await waitFor(f => f.msg.type === "ephemeral" && f.dir === "s2c" && f.msg.targetId === LAPTOP_PEER, "ephemeral relay")
  await quiet()

  // --- error: a client offering only an unsupported protocol version ---------
  currentStep = "legacy-client-bad-version"
  const badJoin = repoCbor.encode({
    type: "join",
    senderId: LEGACY_PEER,
    peerMetadata: { isEphemeral: true },
    supportedProtocolVersions: ["2"],
  })
  const legacy = new WebSocket(url)
  legacy.binaryType = "arraybuffer"
  const legacyClosed = new Promise(r => legacy.on("close", (code, reason) => r({ code, reason: String(reason) })))
  await new Promise((r, j) => { legacy.once("open", r); legacy.once("error", j) })
  legacy.send(badJoin)
  const closeInfo = await legacyClosed
  await quiet()
  console.log(`server repo peers after the rejected join: ${JSON.stringify(server.peers)}`)
  console.log(`legacy socket closed by server: code=${closeInfo.code} reason=${JSON.stringify(closeInfo.reason)}`)
  await quiet()

  // --- leave: the stock adapters never send one; construct it ---------------
  // Sent over the phone's live socket to observe that the stock server
  // ignores it (NetworkSubsystem drops non-repo messages; no reply, no close).
  currentStep = "phone-leave-constructed"
  const leaveBytes = repoCbor.encode({ type: "leave", senderId: PHONE_PEER })
  const beforeLeave = frames.length
  phoneAdapter.socket.send(leaveBytes)
  await waitFor(f => f.msg.type === "leave", "leave frame at server")
  await quiet()
  const afterLeave = frames.slice(beforeLeave).filter(f => f.msg.type !== "leave")
  console.log(`frames in reply to leave: ${afterLeave.length}`)

  // --- shutdown: check that a stock disconnect sends nothing -----------------
  currentStep = "shutdown"
  const beforeShutdown = frames.length
  await phone.shutdown()
  await laptop.shutdown()
  await quiet()
  const shutdownFrames = frames.slice(beforeShutdown)
  console.log(`frames sent during client shutdown: ${shutdownFrames.length}`)
  // Repo.shutdown() also flush()es every cached handle and throws "DocHandle is
  // not ready" for the unavailable one on the server, so only disconnect there.
  server.networkSubsystem.disconnect()
  await new Promise(r => wss.close(r))

  // -------------------------------------------------------------------------
  // Select vectors
  // -------------------------------------------------------------------------
  const inStep = (step, dir, type, extra = () => true) => f =>
    f.step === step && f.dir === dir && f.msg.type === type && extra(f)

  addVector(joinPhone) // join-1
  addVector(joinLaptop) // join-2
  addVector(badJoin, {
    origin: "constructed",
    note: "sent by the raw ws client to provoke error-1",
    step: "legacy-client-bad-version",
    dir: "c2s",
  }) // join-3
  addVector(peerPhone) // peer-1
  addVector(peerLaptop) // peer-2
  addVector(subChange) // remote-subscription-change-1

  // sync vectors, in wire order
  const createC2s = frames.filter(inStep("phone-create-doc", "c2s", "sync"))
  assert(createC2s.length >= 2, "expected two phone->server syncs after create")
  addVector(createC2s[0], { note: "heads + bloom only, no changes yet" }) // sync-1
  addVector(pick(inStep("phone-create-doc", "s2c", "sync"), "server reply")) // sync-2
  addVector(createC2s[1], { note: "carries the create() empty change" }) // sync-3
  addVector(pick(inStep("phone-change-doc", "c2s", "sync"), "sync after change"), {
    note: "carries the handle.change() change",
  }) // sync-4
  addVector(pick(inStep("phone-find-missing-doc", "s2c", "sync"), "server sync before doc-unavailable"), {
    note: "server answers a request for a doc it lacks with a sync first",
  }) // sync-5
  addVector(pick(inStep("laptop-find-doc", "s2c", "sync"), "server sync to laptop"), {
    note: "server answers laptop's request with the whole doc",
  }) // sync-6

  addVector(pick(inStep("phone-find-missing-doc", "c2s", "request"), "request for missing doc")) // request-1
  addVector(pick(inStep("laptop-find-doc", "c2s", "request"), "laptop request")) // request-2
  addVector(pick(inStep("phone-find-missing-doc", "s2c", "doc-unavailable"), "doc-unavailable")) // doc-unavailable-1

  const rhc = frames.filter(
    f => f.msg.type === "remote-heads-changed" && f.msg.targetId === PHONE_PEER
  )
  const rhcEmpty = rhc.find(f => f.msg.newHeads[LAPTOP_STORAGE_ID].heads.length === 0)
  const rhcFull = rhc.find(f => f.msg.newHeads[LAPTOP_STORAGE_ID].heads.length > 0)
  if (rhcEmpty) addVector(rhcEmpty) // remote-heads-changed-1 (laptop's heads still empty)
  addVector(rhcFull) // remote-heads-changed-(1|2)

  addVector(pick(inStep("phone-broadcast", "c2s", "ephemeral"), "ephemeral from phone")) // ephemeral-1
  addVector(pick(inStep("phone-broadcast", "s2c", "ephemeral"), "ephemeral relay")) // ephemeral-2
  addVector(
    pick(inStep("phone-broadcast", "c2s", "ephemeral", f => f.msg.targetId === SERVER_PEER && f.conn !== joinPhone.conn), "laptop re-relay"),
    { note: "laptop relays the phone's message back; stock server drops it (senderId != socket's peer)" }
  ) // ephemeral-3

  addVector(pick(inStep("legacy-client-bad-version", "s2c", "error"), "error")) // error-1
  addVector(leaveBytes, {
    origin: "constructed",
    note: "stock 2.5.x never sends leave",
    step: "phone-leave-constructed",
    dir: "c2s",
  }) // leave-1

  // Sanity: every frame was a binary frame and re-encodes identically with
  // the repo's own encoder.
  for (const f of frames) assert(f.isBinary, `text frame seen: ${f.msg.type}`)
  for (const v of vectors) {
    const re = repoCbor.encode(v.msg)
    assert(Buffer.compare(Buffer.from(re), v.bytes) === 0, `${v.name} does not round-trip`)
  }

  // -------------------------------------------------------------------------
  // Write
  // -------------------------------------------------------------------------
  fs.mkdirSync(OUT_DIR, { recursive: true })
  for (const f of fs.readdirSync(OUT_DIR))
    if (/^[a-z-]+-\d+\.(hex|json)$/.test(f)) fs.unlinkSync(path.join(OUT_DIR, f))
  for (const v of vectors) {
    fs.writeFileSync(path.join(OUT_DIR, `${v.name}.hex`), v.bytes.toString("hex") + "\n")
    fs.writeFileSync(
      path.join(OUT_DIR, `${v.name}.json`),
      JSON.stringify(toJsonValue(v.msg), null, 2) + "\n"
    )
  }
  console.log("\nvectors:")
  for (const v of vectors)
    console.log(
      `  ${v.name.padEnd(30)} ${v.origin.padEnd(11)} ${v.dir} step=${v.step} ${v.bytes.length} B ${v.note}`
    )
  console.log(`\ncreated doc: ${docId}\nmissing doc: ${missingDocId}\nwrote ${vectors.length * 2} files to ${OUT_DIR}`)
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e)
    process.exit(1)
  }
)
