// A stock automerge-repo client (Repo + WebSocketClientAdapter, nothing of
// casesync's) that talks to a casesync server the way a third-party app
// would. Driven by server/tests/interop_js.rs.
//
//   CASESYNC_TOKEN=<jwt> node interop-client.mjs '<json config>'
//
// The config (argv[2]) is JSON:
//   wsUrl        "ws://127.0.0.1:PORT/sync" (the token is added as ?token=)
//   peerId       "user:<sub>:<device>", matching the token
//   storage      true: an in-memory storage adapter, so the client announces
//                a storageId and isEphemeral=false like an app with
//                IndexedDB, and gossips remote heads (it subscribes to the
//                server storage's heads). false: an ephemeral client.
//   waitForServer  true (default): wait until the server is a connected
//                peer before any find, so that a slow start cannot turn
//                into the adapter's "no peer after 1 s, unavailable"
//   unavailable  ["automerge:…", …]: documents repo.find() must refuse as
//                unavailable, tried first, on the same connection
//   docUrl       "automerge:…": the case to find and edit (optional)
//   set          { "military.unit": "…" }: registers, assigned as plain JS
//                strings (what a stock client does; automerge 3 stores
//                them as Text)
//   append       { "disappearance.circumstances": "…" }: appended to an
//                existing Text with Automerge.splice, in the same change
//   waitFor      { "military.call_sign": "…" }: values to wait for
//   timeoutMs    bound on every wait
//
// With `storage`, after its change the client waits until the server's
// storage reports heads (remote-heads-changed) whose document has the
// change: the stock way to know an edit is saved on the server.
//
// On success it prints one JSON line on stdout:
//   { peerId, unavailable: { url: error message | "found" },
//     serverPeer, serverStorageId, before, after, heads, savedHeads }
// where documents are plain JSON in the shape of GET /api/cases/{id}.
// On failure it prints the reason on stderr and exits 1.

import * as Automerge from "@automerge/automerge"
import { Repo, decodeHeads } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

function fail(message) {
  process.stderr.write(`interop-client: ${message}\n`)
  process.exit(1)
}

function getPath(tree, path) {
  return path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), tree)
}

// The document as plain JSON in the shape of casesync's own view
// (`GET /api/cases/{id}`): Text and scalar strings (which automerge 3 hands
// out as ImmutableString) as strings, timestamps as milliseconds, counters
// as numbers, bytes as their length.
function plain(value) {
  if (value == null || typeof value !== "object") return value ?? null
  if (Automerge.isImmutableString(value)) return value.toString()
  if (Automerge.isCounter(value)) return value.value
  if (value instanceof Date) return value.getTime()
  if (value instanceof Uint8Array) return { $bytes_len: value.length }
  if (Array.isArray(value)) return value.map(plain)
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
}

function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// Resolves once `holds()` is true, checking now and on every `events` of
// `handle`.
function until(handle, events, holds, ms, what) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => {
        if (holds()) {
          for (const e of events) handle.off(e, check)
          resolve()
        }
      }
      for (const e of events) handle.on(e, check)
      check()
    }),
    ms,
    what
  )
}

// The smallest storage adapter (StorageAdapterInterface), in memory.
class MemoryStorage {
  constructor() {
    this.data = new Map()
  }
  async load(key) {
    return this.data.get(key.join("/"))
  }
  async save(key, value) {
    this.data.set(key.join("/"), value)
  }
  async remove(key) {
    this.data.delete(key.join("/"))
  }
  async loadRange(prefix) {
    const p = prefix.join("/")
    return [...this.data]
      .filter(([k]) => k === p || k.startsWith(p + "/"))
      .map(([k, data]) => ({ key: k.split("/"), data }))
  }
  async removeRange(prefix) {
    const p = prefix.join("/")
    for (const k of [...this.data.keys()]) {
      if (k === p || k.startsWith(p + "/")) this.data.delete(k)
    }
  }
}

