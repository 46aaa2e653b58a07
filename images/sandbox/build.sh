#!/usr/bin/env bash
# Builds the minimal sandbox image on a machine with a Docker engine but no
# image registry: a FROM-scratch base with Debian's static busybox (installed
# with apt-get when missing), then images/sandbox/Dockerfile on top of it. No
# Python: the test and benchmark images start from it, and
# images/sandbox-python/build.sh adds Python (what scripts/run.sh builds offline).
# Usage: images/sandbox/build.sh [TAG]   (default brig-sandbox-minimal:latest)
set -euo pipefail
# shellcheck source=images/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-brig-sandbox-minimal:latest}
base=brig-busybox:local
busybox=/bin/busybox

is_static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }
if ! is_static "$busybox"; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq busybox-static >/dev/null
fi
is_static "$busybox" || { echo "no static busybox at $busybox" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\n' > "$ctx/Dockerfile"
quiet_build -t "$base" "$ctx"
quiet_build --build-arg "BASE_IMAGE=$base" -t "$tag" "$here"
echo "built $tag (images/sandbox/Dockerfile on $base: scratch + busybox-static)"
