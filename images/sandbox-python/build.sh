#!/usr/bin/env bash
# Builds a sandbox image with Python on a machine without an image registry:
# the minimal offline sandbox image (images/sandbox/build.sh) plus Debian's
# python3 and curl (installed with apt-get when missing) with exactly the
# shared libraries they load, and Python's standard library. scripts/run.sh builds its
# default image this way when no registry is reachable.
# With a registry, the same kind of image is simply (python:3.12-alpine is the
# Dockerfile's default base):
#   docker build -t brig-sandbox-python images/sandbox
# Usage: images/sandbox-python/build.sh [TAG]   (default brig-sandbox-python:latest)
set -euo pipefail
# shellcheck source=images/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-brig-sandbox-python:latest}
base=brig-sandbox-minimal:latest

docker image inspect "$base" >/dev/null 2>&1 || "$here/../sandbox/build.sh" "$base"
# Debian's own interpreter and curl, whatever else PATH may offer first.
if [ ! -x /usr/bin/python3 ] || [ ! -x /usr/bin/curl ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 curl >/dev/null
fi
python=$(readlink -f /usr/bin/python3)
version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
stdlib=/usr/lib/python$version

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/root
mkdir -p "$root/usr/bin" "$root/usr/lib"
cp "$python" "$root/usr/bin/python$version"
ln -s "python$version" "$root/usr/bin/python3"
ln -s "python$version" "$root/usr/bin/python"
cp /usr/bin/curl "$root/usr/bin/curl"
while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done < <(ldd "$python" /usr/bin/curl | grep -o '/[^ ]*' | grep -v ':$' | sort -u)
# The standard library without caches, tests or what needs a display.
tar -C / --exclude='__pycache__' --exclude="${stdlib#/}/test" --exclude="${stdlib#/}/idlelib" \
  --exclude="${stdlib#/}/tkinter" --exclude="${stdlib#/}/site-packages" --exclude="${stdlib#/}/dist-packages" \
  -cf - "${stdlib#/}" | tar -C "$root" -xf -
# Extension modules load their own libraries (ssl, sqlite, ...): bring those too.
find "$root$stdlib/lib-dynload" -name '*.so' -exec ldd {} \; 2>/dev/null | grep -o '/[^ ]*' | sort -u \
  | while read -r lib; do
      [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY root/ /
DOCKERFILE
quiet_build -t "$tag" "$ctx"
echo "built $tag ($base + python$version and curl from this machine)"
