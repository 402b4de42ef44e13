#!/usr/bin/env bash
# Builds the upgrade nemesis's second autoglm-server: the same sources with
# the `format-next` feature (log-entry format 8, one more field in every
# proposal), into target/<profile>/upgrade/, then puts the ordinary build back.
# Usage: jepsen/build-upgrade.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
flags=()
if [[ "${1:-}" == --release ]]; then
  profile=release
  flags=(--release)
fi
cargo build "${flags[@]}" -p autoglm-server --features format-next
mkdir -p "target/$profile/upgrade"
cp "target/$profile/autoglm-server" "target/$profile/upgrade/autoglm-server"
cargo build "${flags[@]}" -p autoglm-server
if cmp -s "target/$profile/autoglm-server" "target/$profile/upgrade/autoglm-server"; then
  echo "build-upgrade: the two builds are identical" >&2
  exit 1
fi
echo "upgrade build: target/$profile/upgrade/autoglm-server"
