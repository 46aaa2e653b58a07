#!/usr/bin/env bash
# Makes gVisor's runsc available to the local Docker engine as the runtime
# "runsc": installs Debian's package and registers it in /etc/docker/daemon.json
# (merged, nothing else changed), then has dockerd reload its configuration
# (SIGHUP; running containers are untouched). Idempotent.
# Needs root and a local engine. When it cannot, it says why and exits 0: the
# runsc half of the test suite then fails with instructions, never passes.
#   scripts/gvisor.sh
set -euo pipefail

registered() { docker info --format '{{range $name, $_ := .Runtimes}}{{$name}} {{end}}' 2>/dev/null | grep -qw runsc; }
cannot() { echo "gvisor: cannot register runsc: $*; the runsc tests will fail" >&2; exit 0; }

registered && { echo "gvisor: runsc is registered with the engine"; exit 0; }
[ "$(id -u)" = 0 ] || cannot "not root"
[ -z "${DOCKER_HOST:-}" ] || [ "${DOCKER_HOST}" = unix:///var/run/docker.sock ] || cannot "the engine is remote (DOCKER_HOST=$DOCKER_HOST)"
if [ ! -x /usr/bin/runsc ]; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq runsc >/dev/null; } || cannot "apt-get install runsc failed"
fi
config=/etc/docker/daemon.json
[ -e "$config" ] || echo '{}' > "$config" 2>/dev/null || cannot "$config is not writable"
[ -w "$config" ] || cannot "$config is not writable"
python3 - "$config" <<'PY' || cannot "could not update $config"
import json, sys
path = sys.argv[1]
with open(path) as f:
    text = f.read().strip()
config = json.loads(text) if text else {}
config.setdefault("runtimes", {})["runsc"] = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
with open(path + ".brig-tmp", "w") as f:
    json.dump(config, f, indent=2)
import os
os.replace(path + ".brig-tmp", path)
PY
pid=$(pgrep -xo dockerd) || cannot "no local dockerd process to reload"
kill -HUP "$pid"
for _ in $(seq 50); do
  registered && { echo "gvisor: registered runsc ($(/usr/bin/runsc --version | head -1))"; exit 0; }
  sleep 0.2
done
cannot "dockerd did not pick up the runtime after SIGHUP"
