#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing (apt-get),
# builds the sandbox images locally (no registry needed), builds the workspace
# once and runs every test against the real Docker engine.
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need_apt+=(busybox-static)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v curl >/dev/null || need_apt+=(curl)
# The TypeScript SDK's tests need Node >= 20 (tests/e2e/sdk.rs checks the version).
command -v node >/dev/null || need_apt+=(nodejs)
# The multi-node tests make network namespaces and veths, and enter them.
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nsenter >/dev/null || need_apt+=(util-linux)
# A node behind https: a TLS terminator (socat) with certificates made by openssl.
command -v socat >/dev/null || need_apt+=(socat)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The tests start their own redis-server on free ports; a packaged one that
# the install may have started is left alone.

log "checking the Docker engine"
if ! docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'; then
  echo "FATAL: no Docker engine reachable (DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}); the tests need one" >&2
  exit 1
fi

log "registering gVisor (runsc) with the engine"
scripts/gvisor.sh

log "building sandbox images"
images/sandbox-test/build.sh
images/sandbox-python/build.sh

log "installing schemathesis, openapi-spec-validator, openapi-python-client, the MCP SDK, moto's S3 server and the Python SDK's test tools (httpx, pytest, mypy; PyPI) into target/schemathesis"
python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-venv >/dev/null
}
installed() {
  for tool in schemathesis openapi-spec-validator openapi-python-client moto_server; do
    [ -x "target/schemathesis/bin/$tool" ] || return 1
  done
  # streamable_http_client(http_client=...) is mcp 1.24's.
  target/schemathesis/bin/python -c 'from mcp.client.streamable_http import streamable_http_client' 2>/dev/null &&
    target/schemathesis/bin/python -c 'import httpx, pytest, mypy' 2>/dev/null
}
installed || {
  python3 -m venv target/schemathesis
  target/schemathesis/bin/pip install -q 'schemathesis>=4.32,<5' 'openapi-spec-validator>=0.7,<1' \
    'openapi-python-client>=0.29,<1' 'mcp>=1.24,<2' 'moto[server]>=5.1,<6' \
    'httpx>=0.25,<1' 'pytest>=8,<10' 'mypy>=1.13,<2'
}
target/schemathesis/bin/schemathesis --version

log "checking format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Leftovers of the test instances; best effort, and never the suite's verdict
# (a container the tests are still removing makes `docker rm` complain).
cleanup() {
  local status=$? ids
  ids=$(docker ps -aq --filter label=brig.managed=true 2>/dev/null \
    | xargs -r docker inspect --format '{{.Id}} {{index .Config.Labels "brig.instance"}}' 2>/dev/null \
    | awk '$2 ~ /^(test|e2e|bench|smoke)-/ {print $1}') || true
  [ -z "$ids" ] || docker rm -f -v $ids >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT

log "building the binaries the end-to-end tests start"
cargo build --workspace --bins --locked

log "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
