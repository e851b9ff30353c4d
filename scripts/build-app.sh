#!/usr/bin/env bash
# Builds the field app into client-wasm/dist (served by casesync at /app/):
# the wasm (scripts/build-wasm.sh), then the app files, the JS glue and the
# browser package, and a service worker whose cache list and build id match
# exactly these files.
#
#   client-wasm/dist/
#     index.html app.js editor.js … style.css sw.js manifest.webmanifest
#     i18n/*.json icons/*
#     js/casesync.js
#     pkg/casesync_client_wasm.js pkg/casesync_client_wasm_bg.wasm
#
# SKIP_WASM=1 reuses an existing client-wasm/pkg (app-only changes).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_WASM:-0}" != 1 ] || [ ! -f client-wasm/pkg/casesync_client_wasm_bg.wasm ]; then
  ./scripts/build-wasm.sh
fi

dist=client-wasm/dist
rm -rf "$dist"
mkdir -p "$dist/js" "$dist/pkg"
cp -R client-wasm/app/. "$dist/"
cp client-wasm/js/casesync.js "$dist/js/"
cp client-wasm/pkg/casesync_client_wasm.js client-wasm/pkg/casesync_client_wasm_bg.wasm "$dist/pkg/"

# The service worker caches every file of the shell (not itself), under a
# build id that changes whenever any of them does.
node --input-type=module - "$dist" <<'JS'
import { readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, relative } from 'node:path';
const dist = process.argv[2];
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else files.push(relative(dist, p).split('\\').join('/'));
  }
})(dist);
const shell = files.filter((f) => f !== 'sw.js');
const hash = createHash('sha256');
for (const f of shell) hash.update(f).update(readFileSync(join(dist, f)));
const build = hash.digest('hex').slice(0, 16);
const list = ['./', ...shell.map((f) => './' + f)];
const swPath = join(dist, 'sw.js');
let sw = readFileSync(swPath, 'utf8');
const before = sw;
sw = sw.replace(/^const BUILD = .*;$/m, `const BUILD = '${build}';`);
sw = sw.replace(/^const SHELL = .*;$/m, `const SHELL = ${JSON.stringify(list)};`);
if (sw === before) throw new Error('sw.js: BUILD/SHELL lines not found');
writeFileSync(swPath, sw);
console.log(`client-wasm/dist: ${shell.length + 1} files, build ${build}`);
JS

raw=$(stat -c %s "$dist/pkg/casesync_client_wasm_bg.wasm")
gz=$(gzip -9 -c "$dist/pkg/casesync_client_wasm_bg.wasm" | wc -c)
echo "client-wasm/dist: wasm ${raw} bytes raw, ${gz} bytes gzipped"
