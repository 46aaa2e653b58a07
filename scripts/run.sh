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
  # Only .env is private: a umask left in force here would make the image
  # build and the binaries unusable by anyone else (uid 1000 in the sandbox).
  (
    umask 077
    cat > .env <<ENV
# Written by scripts/run.sh; see .env.example for every setting.
API_KEYS=local:$key
SESSION_STORE=memory
ENV
  )
  echo "wrote .env with a new API key (principal \"local\")"
fi
set -a
# shellcheck disable=SC1091
. ./.env
set +a
: "${SESSION_STORE:=redis}"
# Loopback unless told otherwise: the process holds the Docker socket.
: "${HOST:=127.0.0.1}"
: "${PORT:=8000}"
: "${CONTAINER_IMAGE:=brig-sandbox:latest}"
# Readable logs at a terminal; production keeps the default, bunyan JSON.
: "${LOG_FORMAT:=pretty}"
export SESSION_STORE HOST PORT CONTAINER_IMAGE LOG_FORMAT

docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || {
  echo "no Docker engine reachable: brig runs commands in Docker containers" >&2
  exit 1
}
if ! docker image inspect "$CONTAINER_IMAGE" >/dev/null 2>&1; then
  # With Python: LANGUAGES offers it, and agents write it.
  echo "building the sandbox image $CONTAINER_IMAGE (with Python)"
  log=$(mktemp)
  if ! docker build -q -t "$CONTAINER_IMAGE" images/sandbox >"$log" 2>&1; then
    echo "docker build failed (last lines below); building it from Debian's busybox-static and python3 instead"
    tail -n 5 "$log" | sed 's/^/  | /'
    images/sandbox-python/build.sh "$CONTAINER_IMAGE"
  fi
  rm -f "$log"
fi
# An image from before Python was the default: say so now rather than fail later.
if ! docker run --rm --network none --entrypoint python3 "$CONTAINER_IMAGE" -c '' >/dev/null 2>&1; then
  echo "note: $CONTAINER_IMAGE has no python3, so {\"language\": \"python\"} will fail (exit 127);" \
    "remove it (docker rmi $CONTAINER_IMAGE) and run this again to rebuild it with Python" >&2
fi
echo "building brig (cargo build --release; the first build takes a few minutes)"
cargo build --release --locked -p brig-api -p brig-cleanup-worker -p brig-cli
bin=${CARGO_TARGET_DIR:-target}/release

first_key=${API_KEYS%%,*}
first_key=${first_key#*:}

pids=()
trap 'kill "${pids[@]}" 2>/dev/null' EXIT INT TERM
if [ "$SESSION_STORE" = redis ]; then
  # With Redis the reaper is its own process.
  "$bin/brig-cleanup-worker" &
  pids+=($!)
fi
"$bin/brig-api" &
api=$!
pids+=("$api")
# "Ready" only once /ready says so (the engine, the store and the agent volume).
# The probe asks 127.0.0.1:$PORT.
tries=0
until "$bin/brig-api" healthcheck 2>/dev/null; do
  kill -0 "$api" 2>/dev/null || { echo "brig-api stopped; its log is above" >&2; exit 1; }
  tries=$((tries + 1))
  [ $((tries % 20)) -ne 0 ] || echo "still waiting for http://127.0.0.1:$PORT/ready (its answer says what is missing)"
  sleep 0.5
done
cat <<HELP

brig is ready on http://$HOST:$PORT (session store: $SESSION_STORE). Try:

  curl -X POST http://localhost:$PORT/execute -H "X-API-Key: ${first_key:-<your key>}" -H "Content-Type: application/json" \\
    -d '{"command": "ls -la", "session_id": "my-session-1", "timeout": 30}'

  curl -X POST http://localhost:$PORT/execute -H "X-API-Key: ${first_key:-<your key>}" -H "Content-Type: application/json" \\
    -d '{"code": "print(6*7)", "language": "python", "session_id": "my-session-1"}'

or with the CLI:

  BRIG_URL=http://localhost:$PORT BRIG_API_KEY=${first_key:-<your key>} $bin/brig exec -s my-session-1 -- ls -la

HELP
wait "$api"
