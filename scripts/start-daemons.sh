#!/usr/bin/env bash
# Start virtlogd and libvirtd directly (there is no systemd on these machines), detached, with
# their output in log files so nothing holds the caller's terminal or CI's output open.
# Safe to re-run: daemons that already answer are left alone.
set -euo pipefail

LOG_DIR=${PORTAL_DAEMON_LOG_DIR:-/var/log/vmportal}
mkdir -p "$LOG_DIR" /run/libvirt /run/lock
chmod 1777 /run/lock

say() { printf '  %s\n' "$*"; }

if [ -e /dev/kvm ]; then
  # QEMU runs as libvirt-qemu under qemu:///system: let it open /dev/kvm.
  chgrp kvm /dev/kvm 2>/dev/null || true
  chmod 0666 /dev/kvm 2>/dev/null || true
fi

libvirt_ok() { timeout 10 virsh -q -c qemu:///system version >/dev/null 2>&1; }

if ! pgrep -x virtlogd >/dev/null; then
  say "starting virtlogd (log: $LOG_DIR/virtlogd.log)"
  setsid virtlogd -d </dev/null >>"$LOG_DIR/virtlogd.log" 2>&1 || true
fi

if ! pgrep -x libvirtd >/dev/null; then
  say "starting libvirtd (log: $LOG_DIR/libvirtd.log)"
  setsid libvirtd -d </dev/null >>"$LOG_DIR/libvirtd.log" 2>&1 || true
fi

for _ in $(seq 1 50); do
  if libvirt_ok; then
    say "libvirtd answers on qemu:///system ($(virsh -q -c qemu:///system version 2>/dev/null | grep -m1 'Running hypervisor' | sed 's/.*: //'))"
    exit 0
  fi
  sleep 0.2
done
echo "libvirtd did not answer on qemu:///system; see $LOG_DIR/libvirtd.log" >&2
exit 1
