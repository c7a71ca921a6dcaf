#!/usr/bin/env bash
# Many GRPO-only trials at once (bench/grpo-trial.ts), each config from each SFT model, then one table:
#   bash bench/grpo-trials.sh CONFIGS OUTDIR SFT_DIR... [-- extra grpo-trial flags]
#   CONFIGS: one line per config, `name<TAB>grpo-trial flags` (e.g. `--set steps=24 --set temperature=0.7`)
#   env: PAR (parallel runs, default 12), BACKEND (default cuda)
# Writes OUTDIR/<name>-<k>.json (one JSON line per trial) and prints mean gain per config.
set -u
cfg=$1; out=$2; shift 2
sfts=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do sfts+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
par=${PAR:-12}; i=0
while IFS=$'\t' read -r name flags; do
  [ -z "$name" ] && continue
  case "$name" in \#*) continue;; esac
  for k in "${!sfts[@]}"; do
    # shellcheck disable=SC2086
    node dist/bench/grpo-trial.js --backend "${BACKEND:-cuda}" --sft "${sfts[$k]}" --out "/tmp/grpo-trial/$name-$k" $flags "$@" \
      > "$out/$name-$k.json" 2> "$out/$name-$k.err" &
    i=$((i + 1)); if [ $((i % par)) -eq 0 ]; then wait; fi
  done
done < "$cfg"
wait
node -e '
const fs = require("node:fs"), dir = process.argv[1];
const by = {};
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
  const name = f.replace(/-\d+\.json$/, ""), t = fs.readFileSync(dir + "/" + f, "utf8").trim();
  if (!t) { (by[name] ??= []).push(null); continue; }
  (by[name] ??= []).push(JSON.parse(t.split("\n").pop()));
}
console.log("config\tmean gain\tper SFT model: gain (z)\treward 1st→2nd half\tGRPO s");
for (const [name, rs] of Object.entries(by)) {
  const ok = rs.filter(Boolean), m = ok.reduce((a, r) => a + r.gain, 0) / Math.max(1, ok.length);
  const cells = rs.map((r) => r ? `${(100 * r.gain).toFixed(1)} (${r.z.toFixed(1)})` : "FAILED").join("  ");
  const rw = ok.map((r) => `${r.rewardFirstHalf.toFixed(2)}→${r.rewardSecondHalf.toFixed(2)}`).join(" ");
  console.log(`${name}\t${(100 * m).toFixed(2)}\t${cells}\t${rw}\t${ok.map((r) => r.grpoSeconds.toFixed(0)).join(",")}`);
}' "$out"
