// A real `casesync serve` for the binding's Node tests and the browser
// tests: a fresh data directory, a port the OS picks, tokens minted with
// the CLI, and the HTTP API.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const clientRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const repoRoot = resolve(clientRoot, '..');
export const distDir = join(clientRoot, 'dist');

let built = false;

/** The server binary: `CASESYNC_BIN`, or a debug build made once per run
 *  (cargo does nothing when it is up to date). */
export function serverBinary() {
  if (process.env.CASESYNC_BIN) return process.env.CASESYNC_BIN;
  if (!built) {
    execFileSync('cargo', ['build', '--quiet', '-p', 'casesync-server', '--bin', 'casesync'], {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    built = true;
  }
  return join(repoRoot, 'target', 'debug', 'casesync');
}

/** Starts a server on a free port with a temporary data directory. */
export async function startServer({ appDir = distDir } = {}) {
  const bin = serverBinary();
  const dataDir = mkdtempSync(join(tmpdir(), 'casesync-test-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir];
  if (appDir) args.push('--app-dir', appDir);
  const child = spawn(bin, args, {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CASESYNC_LOG: process.env.CASESYNC_LOG || 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (process.env.CASESYNC_TEST_LOG) process.stderr.write(d);
  });
  const url = await new Promise((resolvePromise, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${stderr}`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolvePromise(m[1].replace(/\/$/, ''));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${stderr}`));
    });
  });
  child.stdout.resume();
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(url + '/healthz')).ok) break;
    } catch {
      // Not yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  const server = {
    url,
    dataDir,
    child,
    /** A development token for `user` on `device`. */
    token(user, device, ttl = '1h') {
      return execFileSync(bin, ['token', '--data-dir', dataDir, '--user', user, '--device', device, '--ttl', ttl], {
        encoding: 'utf8',
      }).trim();
    },
    async createCase(token, values) {
      const res = await fetch(url + '/api/cases', {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
        body: JSON.stringify(values ? { values } : {}),
      });
      if (res.status !== 201) throw new Error(`create case: HTTP ${res.status}`);
      return (await res.json()).id;
    },
    /** An invitation to a case: `{ id, code, link }`. */
    async invite(token, caseUrl) {
      const res = await fetch(url + '/api/cases/' + encodeURIComponent(caseUrl) + '/invitations', {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
        body: '{}',
      });
      if (res.status !== 201) throw new Error(`invite: HTTP ${res.status}`);
      return res.json();
    },
    async getCase(token, id) {
      const res = await fetch(url + '/api/cases/' + encodeURIComponent(id), {
        headers: { Authorization: 'Bearer ' + token },
      });
      if (!res.ok) throw new Error(`get case: HTTP ${res.status}`);
      return res.json();
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/** Fails early, with the command to run, when the app was not built. */
export function requireDist() {
  if (!existsSync(join(distDir, 'index.html')) || !existsSync(join(distDir, 'pkg'))) {
    throw new Error('client-wasm/dist is missing: run scripts/build-app.sh first');
  }
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function until(fn, ms = 10_000, what = 'condition') {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}
