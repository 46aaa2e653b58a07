#!/usr/bin/env bash
# Brings up a working brig on this machine and prints how to call it.
# Needs a Docker engine and cargo; builds what is missing (the sandbox image,
# from local packages if no registry is reachable, and the binaries). Uses .env
# if present, otherwise writes one with a generated API key. Without Redis
# configured it runs the embedded default: memory store, in-process reaper.
#   scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f .env ]; then
  key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  umask 077
  cat > .env <<ENV
# Written by scripts/run.sh; see .env.example for every setting.
API_KEYS=local:$key
SESSION_STORE=memory
ENV
  echo "wrote .env with a new API key (principal \"local\")"
fi
set -a
# shellcheck disable=SC1091
. ./.env
set +a
: "${SESSION_STORE:=redis}"
: "${PORT:=8000}"
: "${CONTAINER_IMAGE:=brig-sandbox:latest}"
export SESSION_STORE PORT CONTAINER_IMAGE

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || {
  echo "no Docker engine reachable: brig runs commands in Docker containers" >&2
  exit 1
}
if ! docker image inspect "$CONTAINER_IMAGE" >/dev/null 2>&1; then
  echo "building the sandbox image $CONTAINER_IMAGE"
  if ! docker build -q -t "$CONTAINER_IMAGE" images/sandbox >/dev/null 2>&1; then
    echo "no registry reachable: building it from Debian's busybox-static instead"
    images/sandbox/build.sh "$CONTAINER_IMAGE"
  fi
fi
echo "building brig (cargo build --release)"
cargo build --release --locked -q -p brig-api -p brig-cleanup-worker -p brig-cli

first_key=${API_KEYS%%,*}
first_key=${first_key#*:}
cat <<HELP

brig is starting on http://localhost:$PORT (session store: $SESSION_STORE). Try:

  curl -X POST http://localhost:$PORT/execute -H "X-API-Key: ${first_key:-<your key>}" -H "Content-Type: application/json" \\
    -d '{"command": "ls -la", "session_id": "my-session-1", "timeout": 30}'

or with the CLI:

  BRIG_URL=http://localhost:$PORT BRIG_API_KEY=${first_key:-<your key>} target/release/brig exec -s my-session-1 -- ls -la

HELP
if [ "$SESSION_STORE" = redis ]; then
  # With Redis the reaper is its own process.
  target/release/brig-cleanup-worker &
  worker=$!
  trap 'kill $worker 2>/dev/null' EXIT
  target/release/brig-api
else
  exec target/release/brig-api
fi
