#!/usr/bin/env bash
# A single-brick GlusterFS volume on this machine, for GlusterFS storage domains (no systemd here):
#   scripts/gluster.sh up       start glusterd (detached, logs in $GLUSTER_DIR/log), map the brick host name
#                               to 127.0.0.1 in /etc/hosts, create and start volume $GLUSTER_VOLUME, and
#                               create (never start) volume $GLUSTER_VOLUME-stopped: a volume that is down
#   scripts/gluster.sh down     stop what `up` started (the volumes it made, glusterd by its PID)
#   scripts/gluster.sh status   one line per part; exit 0 when the volume is started
# Safe to call twice: every step checks before it acts. A glusterd this script did not start is used as it
# is and never stopped. The gluster CLI refuses 127.0.0.1/localhost as a brick host, hence the name.
set -euo pipefail

GLUSTER_DIR=${PORTAL_GLUSTER_DIR:-/var/lib/vmportal/gluster}
GLUSTER_HOST=${PORTAL_GLUSTER_HOST:-vmportal-gluster}
GLUSTER_VOLUME=${PORTAL_GLUSTER_VOLUME:-vmportal}
STOPPED_VOLUME="$GLUSTER_VOLUME-stopped"
PIDFILE=$GLUSTER_DIR/glusterd.pid
MADE=$GLUSTER_DIR/made-volumes     # the volumes `up` created (so `down` removes only those)
HOSTS_MARK="# vmportal gluster (scripts/gluster.sh)"

say() { printf '  %s\n' "$*"; }
glusterd_ok() { timeout 10 gluster --mode=script pool list >/dev/null 2>&1; }
volume_exists() { gluster --mode=script volume info "$1" >/dev/null 2>&1; }
volume_started() { gluster --mode=script volume info "$1" 2>/dev/null | grep -q '^Status: Started'; }

ensure_hosts_line() {
  if ! grep -qF "$HOSTS_MARK" /etc/hosts; then
    # /etc/hosts may be a bind mount (containers): rewrite in place, never replace the file.
    printf '127.0.0.1 %s %s\n' "$GLUSTER_HOST" "$HOSTS_MARK" >>/etc/hosts
    say "mapped $GLUSTER_HOST to 127.0.0.1 in /etc/hosts"
  fi
}

up() {
  command -v glusterd >/dev/null || { echo "glusterd is not installed (scripts/setup.sh --test installs glusterfs-server)" >&2; exit 1; }
  mkdir -p "$GLUSTER_DIR/log" "$GLUSTER_DIR/bricks"
  ensure_hosts_line
  if ! glusterd_ok; then
    say "starting glusterd (log: $GLUSTER_DIR/log/glusterd.log)"
    setsid glusterd -p "$PIDFILE" -l "$GLUSTER_DIR/log/glusterd.log" </dev/null >>"$GLUSTER_DIR/log/glusterd.out" 2>&1
    for _ in $(seq 1 100); do glusterd_ok && break; sleep 0.1; done
    glusterd_ok || { echo "glusterd did not answer; see $GLUSTER_DIR/log/glusterd.log" >&2; exit 1; }
  fi
  for vol in "$GLUSTER_VOLUME" "$STOPPED_VOLUME"; do
    if ! volume_exists "$vol"; then
      mkdir -p "$GLUSTER_DIR/bricks/$vol"
      # force: the brick is on the root file system (fine for one machine's tests).
      gluster --mode=script volume create "$vol" "$GLUSTER_HOST:$GLUSTER_DIR/bricks/$vol" force >/dev/null
      grep -qx "$vol" "$MADE" 2>/dev/null || echo "$vol" >>"$MADE"
      say "created volume $vol"
    fi
  done
  if ! volume_started "$GLUSTER_VOLUME"; then
    gluster --mode=script volume start "$GLUSTER_VOLUME" force >/dev/null
    say "started volume $GLUSTER_VOLUME ($GLUSTER_HOST:/$GLUSTER_VOLUME)"
  fi
  if volume_started "$STOPPED_VOLUME"; then
    gluster --mode=script volume stop "$STOPPED_VOLUME" force >/dev/null
  fi
}

down() {
  if glusterd_ok && [ -s "$MADE" ]; then
    while read -r vol; do
      [ -n "$vol" ] || continue
      volume_started "$vol" && gluster --mode=script volume stop "$vol" force >/dev/null || true
      volume_exists "$vol" && gluster --mode=script volume delete "$vol" >/dev/null || true
      rm -rf "${GLUSTER_DIR:?}/bricks/$vol"
      say "removed volume $vol"
    done <"$MADE"
    rm -f "$MADE"
  fi
  if [ -s "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = glusterd ]; then
      kill "$pid"
      for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
      say "stopped glusterd (PID $pid)"
    fi
    rm -f "$PIDFILE"
  fi
}

status() {
  local rc=0
  if glusterd_ok; then say "glusterd: running"; else say "glusterd: not running"; rc=1; fi
  if grep -qF "$HOSTS_MARK" /etc/hosts; then say "/etc/hosts: $GLUSTER_HOST -> 127.0.0.1"; else say "/etc/hosts: no $GLUSTER_HOST"; rc=1; fi
  if [ $rc = 0 ] && volume_started "$GLUSTER_VOLUME"; then
    say "volume $GLUSTER_VOLUME: started ($GLUSTER_HOST:/$GLUSTER_VOLUME)"
  else
    say "volume $GLUSTER_VOLUME: not started"; rc=1
  fi
  return $rc
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
