#!/usr/bin/env bash
# Sweep `m1 demo` settings on the GPU (each run ~20–60 s there), several runs at once, to find budgets
# whose GRPO gain over SFT holds across seeds before spending CPU minutes on them.
#   CONFIGS: file with one line per config: `name<TAB>extra m1 demo flags`
#   usage: bash bench/demo-sweep.sh CONFIGS OUTDIR [seeds=0,1] [parallel=8] [common flags...]
# Writes OUTDIR/<name>-s<seed>/summary.json and prints one row per run (bench/demo-sweep-table.mjs).
set -u
cfg=$1; out=$2; seeds=${3:-0,1}; par=${4:-8}; shift 4 2>/dev/null || shift $#
mkdir -p "$out"
jobs=()
while IFS=$'\t' read -r name flags; do
  [ -z "$name" ] && continue
  case "$name" in \#*) continue;; esac
  for s in ${seeds//,/ }; do jobs+=("$name|$s|$flags"); done
done < "$cfg"
run_one() {
  IFS='|' read -r name s flags <<< "$1"; shift
  d="$out/$name-s$s"
  # shellcheck disable=SC2086
  node bin/m1 demo --backend cuda --out "$d" --seed "$s" $flags "$@" > "$d.log" 2>&1 || echo "FAILED $name seed $s (see $d.log)"
}
i=0
for j in "${jobs[@]}"; do
  run_one "$j" "$@" &
  i=$((i + 1))
  if [ $((i % par)) -eq 0 ]; then wait; fi
done
wait
node bench/demo-sweep-table.mjs "$out"
