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
# the installed folders of some packages and everything they depend on (dependencies + optional ones present)
closure() {
  node -e '
    const path = require("node:path"); const fs = require("node:fs");
    const seen = new Set(); const todo = process.argv.slice(1).map((n) => [n, process.cwd()]);
    while (todo.length) {
      const [name, from] = todo.pop();
      // node_modules lookup by hand: "exports" maps may hide package.json from require.resolve
      let dir = null;
      for (let d = from; ; d = path.dirname(d)) {
        const c = path.join(d, "node_modules", name);
        if (fs.existsSync(path.join(c, "package.json"))) { dir = c; break; }
        if (d === path.dirname(d)) break;
      }
      if (dir === null || seen.has(dir)) continue; seen.add(dir);
      const pj = path.join(dir, "package.json");
      const m = JSON.parse(fs.readFileSync(pj, "utf8"));
      for (const d of Object.keys({ ...m.dependencies, ...m.optionalDependencies, ...m.peerDependencies })) todo.push([d, dir]);
    }
    for (const d of seen) console.log(path.relative(process.cwd(), d));
  ' "$@"
}
{ closure vitest node-addon-api @huggingface/jinja @huggingface/tokenizers; echo node_modules/.bin/vitest; } | grep '^node_modules/' | sort -u > /tmp/m1-nm.txt
XZ_OPT="-T0 -6" tar -cJf "$out/nm.tar.xz" $(cat /tmp/m1-nm.txt)
closure $(node -p 'Object.keys(require("./package.json").dependencies).join(" ")') | grep '^node_modules/' | sort -u > /tmp/m1-rt.txt
XZ_OPT="-T0 -6" tar -cJf "$out/rt.tar.xz" $(cat /tmp/m1-rt.txt)
npm_root=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
XZ_OPT="-T0 -6" tar -C "$(dirname "$npm_root")" -cJf "$out/npm.tar.xz" "$(basename "$npm_root")"
for f in common.gypi config.gypi; do cp "/usr/include/node/$f" "$out/" 2>/dev/null || cp "$(dirname "$(readlink -f "$(command -v node)")")/../include/node/$f" "$out/"; done
ls -la "$out"
