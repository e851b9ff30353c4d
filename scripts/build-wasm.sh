#!/usr/bin/env bash
# Builds client-wasm for browsers (client-wasm/pkg, used by the field app)
# and for Node (client-wasm/pkg-node, used by the binding's unit tests).
# Installs what it needs: the wasm32 target, wasm-bindgen-cli at exactly the
# version of the wasm-bindgen crate in Cargo.lock, and npm's binaryen.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (found: ${have:-none})"
  # --locked fails here (a pinned dependency is missing from the registry).
  cargo install wasm-bindgen-cli --version "$want"
fi

# Size matters more than speed on a cheap phone over a bad network: link-time
# optimisation across crates, one codegen unit, size-oriented optimisation.
# Only for this build (environment, not Cargo.toml): the server's release
# builds keep the workspace's profile. panic = "abort" is wasm32's default.
CARGO_PROFILE_RELEASE_LTO=true \
CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
CARGO_PROFILE_RELEASE_DEBUG=false \
  cargo build --release --target wasm32-unknown-unknown -p casesync-client-wasm
wasm=target/wasm32-unknown-unknown/release/casesync_client_wasm.wasm

rm -rf client-wasm/pkg client-wasm/pkg-node
wasm-bindgen --target web --out-dir client-wasm/pkg "$wasm"
wasm-bindgen --target nodejs --out-dir client-wasm/pkg-node "$wasm"
# The nodejs output is CommonJS, and client-wasm/package.json says
# "type": "module": the generated directory says what it is, so Node loads it.
echo '{"type":"commonjs"}' > client-wasm/pkg-node/package.json

# Debian's binaryen produces modules that fail to load; npm's works.
(cd client-wasm && npm ci --no-audit --no-fund >/dev/null)
opt=client-wasm/node_modules/.bin/wasm-opt
for dir in client-wasm/pkg client-wasm/pkg-node; do
  "$opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    "$dir/casesync_client_wasm_bg.wasm" -o "$dir/casesync_client_wasm_bg.wasm.opt"
  mv "$dir/casesync_client_wasm_bg.wasm.opt" "$dir/casesync_client_wasm_bg.wasm"
done
raw=$(stat -c %s client-wasm/pkg/casesync_client_wasm_bg.wasm)
gz=$(gzip -9 -c client-wasm/pkg/casesync_client_wasm_bg.wasm | wc -c)
echo "client-wasm: ${raw} bytes raw, ${gz} bytes gzipped"
