#!/usr/bin/env bash
# Builds the three images from what is built here: no base image is pulled.
#   autoglm-server, autoglm   static binaries (glibc linked in) FROM scratch
#   autoglm-agent             dynamic binary + loader + its libraries FROM scratch
# Tags each IMAGE:VERSION and IMAGE:VERSION-REVISION (the git revision, with
# -dirty when the tree has changes), then prints the sizes and the time taken.
#
#   deploy/build-images.sh            (needs cargo, docker, and root or the docker group)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
target=x86_64-unknown-linux-gnu
version=$(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse --short=12 HEAD)
git diff --quiet HEAD -- || revision="$revision-dirty"

# The replica and the CLI: static, so they need nothing on the image. Only
# the target's code gets +crt-static; build scripts stay dynamic.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" -p autoglm-server -p autoglm-client \
  --bin autoglm-server --bin autoglm
# The agent: dynamic, for dlopen of NVML.
cargo build --release --locked -p autoglm-agent --bin autoglm-agent

stage=target/images
rm -rf "$stage"
mkdir -p "$stage"

# A root filesystem holding /etc/passwd and /etc/group (the autoglm user,
# uid 10001, and nobody), /tmp, and the given binary stripped.
rootfs() {
  local dir=$1 bin=$2
  mkdir -p "$dir/rootfs/etc" "$dir/rootfs/tmp" "$dir/rootfs/usr/local/bin" "$dir/data"
  chmod 1777 "$dir/rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nautoglm:x:10001:10001:autoglm:/var/lib/autoglm:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
    > "$dir/rootfs/etc/passwd"
  printf 'root:x:0:\nautoglm:x:10001:\nnogroup:x:65534:\n' > "$dir/rootfs/etc/group"
  strip --strip-all -o "$dir/rootfs/usr/local/bin/$(basename "$bin")" "$bin"
}

static_only() {
  if ldd "$1" >/dev/null 2>&1 && ! ldd "$1" 2>&1 | grep -q "statically linked"; then
    echo "$1 is not static:" >&2; ldd "$1" >&2; exit 1
  fi
}

static_only "target/$target/release/autoglm-server"
static_only "target/$target/release/autoglm"
rootfs "$stage/server" "target/$target/release/autoglm-server"
rootfs "$stage/cli" "target/$target/release/autoglm"
rootfs "$stage/agent" target/release/autoglm-agent
mkdir -p "$stage/agent/data/output"
# The agent's loader and libraries, at the paths the binary asks for, and
# the glibc libraries NVML links (the NVIDIA runtime mounts the driver's
# libraries, not glibc's): without libpthread, libdl and librt the dlopen of
# libnvidia-ml.so.1 fails (seen on an H200 host, docs/operations.md).
agent_libs() {
  ldd target/release/autoglm-agent | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
  local libc_dir
  libc_dir=$(dirname "$(ldd target/release/autoglm-agent | awk '$1 == "libc.so.6" { print $3 }')")
  for lib in libpthread.so.0 libdl.so.2 librt.so.1; do echo "$libc_dir/$lib"; done
}
agent_libs | sort -u |
  while read -r lib; do
    mkdir -p "$stage/agent/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/agent/rootfs$lib"
  done

for image in server cli agent; do
  case $image in
    server) name=autoglm-server ;;
    cli) name=autoglm ;;
    agent) name=autoglm-agent ;;
  esac
  # The legacy builder's deprecation notice is noise; its errors are not.
  docker build -q -f "deploy/images/$image.Dockerfile" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    -t "$name:$version" -t "$name:$version-$revision" "$stage/$image" >/dev/null 2>"$stage/build.err" ||
    { cat "$stage/build.err" >&2; exit 1; }
done

echo "images $version-$revision built in $(($(date +%s) - started)) s:"
for name in autoglm-server autoglm-agent autoglm; do
  bytes=$(docker image inspect -f '{{.Size}}' "$name:$version")
  awk -v n="$name:$version" -v b="$bytes" 'BEGIN { printf "  %-22s %6.1f MB\n", n, b / 1e6 }'
done
