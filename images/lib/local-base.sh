#!/usr/bin/env bash
# Makes a FROM-scratch image holding the given host binaries and exactly the
# shared libraries they load (per ldd): a distroless-style base without a
# registry. Usage: images/lib/local-base.sh TAG [BINARY...]
#   images/lib/local-base.sh brig-runtime-base:local                 # glibc + libgcc only
#   images/lib/local-base.sh brig-redis:local /usr/bin/redis-server /usr/bin/redis-cli
set -euo pipefail
# shellcheck source=images/lib/common.sh
. "$(dirname "$0")/common.sh"
tag=$1
shift
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/tmp" "$ctx/root/etc"
chmod 1777 "$ctx/root/tmp"
echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > "$ctx/root/etc/passwd"
echo 'nonroot:x:65532:' > "$ctx/root/etc/group"
# What every Rust binary of ours loads.
libs=(/lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/libm.so.6
      /lib/x86_64-linux-gnu/libgcc_s.so.1)
for binary in "$@"; do
  mkdir -p "$ctx/root$(dirname "$binary")"
  cp -L "$binary" "$ctx/root$binary"
  while read -r lib; do libs+=("$lib"); done < <(ldd "$binary" | grep -o '/[^ ]*' | sort -u)
done
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
  mkdir -p "$ctx/root$(dirname "$lib")"
  cp -L "$lib" "$ctx/root$lib"
done
printf 'FROM scratch\nCOPY root/ /\n' > "$ctx/Dockerfile"
quiet_build -t "$tag" "$ctx"
echo "built $tag"
