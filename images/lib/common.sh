# Shared by the image scripts (source it).

# docker build, showing its output only when it fails (the legacy builder's
# deprecation notice is noise here).
quiet_build() {
  local log
  log=$(mktemp)
  docker build -q "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
  rm -f "$log"
}
