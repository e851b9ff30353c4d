// The HTTP fallback's framing in the JS glue (js/casesync.js), and that it
// is the server's: the Node build of the engine joins and syncs a case
// through `POST /sync/http` of a real `casesync serve`, with the glue's
// encodeFrames/decodeFrames on both sides of each request.

import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeFrames, decodeFrames } from '../js/casesync.js';
import { engine } from '../e2e/support/engine.mjs';
import { startServer } from '../e2e/support/server.mjs';

let server;

before(async () => {
  server = await startServer({ appDir: null });
});

after(async () => {
  await server?.stop();
});

test('frames are a 4-byte big-endian length and the bytes; broken framing is refused', () => {
  const frames = [Uint8Array.of(1, 2, 3), new Uint8Array(0), new Uint8Array(300).fill(9)];
  const body = encodeFrames(frames);
  assert.equal(body.length, 3 * 4 + 3 + 0 + 300);
  assert.deepEqual([...body.subarray(0, 7)], [0, 0, 0, 3, 1, 2, 3]);
  assert.deepEqual([...body.subarray(11, 15)], [0, 0, 1, 44]);
  assert.deepEqual(
    decodeFrames(body).map((f) => [...f]),
    frames.map((f) => [...f]),
  );
  assert.deepEqual(decodeFrames(new Uint8Array(0)), []);
  assert.equal(encodeFrames([]).length, 0);
  assert.throws(() => decodeFrames(body.subarray(0, 2)), /truncated frame length/);
  assert.throws(() => decodeFrames(body.subarray(0, 5)), /truncated frame/);
  assert.throws(() => decodeFrames(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0)), /truncated frame/);
  // A view into a larger buffer decodes from its own start.
  const padded = new Uint8Array(body.length + 8);
  padded.set(body, 8);
  assert.equal(decodeFrames(padded.subarray(8)).length, 3);
});

async function exchange(token, client, wait = 0) {
  const up = [];
  for (let f = client.pollTransmit(); f; f = client.pollTransmit()) up.push(f);
  const res = await fetch(`${server.url}/sync/http${wait ? `?wait=${wait}` : ''}`, {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/octet-stream' },
    body: encodeFrames(up),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/octet-stream');
  const frames = decodeFrames(new Uint8Array(await res.arrayBuffer()));
  for (const f of frames) client.receive(f);
  return JSON.parse(client.takeEvents());
}

test('the engine joins and syncs a case over POST /sync/http with this framing', async () => {
  const token = server.token('olena', 'phone-http');
  const url = await server.createCase(token, { 'military.unit': '93rd brigade' });
  const client = new engine.CasesyncClient(token, 'storage-http', randomBytes(16));
  client.openNew(url);
  client.connected();
  const read = () => JSON.parse(client.read(url));
  const events = [];
  for (let i = 0; i < 20 && !read().loaded; i++) events.push(...(await exchange(token, client, 200)));
  assert.ok(events.some((e) => e.type === 'connected'), JSON.stringify(events));
  assert.equal(read().case.military.unit, '93rd brigade');

  // An edit goes up and is acknowledged (durable on the server).
  client.edit(url, JSON.stringify({ op: 'set', path: 'military.rank', value: 'Sergeant' }), Date.now());
  assert.equal(JSON.parse(client.status()).unacknowledged, 1);
  for (let i = 0; i < 20 && JSON.parse(client.status()).unacknowledged > 0; i++) await exchange(token, client, 200);
  assert.equal(JSON.parse(client.status()).unacknowledged, 0);
  assert.equal((await server.getCase(token, url)).case.military.rank, 'Sergeant');

  // A second join on the same server session is refused with an error
  // that names the join: the glue starts over on exactly this answer.
  client.disconnected();
  client.connected();
  const refused = await exchange(token, client);
  const error = refused.find((e) => e.type === 'error');
  assert.ok(error, JSON.stringify(refused));
  assert.match(error.message, /join/);
  // And the next join opens a new session.
  client.disconnected();
  client.connected();
  assert.ok((await exchange(token, client)).some((e) => e.type === 'connected'));
  client.free();
});

test('a request without a valid token is refused with 401', async () => {
  const res = await fetch(`${server.url}/sync/http`, { method: 'POST', body: new Uint8Array(0) });
  assert.equal(res.status, 401);
});
