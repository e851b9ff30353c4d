// The Node build of client-wasm (`pkg-node`) and a minimal driver for it:
// a WebSocket (the `ws` package; Node 20 has no WebSocket) moving frames
// between the engine and a real server, as js/casesync.js does in
// browsers, without IndexedDB.

import { createRequire } from 'node:module';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { clientRoot, until } from './server.mjs';

const pkgNode = join(clientRoot, 'pkg-node');
if (!existsSync(join(pkgNode, 'casesync_client_wasm.js'))) {
  throw new Error('client-wasm/pkg-node is missing: run scripts/build-wasm.sh first');
}
// wasm-bindgen's nodejs target is CommonJS, and client-wasm/package.json
// says "type": "module"; a package.json in the generated directory says
// which it is (scripts/build-wasm.sh writes it; this covers an older pkg-node).
if (!existsSync(join(pkgNode, 'package.json'))) {
  writeFileSync(join(pkgNode, 'package.json'), '{"type":"commonjs"}\n');
}

export const engine = createRequire(import.meta.url)(join(pkgNode, 'casesync_client_wasm.js'));

/** One device: the engine plus a socket. */
export class NodeDevice {
  constructor(token, name, actor = randomBytes(16)) {
    this.name = name;
    this.actorBytes = actor;
    this.client = new engine.CasesyncClient(token, `storage-${name}`, actor);
    this.token = token;
    this.ws = null;
    this.events = [];
  }

  /** Connects to `serverUrl` the way a browser does: the token in the
   *  `casesync.bearer.` subprotocol. Resolves once the server said `peer`. */
  async connect(serverUrl) {
    const url = serverUrl.replace(/^http/, 'ws') + '/sync';
    const ws = new WebSocket(url, ['casesync.v1', 'casesync.bearer.' + this.token]);
    ws.binaryType = 'nodebuffer';
    this.ws = ws;
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws.on('message', (data) => {
      if (this.ws !== ws) return;
      this.client.receive(new Uint8Array(data));
      this.pump();
    });
    ws.on('close', () => {
      if (this.ws === ws) {
        this.ws = null;
        this.client.disconnected();
      }
    });
    this.client.connected();
    this.pump();
    await until(() => this.client.isConnected(), 10_000, `${this.name} connected`);
  }

  disconnect() {
    const ws = this.ws;
    this.ws = null;
    this.client.disconnected();
    if (ws) {
      // Frames still in flight belong to the old connection.
      ws.removeAllListeners('message');
      ws.close();
    }
  }

  pump() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      for (let f = this.client.pollTransmit(); f; f = this.client.pollTransmit()) this.ws.send(f);
    }
    this.events.push(...JSON.parse(this.client.takeEvents()));
  }

  edit(url, edit, now = Date.now()) {
    const hash = this.client.edit(url, JSON.stringify(edit), now);
    this.pump();
    return hash;
  }

  read(url) {
    return JSON.parse(this.client.read(url));
  }

  status() {
    return JSON.parse(this.client.status());
  }

  close() {
    this.disconnect();
    this.client.free();
  }
}
