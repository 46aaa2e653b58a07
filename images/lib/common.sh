# Shared by the image scripts (source it).

# Every file these scripts copy into an image keeps the mode the umask leaves
# it: a caller's umask 077 would make /bin and busybox 0700 root, a sandbox
# where uid 1000 can run nothing. The images never depend on the caller's.
umask 022

# docker build, showing its output only when it fails (the legacy builder's
# deprecation notice is noise here).
quiet_build() {
  local log
  log=$(mktemp)
  docker build -q "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
  rm -f "$log"
}
