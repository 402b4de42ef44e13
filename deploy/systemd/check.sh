#!/usr/bin/env bash
# Checks the units with systemd-analyze: `verify` must pass without a single
# complaint, and `security --offline` must rate the replica's sandbox OK
# (exposure at most 2.5 of 10). ExecStart points at BIN_DIR's binaries,
# since verify checks that they exist and run.
#
#   deploy/systemd/check.sh [BIN_DIR]     (default: target/debug)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir=$(realpath "${1:-target/debug}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in autoglm-server autoglm-agent; do
  sed "s#/usr/local/bin/#$bin_dir/#" "deploy/systemd/$unit.service" > "$work/$unit.service"
done
out=$(systemd-analyze verify "$work/autoglm-server.service" "$work/autoglm-agent.service" 2>&1) || {
  echo "systemd-analyze verify failed:"; echo "$out"; exit 1; }
if [[ -n "$out" ]]; then
  echo "systemd-analyze verify complained:"; echo "$out"; exit 1
fi
for unit in autoglm-server autoglm-agent; do
  line=$(systemd-analyze security --offline=yes "$work/$unit.service" 2>&1 | grep "Overall exposure level")
  echo "$unit: ${line#*: }"
  if [[ $unit == autoglm-server ]]; then
    score=$(sed -E 's/.*: ([0-9.]+).*/\1/' <<<"$line")
    awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }' || { echo "autoglm-server exposure $score is above 2.5"; exit 1; }
  fi
done
echo "units verified"
