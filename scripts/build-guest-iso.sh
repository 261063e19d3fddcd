#!/usr/bin/env bash
# build-guest-iso.sh - package the tiny busybox guest as a bootable ISO (ISOLINUX, El Torito).
#
# Usage: scripts/build-guest-iso.sh [GUESTDIR]     (default: /var/lib/vmportal/guest)
#
# Reads GUESTDIR/vmlinuz and GUESTDIR/initrd.gz (made by scripts/build-guest.sh) and writes
# GUESTDIR/guest.iso: an ISO 9660 image that SeaBIOS boots from a CD-ROM drive straight into the
# guest (no boot prompt, no delay) with `console=tty0 console=ttyS0,115200`. Without a
# portalroot= option the guest stays in its initramfs and prints its ready marker there:
#   === PORTAL GUEST READY host=iso-guest root=initramfs ... ===
# Tests use it for ISO installs: a VM with an empty disk boots from this CD.
#
# Needs Debian's xorriso, isolinux and syslinux-common (installed when missing, as root).
# Re-running is cheap: when guest.iso exists and GUESTDIR/.iso-stamp matches this script's sha256
# and the kernel's and initrd's sha256, it prints "guest ISO up to date" and exits 0.
set -euo pipefail

GUESTDIR=${1:-/var/lib/vmportal/guest}
ISOLINUX_BIN=/usr/lib/ISOLINUX/isolinux.bin
ISOHYBRID_MBR=/usr/lib/ISOLINUX/isohdpfx.bin
LDLINUX_C32=/usr/lib/syslinux/modules/bios/ldlinux.c32

log() { printf '[build-guest-iso] %s\n' "$*" >&2; }
die() { printf '[build-guest-iso] ERROR: %s\n' "$*" >&2; exit 1; }

[ -s "$GUESTDIR/vmlinuz" ] && [ -s "$GUESTDIR/initrd.gz" ] ||
  die "$GUESTDIR/vmlinuz or initrd.gz is missing: run scripts/build-guest.sh first"
GUESTDIR=$(cd "$GUESTDIR" && pwd)
OUT="$GUESTDIR/guest.iso"

SCRIPT_SHA=$(sha256sum "$(readlink -f "${BASH_SOURCE[0]}")" | cut -d' ' -f1)
stamp_want() {
  printf 'script_sha256=%s kernel_sha256=%s initrd_sha256=%s' "$SCRIPT_SHA" \
    "$(sha256sum "$GUESTDIR/vmlinuz" | cut -d' ' -f1)" "$(sha256sum "$GUESTDIR/initrd.gz" | cut -d' ' -f1)"
}
STAMP_WANT=$(stamp_want)
up_to_date() { [ -s "$OUT" ] && [ "$(cat "$GUESTDIR/.iso-stamp" 2>/dev/null)" = "$STAMP_WANT" ]; }

if up_to_date; then
  echo "guest ISO up to date ($OUT)"
  exit 0
fi

# One build at a time per directory (the guest build uses .lock; this one has its own).
exec 9>"$GUESTDIR/.iso-lock"
flock 9
if up_to_date; then echo "guest ISO up to date ($OUT)"; exit 0; fi

if ! command -v xorriso >/dev/null 2>&1 || [ ! -f "$ISOLINUX_BIN" ] || [ ! -f "$ISOHYBRID_MBR" ] || [ ! -f "$LDLINUX_C32" ]; then
  [ "$(id -u)" = 0 ] || die "xorriso/isolinux/syslinux-common are missing; install them (as root)"
  log "installing xorriso isolinux syslinux-common"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends xorriso isolinux syslinux-common >&2; then
    apt-get update -qq >&2 || true
    apt-get install -y -q --no-install-recommends xorriso isolinux syslinux-common >&2
  fi
fi

WORK=$(mktemp -d "$GUESTDIR/.iso-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/root/isolinux"
cp "$ISOLINUX_BIN" "$LDLINUX_C32" "$WORK/root/isolinux/"
cp "$GUESTDIR/vmlinuz" "$WORK/root/isolinux/vmlinuz"
cp "$GUESTDIR/initrd.gz" "$WORK/root/isolinux/initrd.gz"
# PROMPT 0 and TIMEOUT 0 with one DEFAULT label: ISOLINUX boots it at once, asking nothing.
cat >"$WORK/root/isolinux/isolinux.cfg" <<'EOF'
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT guest
LABEL guest
  KERNEL /isolinux/vmlinuz
  INITRD /isolinux/initrd.gz
  APPEND console=tty0 console=ttyS0,115200 portalhost=iso-guest
EOF

log "writing $OUT"
# -isohybrid-mbr: the same file also boots as a hard disk (SeaBIOS reads the MBR), so converted to a
# disk format it is a bootable disk image too (the image-import test boots it that way).
xorriso -as mkisofs -quiet -o "$WORK/guest.iso" -V PORTAL_GUEST -J -r \
  -isohybrid-mbr "$ISOHYBRID_MBR" \
  -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
  "$WORK/root" >&2
chmod 0644 "$WORK/guest.iso"
mv -f "$WORK/guest.iso" "$OUT"
printf '%s' "$STAMP_WANT" >"$GUESTDIR/.iso-stamp"
echo "guest ISO built: $OUT ($(stat -c %s "$OUT") bytes)"
