#!/usr/bin/env bash
# Builds native/build/carry/ (git-ignored), what a device-machine run needs besides .gpu/ and dist/:
# the GPU machine has no Node.js packages and no network.
#   nm.tar.xz   vitest and its dependency closure (+ node-addon-api, @huggingface/*) for `npm run test:cuda`
#   rt.tar.xz   the production dependencies (`npm ls --omit=dev`) that bin/m1 imports
#   npm.tar.xz  npm with its bundled node-gyp (the packed Node.js has no npm)
#   common.gypi, config.gypi  node-gyp's include files for this Node.js version
# Usage, from the repository root after `npm ci`: bash native/make-carry.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
out=native/build/carry
mkdir -p "$out"
closure() { npm ls "$@" --parseable --all 2>/dev/null | sed "s|$PWD/||" | grep '^node_modules/' | sort -u; }
{ closure vitest; closure node-addon-api; closure @huggingface/jinja; closure @huggingface/tokenizers; echo node_modules/.bin/vitest; } | sort -u > /tmp/m1-nm.txt
XZ_OPT="-T0 -6" tar -cJf "$out/nm.tar.xz" $(cat /tmp/m1-nm.txt)
closure --omit=dev > /tmp/m1-rt.txt
XZ_OPT="-T0 -6" tar -cJf "$out/rt.tar.xz" $(cat /tmp/m1-rt.txt)
npm_root=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
XZ_OPT="-T0 -6" tar -C "$(dirname "$npm_root")" -cJf "$out/npm.tar.xz" "$(basename "$npm_root")"
for f in common.gypi config.gypi; do cp "/usr/include/node/$f" "$out/" 2>/dev/null || cp "$(dirname "$(readlink -f "$(command -v node)")")/../include/node/$f" "$out/"; done
ls -la "$out"
