#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the
# other, with an RSS limit, starting from the committed seeds. New inputs go
# to a scratch corpus (fuzz/corpus/, ignored); a crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The stable toolchain
# is used with RUSTC_BOOTSTRAP=1 for the coverage flags cargo fuzz passes;
# no sanitizer (`-s none`): the code under test is safe Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(submit_job job_yaml config_values raft_message)
fi
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${seconds}s"
  cargo fuzz run --fuzz-dir fuzz -s none --release "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10 -print_final_stats=1
done
