// Unit tests of the JS binding (client-wasm built for Node, `pkg-node`):
// what a JS caller sees: peer ids from tokens, clear errors, the schema,
// sync through a real `casesync serve`, conflicts and status counters.

import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { engine, NodeDevice } from '../e2e/support/engine.mjs';
import { startServer, until } from '../e2e/support/server.mjs';

const { CasesyncClient } = engine;

// An unsigned token with the claims the client reads (the server would
// refuse it; the client only derives the peer id it must announce).
function fakeToken(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'EdDSA', typ: 'JWT' })}.${enc(claims)}.c2ln`;
}

const ACTOR = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
const DOC = 'automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu';

test('the peer id comes from the token: user:<sub>:<device>', () => {
  const c = new CasesyncClient(fakeToken({ sub: 'olena', device: 'phone-1' }), 'store-1', ACTOR);
  assert.equal(c.peerId(), 'user:olena:phone-1');
  assert.equal(c.user(), 'olena');
  assert.equal(c.actor(), '0102030405060708090a0b0c0d0e0f10');
  assert.deepEqual(JSON.parse(c.status()), { online: false, unacknowledged: 0 });
  c.free();
});

test('a token that is not a JWT, or lacks its claims, is refused clearly', () => {
  assert.throws(() => new CasesyncClient('not-a-token', 's', ACTOR), /token is not a readable JWT/);
  assert.throws(() => new CasesyncClient(fakeToken({ sub: 'olena' }), 's', ACTOR), /token is not a readable JWT/);
  assert.throws(
    () => new CasesyncClient(fakeToken({ sub: 'olena', device: 'phone' }), 's', new Uint8Array(8)),
    /actor id must be 16 random bytes/,
  );
});

test('malformed edits are refused with a message that says what is wrong', () => {
  const c = new CasesyncClient(fakeToken({ sub: 'olena', device: 'phone' }), 's', ACTOR);
  c.openNew(DOC);
  const refused = (edit) => {
    try {
      c.edit(DOC, typeof edit === 'string' ? edit : JSON.stringify(edit), Date.now());
    } catch (e) {
      return e.message;
    }
    assert.fail(`accepted ${JSON.stringify(edit)}`);
  };
  assert.match(refused('{"op":'), /not valid JSON/);
  assert.match(refused({ op: 'explode' }), /not valid JSON of a known shape/);
  assert.match(refused({ op: 'set', path: 'military.nonsense', value: 'x' }), /unknown field `military.nonsense`/);
  assert.match(refused({ op: 'set', path: 'disappearance.date', value: '2023-13' }), /invalid value for `disappearance.date`/);
  assert.match(refused({ op: 'set', path: 'person.height_cm', value: 'tall' }), /expected an integer/);
  assert.match(
    refused({ op: 'add_item', collection: 'timeline', id: 'has space', values: {} }),
    /only ASCII letters, digits/,
  );
  assert.match(refused({ op: 'add_item', collection: 'gossip', id: 'a1', values: {} }), /unknown collection `gossip`/);
  assert.match(
    refused({ op: 'add_status_claim', id: 's1', status: 'presumed', claimed_by: 'x', statement: '' }),
    /unknown status "presumed"/,
  );
  // A well-formed edit to a case the server has not sent yet: the model
  // refuses it instead of writing outside the template.
  assert.ok(refused({ op: 'set', path: 'military.unit', value: '93' }).length > 0);
  // And an unknown document is named.
  assert.throws(
    () => c.edit('automerge:2YWSpxR1FV5Qt994EeU8LZPwLHDu', '{"op":"set","path":"military.unit","value":"x"}', 0),
    /unknown document/,
  );
  assert.equal(JSON.parse(c.status()).unacknowledged, 0, 'refused edits leave nothing to send');
  c.free();
});

test('the schema names every section, collection, field kind and status', () => {
  const s = JSON.parse(engine.schema());
  assert.equal(s.version, 1);
  assert.deepEqual(s.statuses, ['missing', 'alive', 'wounded', 'captured', 'killed', 'remains_identified']);
  const sections = Object.fromEntries(s.sections.map((x) => [x.key, x]));
  for (const key of ['person', 'military', 'disappearance', 'burial']) assert.equal(sections[key].doc, 'case');
  assert.equal(sections.official_status.doc, 'coordination');
  const circumstances = sections.disappearance.fields.find((f) => f.key === 'circumstances');
  assert.deepEqual(circumstances, { key: 'circumstances', path: 'disappearance.circumstances', kind: 'narrative' });
  const names = s.collections.map((c) => c.name);
  for (const n of ['status_claims', 'sources', 'requests', 'requests.*.replies', 'dna', 'remains', 'timeline', 'attachments']) {
    assert.ok(names.includes(n), n);
  }
  const claims = s.collections.find((c) => c.name === 'status_claims');
  assert.deepEqual(
    claims.fields.map((f) => [f.key, f.kind]),
    [
      ['status', 'status'],
      ['claimed_by', 'string'],
      ['as_of', 'date'],
      ['statement', 'narrative'],
      ['source_ids', 'source-id set'],
    ],
  );
});

// ------------------------------------------------------------- with a server

let server;
let owner;

before(async () => {
  server = await startServer({ appDir: null });
  owner = server.token('olena', 'laptop');
});

after(async () => {
  await server?.stop();
});

function narrative(view) {
  return view.case.disappearance.circumstances;
}

test('two phones edit offline, sync through the server and converge with nothing lost', async () => {
  const url = await server.createCase(owner, { 'disappearance.circumstances': 'Last call near Bakhmut.' });
  const mother = new NodeDevice(server.token('olena', 'mother-phone'), 'mother');
  const sister = new NodeDevice(server.token('olena', 'sister-phone'), 'sister');
  try {
    for (const d of [mother, sister]) {
      d.client.openNew(url);
      assert.equal(d.read(url).loaded, false, 'nothing before the first sync');
      await d.connect(server.url);
      await until(() => d.read(url).loaded, 10_000, `${d.name} loads the case`);
      assert.equal(narrative(d.read(url)), 'Last call near Bakhmut.');
    }

    // Both go offline and edit the same narrative and different fields.
    mother.disconnect();
    sister.disconnect();
    const text = narrative(mother.read(url));
    mother.edit(url, { op: 'splice', path: 'disappearance.circumstances', pos: text.length, delete: 0, insert: ' Mother: he said they were moving east.' });
    mother.edit(url, { op: 'set', path: 'military.rank', value: 'Sergeant' });
    sister.edit(url, { op: 'splice', path: 'disappearance.circumstances', pos: 0, delete: 0, insert: 'Sister: 12 Feb. ' });
    sister.edit(url, { op: 'set', path: 'military.position', value: 'Driver' });
    sister.edit(url, { op: 'add_item', collection: 'timeline', id: 't-last-call', values: { date: '2023-02-12', title: 'Last call' } });

    // Offline: counters say what is waiting.
    assert.deepEqual(mother.status(), { online: false, unacknowledged: 2 });
    assert.deepEqual(sister.status(), { online: false, unacknowledged: 3 });
    assert.equal(mother.read(url).unacknowledged, 2);

    await mother.connect(server.url);
    await sister.connect(server.url);
    await until(
      () => {
        const a = mother.read(url);
        const b = sister.read(url);
        return JSON.stringify(a.heads) === JSON.stringify(b.heads) && a.unacknowledged === 0 && b.unacknowledged === 0;
      },
      15_000,
      'both phones converge and the server acknowledges everything',
    );
    for (const d of [mother, sister]) {
      const v = d.read(url);
      assert.equal(narrative(v), 'Sister: 12 Feb. Last call near Bakhmut. Mother: he said they were moving east.');
      assert.equal(v.case.military.rank, 'Sergeant');
      assert.equal(v.case.military.position, 'Driver');
      assert.equal(v.case.timeline['t-last-call'].title, 'Last call');
      assert.equal(v.case.timeline['t-last-call'].date, '2023-02-12');
      assert.deepEqual(v.conflicts, []);
      assert.deepEqual(d.status(), { online: true, unacknowledged: 0 });
    }
    assert.ok(mother.events.some((e) => e.type === 'connected'));
    assert.ok(
      mother.events.some((e) => e.type === 'changed' && e.document === url),
      'the sister\'s edits arrive as a change event',
    );

    // What the server holds is the same case.
    const onServer = await server.getCase(owner, url);
    assert.equal(onServer.case.disappearance.circumstances, narrative(mother.read(url)));
  } finally {
    mother.close();
    sister.close();
  }
});

test('a register set on two phones at once is a conflict with both values and their writers', async () => {
  const url = await server.createCase(owner);
  const a = new NodeDevice(server.token('olena', 'phone-a'), 'a');
  const b = new NodeDevice(server.token('olena', 'phone-b'), 'b');
  try {
    for (const d of [a, b]) {
      d.client.openNew(url);
      await d.connect(server.url);
      await until(() => d.read(url).loaded, 10_000, 'loaded');
      d.disconnect();
    }
    a.edit(url, { op: 'set', path: 'military.unit', value: '93rd brigade' });
    b.edit(url, { op: 'set', path: 'military.unit', value: '93rd mechanized brigade' });
    await a.connect(server.url);
    await b.connect(server.url);
    await until(() => a.read(url).conflicts.length && b.read(url).conflicts.length, 15_000, 'the conflict on both');
    for (const d of [a, b]) {
      const conflicts = d.read(url).conflicts;
      assert.equal(conflicts.length, 1);
      assert.equal(conflicts[0].path, 'military.unit');
      const byActor = Object.fromEntries(conflicts[0].values.map((v) => [v.actor, v.value]));
      assert.deepEqual(byActor, {
        [a.client.actor()]: '93rd brigade',
        [b.client.actor()]: '93rd mechanized brigade',
      });
    }
    // Setting it again resolves the conflict for everyone.
    a.edit(url, { op: 'set', path: 'military.unit', value: '93rd mechanized brigade' });
    await until(() => b.read(url).conflicts.length === 0 && a.read(url).unacknowledged === 0, 15_000, 'resolved');
    assert.equal(b.read(url).case.military.unit, '93rd mechanized brigade');
  } finally {
    a.close();
    b.close();
  }
});

test('saved bytes and sync state reopen the case offline with its counters', async () => {
  const url = await server.createCase(owner, { 'person.given_name': 'Andrii' });
  const token = server.token('olena', 'tablet');
  const actor = new Uint8Array(16).fill(7);
  const d = new NodeDevice(token, 'tablet', actor);
  d.client.openNew(url);
  await d.connect(server.url);
  await until(() => d.read(url).loaded, 10_000, 'loaded');
  d.edit(url, { op: 'set', path: 'person.family_name', value: 'Kovalenko' });
  await until(() => d.status().unacknowledged === 0, 10_000, 'acknowledged');
  d.disconnect();
  d.edit(url, { op: 'set', path: 'person.patronymic', value: 'Petrovych' });
  assert.deepEqual(JSON.parse(JSON.stringify(d.client.takeDirty())), [url], 'the driver is told what to store');
  const bytes = d.client.save(url);
  const syncState = d.client.syncState(url);
  assert.ok(syncState instanceof Uint8Array && syncState.length > 0);
  d.close();

  // The phone restarts with no network.
  const again = new engine.CasesyncClient(token, 'storage-tablet', actor);
  again.openSaved(url, bytes, syncState);
  const v = JSON.parse(again.read(url));
  assert.equal(v.case.person.given_name, 'Andrii');
  assert.equal(v.case.person.family_name, 'Kovalenko');
  assert.equal(v.case.person.patronymic, 'Petrovych');
  // The acknowledged edit stays acknowledged; only the offline one waits.
  assert.deepEqual(JSON.parse(again.status()), { online: false, unacknowledged: 1 });
  // New edits keep this device's actor.
  again.edit(url, JSON.stringify({ op: 'set', path: 'person.sex', value: 'male' }), Date.now());
  assert.equal(again.actor(), '07070707070707070707070707070707');
  assert.deepEqual(JSON.parse(again.status()), { online: false, unacknowledged: 2 });
  again.free();
});
