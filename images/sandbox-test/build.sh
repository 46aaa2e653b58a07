#!/usr/bin/env bash
# Builds the image the test suites use: the offline sandbox image plus a static
# probe binary (images/sandbox-test/probe.c) for attempts busybox cannot make.
# Usage: images/sandbox-test/build.sh [TAG]   (default brig-sandbox-test:latest)
set -euo pipefail
# shellcheck source=images/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-brig-sandbox-test:latest}
base=brig-sandbox-minimal:latest

"$here/../sandbox/build.sh" "$base"
command -v cc >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cc -static -O2 -o "$ctx/brig-probe" "$here/probe.c"
# A setuid-root copy: proves setuid binaries do not elevate in a sandbox.
cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
USER root
COPY brig-probe /usr/local/bin/brig-probe
RUN cp /usr/local/bin/brig-probe /usr/local/bin/brig-probe-suid && chown 0:0 /usr/local/bin/brig-probe-suid \\
 && chmod 4755 /usr/local/bin/brig-probe-suid
USER 1000:1000
DOCKERFILE
quiet_build -t "$tag" "$ctx"
echo "built $tag"
