#!/usr/bin/env bash
# A private Docker engine for cloudir's tests: its own socket, data, exec root and
# pidfile under one state folder, so it never touches (or needs) a system docker.
#
#   scripts/dockerd.sh start          start it and wait until `docker info` answers
#   scripts/dockerd.sh stop           stop it by the PID in its pidfile
#   scripts/dockerd.sh env            print `export DOCKER_HOST=...` for it
#   scripts/dockerd.sh status         exit 0 when it is running and answers
#   scripts/dockerd.sh image [TAG]    import the offline test image (default
#                                     cloudir-test/busybox:1) built from busybox-static
#
# Runs as root. State folder: $CLOUDIR_DOCKER_STATE (default /tmp/cloudir-dockerd).
# `start` exits non-zero with a one-line warning and the log tail when dockerd cannot
# run here (no privileges, no dockerd); the caller decides whether that is fatal.
set -euo pipefail

STATE=${CLOUDIR_DOCKER_STATE:-/tmp/cloudir-dockerd}
SOCK=$STATE/docker.sock
HOST=unix://$SOCK
PIDFILE=$STATE/dockerd.pid
LOG=$STATE/dockerd.log
START_TIMEOUT=${CLOUDIR_DOCKER_START_TIMEOUT:-60}
STOP_TIMEOUT=30

warn() { printf 'dockerd.sh: warning: %s\n' "$*" >&2; }
say() { printf 'dockerd.sh: %s\n' "$*" >&2; }

log_tail() {
  [ -f "$LOG" ] || { printf '(no log)'; return; }
  tail -n 5 "$LOG" | tr '\n' '|' | sed 's/|$//; s/|/ | /g'
}

# True while the process lives and is not a zombie waiting to be reaped.
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# The PID in the pidfile, if that process is alive and is a dockerd.
running_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
  printf '%s\n' "$pid"
}

answers() { timeout 10 docker -H "$HOST" info >/dev/null 2>&1; }

start() {
  if pid=$(running_pid) && answers; then
    say "already running (pid $pid, $HOST)"
    return 0
  fi
  command -v dockerd >/dev/null || { warn "dockerd not found (apt-get install docker.io)"; return 1; }
  command -v docker >/dev/null || { warn "docker client not found (apt-get install docker.io)"; return 1; }
  if [ "$(id -u)" -ne 0 ]; then warn "dockerd needs root (running as uid $(id -u))"; return 1; fi

  reap_leftovers
  mkdir -p "$STATE/data" "$STATE/exec"
  # Our own config file, so /etc/docker/daemon.json cannot change these settings;
  # dockerd before 23.0 also writes a trust key, by default to /etc/docker/key.json.
  local config='{}'
  case $(dockerd --version 2>/dev/null) in
    "Docker version 1"[0-9].* | "Docker version 20."*)
      config="{\"deprecated-key-path\": \"$STATE/key.json\"}" ;;
  esac
  printf '%s\n' "$config" >"$STATE/daemon.json"
  rm -f "$PIDFILE" "$SOCK"
  : >"$LOG"
  local started=$SECONDS
  # vfs: overlayfs is often unavailable in nested containers/VMs.
  # No iptables, bridge, forwarding or masquerade: no network privileges are assumed
  # and tests need no network, so containers run with --network none.
  dockerd \
    --config-file "$STATE/daemon.json" \
    --data-root "$STATE/data" \
    --exec-root "$STATE/exec" \
    --pidfile "$PIDFILE" \
    -H "$HOST" \
    --storage-driver=vfs \
    --iptables=false --ip6tables=false \
    --bridge=none --ip-forward=false --ip-masq=false \
    </dev/null >>"$LOG" 2>&1 &
  local pid=$!

  while (( SECONDS - started < START_TIMEOUT )); do
    if ! alive "$pid"; then
      warn "dockerd exited during start; log $LOG: $(log_tail)"
      reap_leftovers
      return 1
    fi
    if answers; then
      say "started (pid $pid, $HOST) in $((SECONDS - started)) s"
      return 0
    fi
    sleep 0.5
  done
  warn "dockerd did not answer within ${START_TIMEOUT}s; log $LOG: $(log_tail)"
  stop_pid "$pid"
  reap_leftovers
  return 1
}

# TERM, wait, then KILL; dockerd stops its containers and its containerd itself.
stop_pid() {
  local pid=$1 waited=0
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid" && (( waited < STOP_TIMEOUT * 10 )); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if alive "$pid"; then
    warn "pid $pid still running after ${STOP_TIMEOUT}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    waited=0
    while alive "$pid" && (( waited < 50 )); do sleep 0.1; waited=$((waited + 1)); done
  fi
}

# A dockerd that was killed, or never answered, can leave behind its containerd (own
# pidfile), container shims still running their containers, and mounts under $STATE.
reap_leftovers() {
  local cpid sock=$STATE/exec/containerd/containerd.sock d p c
  cpid=$(cat "$STATE/exec/containerd/containerd.pid" 2>/dev/null || true)
  if [[ $cpid =~ ^[0-9]+$ ]] && alive "$cpid" &&
     [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" = containerd ]; then
    stop_pid "$cpid"
  fi
  # A stale pidfile makes the next dockerd wait for a containerd that is gone.
  rm -f "$STATE/exec/containerd/containerd.pid"
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = containerd-shim ] || continue  # comm is cut to 15
    tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- "-address $sock " || continue
    p=${d#/proc/}
    for c in $(ps -o pid= --ppid "$p"); do kill -KILL "$c" 2>/dev/null || true; done
    kill -KILL "$p" 2>/dev/null || true
  done
  awk -v s="$STATE/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

stop() {
  local pid
  if pid=$(running_pid); then
    stop_pid "$pid"
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  reap_leftovers
}

# A tiny image built offline: a static busybox with every applet linked in /bin,
# imported from a tar (no registry, no Dockerfile, no network).
image() {
  local tag=${1:-cloudir-test/busybox:1} bb tmp applet
  if docker -H "$HOST" image inspect "$tag" >/dev/null 2>&1; then
    say "image $tag already present"
    return 0
  fi
  bb=$(command -v busybox) || { warn "busybox not found (apt-get install busybox-static)"; return 1; }
  if ldd "$bb" 2>/dev/null | grep -q '=>'; then
    warn "$bb is dynamically linked and cannot run alone in an image (apt-get install busybox-static)"
    return 1
  fi
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand $tmp now
  trap "rm -rf '$tmp'" RETURN
  mkdir -p "$tmp/root/bin" "$tmp/root/etc" "$tmp/root/tmp"
  cp "$bb" "$tmp/root/bin/busybox"
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$tmp/root/bin/$applet"
  done
  tar -C "$tmp/root" -cf "$tmp/rootfs.tar" .
  docker -H "$HOST" import "$tmp/rootfs.tar" "$tag" >/dev/null
  say "imported $tag"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status)
    if pid=$(running_pid) && answers; then say "running (pid $pid, $HOST)"
    else say "not running ($HOST)"; exit 1; fi ;;
  env) printf 'export DOCKER_HOST=%s\n' "$HOST" ;;
  image) shift; image "$@" ;;
  *) printf 'usage: %s start|stop|status|env|image [TAG]\n' "$0" >&2; exit 2 ;;
esac
