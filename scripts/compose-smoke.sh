#!/usr/bin/env bash
# Compose smoke test for a machine without a registry: builds every image the
# stack needs from this machine (base images from the host's own binaries and
# libraries, passed through the compose variables), brings the stack up, waits
# for /ready, runs the README's curl example, tears everything down and checks
# that nothing of the stack remains.
#   scripts/compose-smoke.sh      (binaries from target/debug unless BRIG_BIN_DIR is set)
set -euo pipefail
cd "$(dirname "$0")/.."

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

project=brigsmoke$$
instance=smoke-$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bin_dir=${BRIG_BIN_DIR:-target/debug}
for bin in brig-api brig-cleanup-worker; do
  [ -x "$bin_dir/$bin" ] || { echo "missing $bin_dir/$bin: build the workspace first" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server missing (apt-get install redis-server)" >&2; exit 1; }

echo "==> local base images"
images/lib/local-base.sh brig-runtime-base:local
images/lib/local-base.sh brig-redis:local "$(command -v redis-server)" "$(command -v redis-cli)"
images/sandbox/build.sh >/dev/null   # brig-sandbox-minimal, and brig-busybox:local on the way

env_file=$(mktemp)
trap 'rm -f "$env_file"' EXIT
cat > "$env_file" <<ENV
API_KEYS=dev-key-0123456789abcdef
BRIG_INSTANCE=$instance
BRIG_PORT=$port
DOCKER_GID=$(stat -c %g /var/run/docker.sock)
REDIS_IMAGE=brig-redis:local
SANDBOX_BASE_IMAGE=brig-busybox:local
CONTAINER_IMAGE=brig-sandbox-$project:latest
BRIG_IMAGE=brig-$project:latest
BRIG_BUILD_TARGET=prebuilt
BRIG_RUNTIME_IMAGE=brig-runtime-base:local
BRIG_BIN_DIR=$bin_dir
BRIG_ENV_FILE=$env_file
ENV
run_compose() { compose -p "$project" --env-file "$env_file" "$@"; }

cleanup() {
  run_compose down -v --remove-orphans >/dev/null 2>&1 || true
  docker ps -aq --filter "label=brig.instance=$instance" | xargs -r docker rm -f >/dev/null
  docker rmi -f "brig-$project:latest" "brig-sandbox-$project:latest" >/dev/null 2>&1 || true
  rm -f "$env_file"
}
trap cleanup EXIT

echo "==> docker compose up"
run_compose up -d --build 2>&1 | tail -n 5

echo "==> waiting for /ready on port $port"
for _ in $(seq 1 90); do
  if curl -sf "http://localhost:$port/ready" >/dev/null; then break; fi
  sleep 1
done
curl -sf "http://localhost:$port/ready" || { run_compose logs --tail 50; echo "never ready" >&2; exit 1; }
echo

echo "==> the README's curl example"
reply=$(curl -s -X POST "http://localhost:$port/execute" -H "X-API-Key: dev-key-0123456789abcdef" -H "Content-Type: application/json" \
  -d '{"command": "ls -la", "session_id": "my-session-1", "timeout": 30}')
echo "$reply"
echo "$reply" | grep -q '"exit_code":0' || { echo "execute failed" >&2; exit 1; }
echo "$reply" | grep -q '"stdout":"total ' || { echo "unexpected output" >&2; exit 1; }
echo "==> suspend and resume (the snapshot volume)"
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://localhost:$port/sessions/my-session-1/suspend" -H "X-API-Key: dev-key-0123456789abcdef")
[ "$status" = 200 ] || { run_compose logs --tail 20 api; echo "suspend answered $status" >&2; exit 1; }
reply=$(curl -s -X POST "http://localhost:$port/execute" -H "X-API-Key: dev-key-0123456789abcdef" -H "Content-Type: application/json" \
  -d '{"command": "ls -la", "session_id": "my-session-1", "timeout": 30}')
echo "$reply" | grep -q '"session_resumed":true' || { echo "not resumed: $reply" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://localhost:$port/sessions/my-session-1" -H "X-API-Key: dev-key-0123456789abcdef")
[ "$status" = 204 ] || { echo "DELETE answered $status" >&2; exit 1; }

# Only networks compose created, and sandboxes on none.
networks=$(docker ps -q --filter "label=com.docker.compose.project=$project" | xargs -r docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' | tr ' ' '\n' | sort -u | grep -v '^$' || true)
for network in $networks; do
  case $network in "${project}_default"|none) ;; *) echo "stack container on foreign network $network" >&2; exit 1 ;; esac
done

echo "==> docker compose down"
run_compose down -v --remove-orphans 2>&1 | tail -n 3
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project"; docker ps -aq --filter "label=brig.instance=$instance"; docker network ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || { echo "left behind: $left" >&2; exit 1; }
echo "compose smoke test passed"
