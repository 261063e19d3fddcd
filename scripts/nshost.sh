#!/usr/bin/env bash
# nshost.sh - a libvirt "host" of its own on this machine, inside a network namespace.
#
#   scripts/nshost.sh up NAME [--addr 10.99.X.1/24]   start it (prints its client URI)
#   scripts/nshost.sh down NAME [--purge]              stop it (--purge also removes its state dir)
#   scripts/nshost.sh status NAME                      running (exit 0) / stopped (3) / not answering (1)
#   scripts/nshost.sh uri NAME                         its client URI (qemu+unix:// socket in the state dir)
#
# Why: guests with networks need libvirt networks (bridges, dnsmasq, firewall rules). Those must
# never be made in this machine's own (root) network namespace. A namespace host is a second
# libvirtd that lives in network namespace NAME, with a private mount namespace (its own
# /etc/libvirt, /run, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, bind-mounted from
# the state dir), its own hostname (UTS namespace), its own host UUID (derived from NAME, stable)
# and, when tini is installed, its own PID namespace with tini as PID 1: orphaned QEMU processes
# are reaped at once, and everything the host started (QEMU, dnsmasq, virtlogd) dies with it.
# The portal and virsh reach it from the root namespace through a unix socket in the state dir.
#
# State: ${PORTAL_NSHOST_DIR:-/var/lib/vmportal/nshosts}/NAME/
#   etc/    private copy of /etc/libvirt (no domains, networks, pools, secrets, autostart links)
#   run/ varlib/ cache/ log/   the daemon's /run, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt
#   sock/   libvirt-sock (the client URI points here)
#   images/ for a storage pool of this host (never shared with another daemon)
#   log/nshost.log  the daemons' output; log/libvirtd.log, log/virtlogd.log, log/qemu/<domain>.log
#
# --addr gives the namespace an interface (nsh0, one end of a veth pair) with that address and a TCP listener on it
# (qemu+tcp://ADDR/system, no authentication). The pair's other end sits on a bridge in the fabric
# namespace (${PORTAL_NSHOST_FABRIC:-vmp-fabric}), so hosts started with --addr reach each other
# (peer-to-peer live migration, libvirt and QEMU traffic) and nothing else; the fabric is removed
# with its last host.
# Needs root; no systemd. Nothing in the root namespace's routes or firewall is touched.
set -euo pipefail

BASE=${PORTAL_NSHOST_DIR:-/var/lib/vmportal/nshosts}
FABRIC=${PORTAL_NSHOST_FABRIC:-vmp-fabric}   # the namespace whose bridge joins hosts started with --addr
DEADLINE=${PORTAL_NSHOST_TIMEOUT:-90}    # seconds to wait for the daemon to answer / to stop
# PORTAL_NSHOST_TINI=0 starts libvirtd daemonized even where tini is installed (the fallback).

die()  { printf 'nshost: %s\n' "$*" >&2; exit 1; }
note() { printf 'nshost: %s\n' "$*" >&2; }
usage() {
  { echo usage:; sed -n '4,7p' "$0" | sed 's/^#//'; } >&2
  exit 2
}