async function main() {
  const token = process.env.CASESYNC_TOKEN
  if (!token) fail("CASESYNC_TOKEN is not set")
  let config
  try {
    config = JSON.parse(process.argv[2] ?? "")
  } catch (e) {
    fail(`argv[2] must be the JSON config: ${e.message}`)
  }
  const {
    wsUrl,
    peerId,
    storage = false,
    waitForServer = true,
    unavailable = [],
    docUrl,
    set = {},
    append = {},
    waitFor = {},
    timeoutMs = 20000,
  } = config

  const url = `${wsUrl}?token=${encodeURIComponent(token)}`
  const repo = new Repo({
    network: [new WebSocketClientAdapter(url)],
    peerId,
    ...(storage ? { storage: new MemoryStorage(), enableRemoteHeadsGossiping: true } : {}),
  })
  const out = { peerId, unavailable: {} }

  if (waitForServer) {
    await withTimeout(
      new Promise((resolve) => {
        if (repo.peers.length > 0) return resolve()
        repo.networkSubsystem.once("peer", () => resolve())
      }),
      timeoutMs,
      "the server to accept our join"
    )
  }

  for (const missing of unavailable) {
    try {
      await withTimeout(repo.find(missing), timeoutMs, `repo.find(${missing})`)
      out.unavailable[missing] = "found"
    } catch (e) {
      if (String(e.message).startsWith("timed out")) throw e
      out.unavailable[missing] = String(e.message)
    }
  }

  if (docUrl) {
    const handle = await withTimeout(repo.find(docUrl), timeoutMs, `repo.find(${docUrl})`)
    out.before = plain(handle.doc())
    out.serverPeer = repo.peers[0] ?? null
    const serverStorageId = out.serverPeer ? repo.getStorageIdOfPeer(out.serverPeer) : undefined
    out.serverStorageId = serverStorageId ?? null
    if (storage) {
      if (!serverStorageId) throw new Error("the server announced no storageId")
      repo.subscribeToRemotes([serverStorageId])
    }

    handle.change((d) => {
      for (const [path, value] of Object.entries(set)) {
        const keys = path.split(".")
        const last = keys.pop()
        const parent = keys.reduce((v, k) => v[k], d)
        if (parent == null || typeof parent !== "object") {
          throw new Error(`no container for ${path}`)
        }
        parent[last] = value
      }
      for (const [path, text] of Object.entries(append)) {
        const current = getPath(d, path)
        // A Text reads as a plain string; an ImmutableString is a register.
        if (typeof current !== "string") throw new Error(`${path} is not a Text`)
        Automerge.splice(d, path.split("."), current.length, 0, text)
      }
    })
    out.heads = handle.heads()

    if (storage) {
      // The server storage's heads include our change when the document
      // they name has it.
      const mine = (doc) =>
        Object.entries(set).every(([p, v]) => getPath(doc, p) === v) &&
        Object.entries(append).every(([p, t]) => String(getPath(doc, p)).includes(t))
      await until(
        handle,
        ["remote-heads", "change"],
        () => {
          const info = handle.getSyncInfo(serverStorageId)
          if (!info) return false
          const heads = decodeHeads(info.lastHeads)
          const doc = handle.doc()
          if (!Automerge.hasHeads(doc, heads)) return false
          if (!mine(plain(Automerge.view(doc, heads)))) return false
          out.savedHeads = info.lastHeads
          return true
        },
        timeoutMs,
        "the server storage's heads to include our change"
      )
    }

    await until(
      handle,
      ["change"],
      () => {
        const doc = plain(handle.doc())
        return Object.entries(waitFor).every(([path, want]) => getPath(doc, path) === want)
      },
      timeoutMs,
      `the other device's edit ${JSON.stringify(waitFor)}`
    )
    out.after = plain(handle.doc())
  }

  await new Promise((resolve) => process.stdout.write(JSON.stringify(out) + "\n", resolve))
  await withTimeout(repo.shutdown(), timeoutMs, "repo.shutdown()")
  process.exit(0)
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)))