[ $# -ge 2 ] || usage
CMD=$1 NAME=$2
shift 2
[[ $NAME =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "NAME must be 1-31 lowercase letters, digits or hyphens, starting with a letter"

ADDR="" PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --addr) [ $# -ge 2 ] || usage; ADDR=$2; shift 2 ;;
    --addr=*) ADDR=${1#--addr=}; shift ;;
    --purge) PURGE=1; shift ;;
    *) usage ;;
  esac
done
if [ -n "$ADDR" ]; then
  [[ $ADDR =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]] || die "--addr must look like 10.99.1.1/24"
fi

case "$BASE" in
  /run|/run/*|/var/run|/var/run/*|/etc/libvirt*|/var/lib/libvirt*|/var/cache/libvirt*|/var/log/libvirt*)
    die "PORTAL_NSHOST_DIR=$BASE would be hidden by the host's own bind mounts; choose another place" ;;
esac

S=$BASE/$NAME
SOCK=$S/sock/libvirt-sock
URI="qemu+unix:///system?socket=$SOCK"

# ----------------------------------------------------------------------------------- helpers
netns_exists() { [ -e "/run/netns/$NAME" ]; }

# The inode of the namespace; a process is ours when its network namespace is this one.
netns_inode() { stat -L -c %i "/run/netns/$NAME" 2>/dev/null || true; }
in_our_netns() {   # PID
  local want have
  want=$(netns_inode)
  [ -n "$want" ] || return 1
  have=$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) || return 1
  [ "$have" = "$want" ]
}

# The recorded main PID (tini, or libvirtd without tini), if it is alive and still ours.
main_pid() {
  local pid
  pid=$(cat "$S/pid" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  in_our_netns "$pid" || return 1
  echo "$pid"
}

answers() { timeout 15 virsh -q -c "$URI" version >/dev/null 2>&1; }

# Every process in the namespace (QEMU, dnsmasq, virtlogd, libvirtd, tini, the unshare launcher).
ns_pids() {
  netns_exists || return 0
  ip netns pids "$NAME" 2>/dev/null || true
}

host_uuid() {   # stable per NAME, a valid (version 4 layout) UUID
  local h
  h=$(printf 'vmportal-nshost/%s' "$NAME" | sha256sum | cut -c1-32)
  printf '%s-%s-4%s-8%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}

# A directory skeleton (directories only, owners and modes kept), without per-domain runtime dirs.
copy_skeleton() {   # SRC DST
  mkdir -p "$2"
  [ -d "$1" ] || return 0
  (cd "$1" && find . -maxdepth 2 -type d ! -name 'domain-*' -print0 | cpio -0pdm --quiet "$2" 2>/dev/null) ||
    die "copying the skeleton of $1 failed"
}

prepare_state() {
  mkdir -p "$S"/{run,sock,images,log}
  chmod 755 "$BASE" "$S" "$S/images" 2>/dev/null || true   # QEMU (libvirt-qemu) reaches the pool dir
  if [ ! -f "$S/etc/libvirtd.conf" ]; then
    rm -rf "$S/etc"
    cp -a /etc/libvirt "$S/etc"
    # A private configuration: nothing the root daemon defined comes along.
    find "$S/etc/qemu" -maxdepth 1 -name '*.xml' -delete 2>/dev/null || true
    rm -rf "$S/etc/qemu/autostart" "$S/etc/qemu/networks" "$S/etc/storage" "$S/etc/secrets"
    mkdir -p "$S/etc/qemu" "$S/etc/storage" "$S/etc/secrets"
    chmod 700 "$S/etc/secrets"
  fi
  [ -d "$S/varlib" ] || copy_skeleton /var/lib/libvirt "$S/varlib"
  [ -d "$S/cache" ] || copy_skeleton /var/cache/libvirt "$S/cache"
  [ -d "$S/log/qemu" ] || copy_skeleton /var/log/libvirt "$S/log"

  # The daemons' settings: the package's files plus ours, rewritten on every start.
  local listen=""
  cp /etc/libvirt/libvirtd.conf "$S/etc/libvirtd.conf"
  cp /etc/libvirt/qemu.conf "$S/etc/qemu.conf"
  cp /etc/libvirt/virtlogd.conf "$S/etc/virtlogd.conf"
  {
    printf '\n# --- nshost %s (scripts/nshost.sh) ---\n' "$NAME"
    printf 'unix_sock_dir = "%s"\n' "$S/sock"
    printf 'host_uuid = "%s"\n' "$(host_uuid)"
    printf 'log_outputs = "3:file:%s"\n' "$S/log/libvirtd.log"
    printf 'listen_tls = 0\n'
    if [ -n "$ADDR" ]; then
      printf 'listen_tcp = 1\nlisten_addr = "%s"\nauth_tcp = "none"\n' "${ADDR%/*}"
    else
      printf 'listen_tcp = 0\n'
    fi
  } >>"$S/etc/libvirtd.conf"
  {
    printf '\n# --- nshost %s (scripts/nshost.sh) ---\n' "$NAME"
    # Two daemons would both create /machine/qemu-1-<name>: no cgroups here.
    printf 'cgroup_controllers = [ ]\n'
    if [ -n "$ADDR" ]; then
      printf 'migration_address = "%s"\nmigration_host = "%s"\n' "${ADDR%/*}" "${ADDR%/*}"
      # Cluster hosts share pools on this machine's one file system (a stand-in for NFS): QEMU runs as
      # root and libvirt leaves owners alone, or a migration's source would hand a disk back to root
      # while the destination's QEMU still uses it (libvirt skips that only on a real shared FS).
      printf 'user = "root"\ngroup = "root"\ndynamic_ownership = 0\n'
    fi
  } >>"$S/etc/qemu.conf"
  printf '\nlog_outputs = "3:file:%s"\n' "$S/log/virtlogd.log" >>"$S/etc/virtlogd.conf"
  [ -n "$ADDR" ] && listen=--listen
  if [ -n "$ADDR" ]; then echo "$ADDR" >"$S/addr"; else rm -f "$S/addr"; fi

  # What runs inside the namespaces: private mounts, then virtlogd and libvirtd.
  # $1 = fg (libvirtd in the foreground, under tini) or bg (libvirtd -d).
  cat >"$S/start.sh" <<EOF
#!/bin/sh
# Generated by scripts/nshost.sh for namespace host $NAME; runs inside its namespaces.
set -e
hostname $NAME
mount --bind $S/etc /etc/libvirt
{ cat /etc/hosts; echo "127.0.1.1 $NAME"; } >$S/hosts   # its own name resolves, without DNS
mount --bind $S/hosts /etc/hosts
mount --bind $S/run /run
mkdir -p /run/lock /run/libvirt
chmod 1777 /run/lock                 # console lock files (LCK.._pts_N)
mount --bind $S/varlib /var/lib/libvirt
mount --bind $S/cache /var/cache/libvirt
mount --bind $S/log /var/log/libvirt
virtlogd -d -p /run/virtlogd.pid
if [ "\${1:-fg}" = fg ]; then
  exec libvirtd $listen -p /run/libvirtd.pid
fi
exec libvirtd -d $listen -p /run/libvirtd.pid
EOF
  chmod 755 "$S/start.sh"
}

netns_up() {
  if ! netns_exists; then
    ip netns add "$NAME" || return 1
  fi
  ip -n "$NAME" link set lo up || return 1
  if [ -n "$ADDR" ]; then
    # One end of a veth pair (nsh0) in the host, the other on the fabric's bridge: every namespace
    # host started with --addr reaches the others (migration), never this machine's own network.
    fabric_lock
    fabric_attach
    local rc=$?
    fabric_unlock
    return $rc
  fi
}

# Under the fabric lock: the bridge, this host's veth pair on it, and its address.
fabric_attach() {
  fabric_up || return 1
  local port
  port=$(fabric_port)
  if ! ip -n "$FABRIC" link show "$port" >/dev/null 2>&1; then
    ip -n "$NAME" link del nsh0 >/dev/null 2>&1 || true   # its peer is on a fabric that went away
  fi
  if ! ip -n "$NAME" link show nsh0 >/dev/null 2>&1; then
    ip -n "$FABRIC" link del "$port" >/dev/null 2>&1 || true   # a leftover of a host that died
    ip link add nsh0 netns "$NAME" type veth peer name "$port" netns "$FABRIC" || return 1
  fi
  ip -n "$FABRIC" link set "$port" master br0 || return 1
  ip -n "$FABRIC" link set "$port" up || return 1
  ip -n "$NAME" addr replace "$ADDR" dev nsh0 || return 1
  ip -n "$NAME" link set nsh0 up || return 1
}

# One fabric change at a time on this machine (the per-host lock does not cover it): a host going
# down must never see the bridge "empty" while another host is being attached, nor remove the fabric
# under a host that is on it.
fabric_lock() {
  mkdir -p "$BASE"
  exec 8>"$BASE/.fabric-$FABRIC.lock"
  flock 8
}
fabric_unlock() { exec 8>&-; }

# The fabric: a network namespace holding one bridge that joins the hosts' nsh0 interfaces.
fabric_up() {
  [ -e "/run/netns/$FABRIC" ] || ip netns add "$FABRIC" || return 1
  ip -n "$FABRIC" link set lo up || return 1
  if ! ip -n "$FABRIC" link show br0 >/dev/null 2>&1; then
    ip -n "$FABRIC" link add br0 type bridge || return 1
  fi
  ip -n "$FABRIC" link set br0 up
}

fabric_port() {   # the fabric end of this host's veth (interface names have at most 15 characters)
  printf 'fb%s\n' "$(printf '%s' "$NAME" | sha256sum | cut -c1-10)"
}

# The fabric goes away with its last host.
fabric_down_if_empty() {
  [ -e "/run/netns/$FABRIC" ] || return 0
  local ports
  # Only a listing that worked and shows no port means empty (a failed `ip` must not remove the fabric).
  ports=$(ip -n "$FABRIC" -o link show master br0 2>/dev/null) || return 0
  if [ -z "$ports" ]; then
    ip netns del "$FABRIC" 2>/dev/null || true
  fi
}

# Alive and not a zombie: an orphaned launcher waits for this machine's PID 1 to reap it (slowly).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

wait_gone() {   # PID...: wait until none is alive
  local end=$((SECONDS + DEADLINE)) p alive
  while :; do
    alive=0
    for p in "$@"; do alive "$p" && alive=1; done
    [ "$alive" = 0 ] && return 0
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

# ----------------------------------------------------------------------------------- commands
cmd_uri() { echo "$URI"; }

cmd_status() {
  local pid
  if pid=$(main_pid) && answers; then
    echo "$NAME: running (pid $pid, $(cat "$S/mode" 2>/dev/null || echo '?'), hostname $NAME, uuid $(host_uuid)) $URI"
    return 0
  fi
  if pid=$(main_pid); then
    echo "$NAME: not answering (pid $pid); see $S/log/nshost.log and $S/log/libvirtd.log"
    return 1
  fi
  echo "$NAME: stopped"
  return 3
}

stop_host() {
  local pid pids p
  if pid=$(main_pid); then
    kill -TERM "$pid" 2>/dev/null || true   # tini passes it to libvirtd; PID 1 gone = namespace gone
    if ! wait_gone "$pid"; then
      note "pid $pid did not stop within ${DEADLINE}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" || true
    fi
  fi
  # Whatever is left in the namespace (without tini: QEMU, dnsmasq and virtlogd outlive libvirtd).
  pids=$(ns_pids)
  if [ -n "$pids" ]; then
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    # shellcheck disable=SC2086
    if ! wait_gone $pids; then
      for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
      # shellcheck disable=SC2086
      wait_gone $pids || die "processes $pids in namespace $NAME do not go away"
    fi
  fi
  rm -f "$S/pid" "$S/launcher.pid"
  # Sockets and pid files of the stopped daemons (the next start gets a clean /run).
  if [ -d "$S/run" ]; then find "$S/run" -mindepth 1 -delete 2>/dev/null || true; fi
  if [ -d "$S/sock" ]; then find "$S/sock" -mindepth 1 -delete 2>/dev/null || true; fi
}

cmd_down() {
  stop_host
  if netns_exists; then
    ip netns del "$NAME" || die "cannot remove network namespace $NAME"
  fi
  fabric_lock
  ip -n "$FABRIC" link del "$(fabric_port)" >/dev/null 2>&1 || true
  fabric_down_if_empty
  fabric_unlock
  if grep -qF " $S/" /proc/mounts || grep -qF "/run/netns/$NAME " /proc/mounts; then
    die "something is still mounted for $NAME: $(grep -F -e " $S/" -e "/run/netns/$NAME " /proc/mounts)"
  fi
  if [ "$PURGE" = 1 ]; then rm -rf "$S"; fi
  note "$NAME is down"
}

# A start that went wrong: show the logs' last lines, then leave nothing running (the state dir stays).
fail_up() {
  note "$1; last lines of its logs:"
  tail -n 20 "$S/log/nshost.log" "$S/log/libvirtd.log" >&2 2>/dev/null || true
  cmd_down >/dev/null 2>&1 || true
  exit 1
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "needs root"
  local pid launcher tini_pid end
  if main_pid >/dev/null; then
    # Running already: with --addr, make sure it is (still) on the fabric with that address.
    if [ -n "$ADDR" ]; then netns_up || die "cannot attach $NAME to the fabric"; fi
    end=$((SECONDS + DEADLINE))
    until answers; do
      [ $SECONDS -lt $end ] || die "$NAME runs (pid $(cat "$S/pid")) but does not answer; try: $0 down $NAME"
      sleep 0.2
    done
    cmd_uri
    return 0
  fi
  for tool in ip unshare setsid virsh libvirtd virtlogd cpio; do
    command -v "$tool" >/dev/null || die "$tool is missing"
  done
  stop_host   # leftovers of a host that died (stale pid files, sockets, processes)
  prepare_state
  netns_up || fail_up "cannot set up network namespace $NAME"

  : >>"$S/log/nshost.log"
  printf '\n=== %s up %s ===\n' "$(date -u +%FT%TZ)" "$NAME" >>"$S/log/nshost.log"
  if [ "${PORTAL_NSHOST_TINI:-1}" != 0 ] && command -v tini >/dev/null; then
    echo tini >"$S/mode"
    # ip netns exec and unshare both exec in place: $! is the unshare parent; tini is its child.
    setsid ip netns exec "$NAME" \
      unshare -u -m -p --fork --mount-proc --propagation slave --kill-child=SIGTERM \
      tini -s -- "$S/start.sh" fg </dev/null >>"$S/log/nshost.log" 2>&1 9>&- &
    launcher=$!
    echo "$launcher" >"$S/launcher.pid"
    end=$((SECONDS + 10))
    tini_pid=""
    while [ -z "$tini_pid" ]; do
      tini_pid=$(cat "/proc/$launcher/task/$launcher/children" 2>/dev/null | awk '{print $1}')
      [ -n "$tini_pid" ] && break
      kill -0 "$launcher" 2>/dev/null || fail_up "the namespace launcher exited"
      [ $SECONDS -lt $end ] || fail_up "no tini under the launcher (pid $launcher)"
      sleep 0.05
    done
    echo "$tini_pid" >"$S/pid"
  else
    note "without tini: libvirtd runs daemonized without its own PID namespace (slower reaping)"
    echo daemon >"$S/mode"
    setsid ip netns exec "$NAME" unshare -u -m --propagation slave "$S/start.sh" bg 9>&- \
      </dev/null >>"$S/log/nshost.log" 2>&1 || fail_up "start failed"
    end=$((SECONDS + 10))
    until [ -s "$S/run/libvirtd.pid" ]; do
      [ $SECONDS -lt $end ] || fail_up "libvirtd wrote no pid file"
      sleep 0.05
    done
    cp "$S/run/libvirtd.pid" "$S/pid"
  fi

  end=$((SECONDS + DEADLINE))
  until answers; do
    if ! main_pid >/dev/null || [ $SECONDS -ge $end ]; then
      fail_up "libvirtd in $NAME did not answer within ${DEADLINE}s"
    fi
    sleep 0.2
  done
  cmd_uri
}

lock() {   # one up/down at a time per host
  mkdir -p "$BASE"
  exec 9>"$BASE/.$NAME.lock"
  flock 9
}

case "$CMD" in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  uri) cmd_uri ;;
  *) usage ;;
esac
