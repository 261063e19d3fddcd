#!/usr/bin/env bash
# build-guest.sh - build the tiny bootable Linux guest used by the VM portal.
#
# Usage: scripts/build-guest.sh [OUTDIR]          (default: /var/lib/vmportal/guest)
#
# Produces in OUTDIR:
#   vmlinuz        Debian kernel (bzImage), the one linux-image-amd64 currently depends on
#   initrd.gz      busybox initramfs (busybox-static + the virtio/ext4/acpi modules)
#   root.qcow2     qcow2 (compat 1.1), ext4 labelled "portalroot", 64 MiB virtual,
#                  holding the same busybox userland (boot with portalroot=/dev/vda)
#   manifest.json  kernel_version, sizes, sha256 of each file, built_at
#
# Only Debian's apt mirrors are used (apt-get download + dpkg-deb -x); nothing is
# installed on the host except the build tools (cpio, e2fsprogs, qemu-utils) if missing.
# Re-running is cheap: when all outputs exist and OUTDIR/.stamp matches this script's
# sha256 and the kernel version, it prints "guest image up to date" and exits 0.
#
# Guest kernel command line options understood by the guest:
#   portalroot=/dev/vda   (or LABEL=portalroot / UUID=...) mount that ext4 fs and switch_root into it
#   portalhost=NAME       guest hostname (default portal-guest)
# When the guest is ready it prints to /dev/ttyS0 and /dev/tty0:
#   === PORTAL GUEST READY host=NAME root=/dev/vda|initramfs kernel=KVER uptime=N.NNs ===
#
# Environment: KEEP_BUILD=1 keeps OUTDIR/.build after the run (debugging).
set -euo pipefail

OUTDIR=${1:-/var/lib/vmportal/guest}
ROOT_LABEL=portalroot
ROOT_SIZE=64M
KERNEL_META=linux-image-amd64

# Modules wanted in the guest, in load order (crypto providers before their users).
# Dependencies (modules.dep) and soft dependencies (modinfo softdep=) are added
# automatically. Missing modules are skipped with a warning; built-in ones are noted.
WANTED_MODULES=(
  crc32c_generic crc32c_intel crct10dif_generic crct10dif_pclmul crct10dif_common
  crc64_rocksoft_generic crc64 crc64_rocksoft crc_t10dif crc16 libcrc32c
  virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  scsi_common scsi_mod t10_pi sd_mod cdrom sr_mod
  virtio_blk virtio_scsi failover net_failover virtio_net
  virtio_balloon virtio_console virtio_rng virtio_input
  button evdev
  mbcache jbd2 ext4
)

log()  { printf '[build-guest] %s\n' "$*" >&2; }
warn() { printf '[build-guest] WARNING: %s\n' "$*" >&2; }
die()  { printf '[build-guest] ERROR: %s\n' "$*" >&2; exit 1; }

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_SHA=$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "refreshing apt package lists (apt-get update)"
    apt-get update -qq >&2 || warn "apt-get update failed"
    APT_UPDATED=1
  fi
}

# The concrete kernel image package linux-image-amd64 depends on (never a glob).
# (awk reads all input: an early exit would SIGPIPE apt-cache under pipefail)
kernel_package() {
  apt-cache depends "$KERNEL_META" 2>/dev/null |
    awk '!f && $1 ~ /^\|?(Pre)?Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; f = 1 }'
}
KPKG=$(kernel_package || true)
if [ -z "$KPKG" ]; then
  apt_update_once
  KPKG=$(kernel_package || true)
fi
[ -n "$KPKG" ] || die "cannot find the kernel package that $KERNEL_META depends on (apt-cache depends $KERNEL_META)"
# Kernel version (ABI name) as named by the package; the real one is re-read from the .deb.
KVER_WANT=${KPKG#linux-image-}
KVER_WANT=${KVER_WANT%-unsigned}

STAMP_WANT="script_sha256=$SCRIPT_SHA kernel=$KVER_WANT"

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
OUTPUTS=(vmlinuz initrd.gz root.qcow2 manifest.json)

up_to_date() {
  local f
  for f in "${OUTPUTS[@]}"; do [ -s "$OUTDIR/$f" ] || return 1; done
  [ -f "$OUTDIR/.stamp" ] && [ "$(cat "$OUTDIR/.stamp")" = "$STAMP_WANT" ]
}

if up_to_date; then
  echo "guest image up to date ($OUTDIR, kernel $KVER_WANT)"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building needs root (apt-get, mknod)"

# One build at a time per OUTDIR.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$OUTDIR/.lock"
  flock 9
  if up_to_date; then echo "guest image up to date ($OUTDIR, kernel $KVER_WANT)"; exit 0; fi
fi

# ---------------------------------------------------------------- build tools
need_pkgs=()
command -v cpio     >/dev/null 2>&1 || need_pkgs+=(cpio)
command -v mke2fs   >/dev/null 2>&1 || need_pkgs+=(e2fsprogs)
command -v qemu-img >/dev/null 2>&1 || need_pkgs+=(qemu-utils)
command -v gzip     >/dev/null 2>&1 || need_pkgs+=(gzip)
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (not a Debian system?)"
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing build tools: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; then
    apt_update_once
    apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2
  fi
fi

# ---------------------------------------------------------------- work dir
BUILD="$OUTDIR/.build"
cleanup() {
  if [ "${KEEP_BUILD:-0}" = 1 ]; then log "keeping $BUILD"; else rm -rf "$BUILD"; fi
}
trap cleanup EXIT
rm -rf "$BUILD"
mkdir -p "$BUILD/debs" "$BUILD/x/kernel" "$BUILD/x/busybox" "$BUILD/out"
# apt drops privileges to _apt for downloads; let it write there (avoids a warning).
if id _apt >/dev/null 2>&1; then chown _apt "$BUILD/debs"; fi

log "downloading $KPKG and busybox-static"
apt_download() { (cd "$BUILD/debs" && apt-get download -q "$@" >&2); }
if ! apt_download "$KPKG" busybox-static; then
  apt_update_once
  apt_download "$KPKG" busybox-static
fi
shopt -s nullglob
debs=("$BUILD"/debs/"${KPKG}"_*.deb); KDEB=${debs[0]:-}
debs=("$BUILD"/debs/busybox-static_*.deb); BDEB=${debs[0]:-}
shopt -u nullglob
[ -f "$KDEB" ] || die "kernel .deb not downloaded"
[ -f "$BDEB" ] || die "busybox-static .deb not downloaded"
BB_VER=$(dpkg-deb -f "$BDEB" Version)

log "extracting packages"
dpkg-deb -x "$KDEB" "$BUILD/x/kernel"
dpkg-deb -x "$BDEB" "$BUILD/x/busybox"

KMODBASE="$BUILD/x/kernel/lib/modules"
[ -d "$KMODBASE" ] || KMODBASE="$BUILD/x/kernel/usr/lib/modules"   # merged-/usr layouts
KVER=$(ls "$KMODBASE" 2>/dev/null | sed -n 1p || true)
[ -n "$KVER" ] || die "no lib/modules/<version> in $KDEB"
KSRC="$KMODBASE/$KVER"
VMLINUZ="$BUILD/x/kernel/boot/vmlinuz-$KVER"
[ -f "$VMLINUZ" ] || die "no boot/vmlinuz-$KVER in $KDEB"
BB="$BUILD/x/busybox/bin/busybox"
[ -x "$BB" ] || die "no bin/busybox in $BDEB"
if [ "$KVER" != "$KVER_WANT" ]; then warn "package $KPKG ships kernel $KVER (expected $KVER_WANT)"; fi
log "kernel $KVER, busybox $BB_VER"

# Newer Debian kernels may ship compressed modules; decompress so busybox
# depmod/modprobe see plain .ko files.
if [ -n "$(find "$KSRC" -name '*.ko.xz' -print -quit)" ]; then
  log "decompressing .ko.xz modules"
  find "$KSRC" -name '*.ko.xz' -print0 | xargs -0 -r "$BB" unxz
fi
if [ -n "$(find "$KSRC" -name '*.ko.gz' -print -quit)" ]; then
  find "$KSRC" -name '*.ko.gz' -print0 | xargs -0 -r "$BB" gunzip
fi
if [ -n "$(find "$KSRC" -name '*.ko.zst' -print -quit)" ]; then
  command -v zstd >/dev/null 2>&1 || die "kernel modules are zstd-compressed; install zstd"
  find "$KSRC" -name '*.ko.zst' -print0 | xargs -0 -r zstd -q -d --rm
fi

# ---------------------------------------------------------------- module selection
# Full dependency map of the kernel package (busybox depmod over the whole tree),
# then: name -> path index, transitive deps, softdeps resolved through modules.alias.
log "computing module dependencies"
if [ "$KMODBASE" = "$BUILD/x/kernel/lib/modules" ]; then
  "$BB" depmod -b "$BUILD/x/kernel" "$KVER"
else
  mkdir -p "$BUILD/full/lib/modules"; ln -s "$KSRC" "$BUILD/full/lib/modules/$KVER"
  "$BB" depmod -b "$BUILD/full" "$KVER"
fi
[ -s "$KSRC/modules.dep" ] || die "depmod produced no modules.dep"
awk -F': *' '{ n = $1; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub("-", "_", n);
               print n "\t" $1 "\t" $2 }' "$KSRC/modules.dep" > "$BUILD/modindex"

norm() { printf '%s' "$1" | tr '-' '_'; }
mod_line() { awk -F'\t' -v n="$1" '$1 == n { print; exit }' "$BUILD/modindex"; }
is_builtin() {
  [ -f "$KSRC/modules.builtin" ] &&
    sed -e 's#.*/##' -e 's/\.ko$//' -e 's/-/_/g' "$KSRC/modules.builtin" | grep -qx "$1"
}
alias_to_modules() {   # alias name -> module names (may be several)
  [ -f "$KSRC/modules.alias" ] || return 0
  awk -v a="$1" '$1 == "alias" && $2 == a { print $3 }' "$KSRC/modules.alias"
}

declare -A SELECTED=()      # name -> 1 (module file found and selected)
declare -A SEEN=()
FILES=()                    # relative .ko paths to copy
MODLIST=()                  # module names for modprobe, in load order
SOFT=()                     # modules pulled in only as soft dependencies
SKIPPED=()
BUILTIN=()

add_module() {   # $1 name, $2 wanted|dep|soft
  local name line path deps d sd m
  name=$(norm "$1")
  if [ -n "${SEEN[$name]:-}" ]; then return 0; fi
  SEEN[$name]=1
  line=$(mod_line "$name")
  if [ -z "$line" ]; then
    if is_builtin "$name"; then
      BUILTIN+=("$name")
    elif [ "$2" != soft ]; then
      warn "module $name not in kernel $KVER - skipped"; SKIPPED+=("$name")
    fi
    return 0
  fi
  path=$(printf '%s' "$line" | cut -f2)
  deps=$(printf '%s' "$line" | cut -f3)
  SELECTED[$name]=1
  FILES+=("$path")
  if [ "$2" = soft ]; then SOFT+=("$name"); fi
  for d in $deps; do
    d=${d##*/}
    add_module "${d%.ko}" dep
  done
  # soft dependencies (e.g. ext4 -> crypto-crc32c, crc-t10dif -> crct10dif)
  for sd in $(tr '\0' '\n' < "$KSRC/$path" | grep -a '^softdep=' | sed 's/^softdep=//' |
              tr ' ' '\n' | grep -v -e '^pre:$' -e '^post:$' -e '^$' || true); do
    if [ -n "$(mod_line "$(norm "$sd")")" ]; then
      add_module "$sd" soft
    else
      for m in $(alias_to_modules "$sd"); do add_module "$m" soft; done
    fi
  done
  return 0
}

for m in "${WANTED_MODULES[@]}"; do
  add_module "$m" wanted
  if [ -n "${SELECTED[$(norm "$m")]:-}" ]; then MODLIST+=("$(norm "$m")"); fi
done
# soft (pre-)dependencies that were not wanted explicitly go first
for m in "${SOFT[@]}"; do
  case " ${MODLIST[*]} " in *" $m "*) ;; *) MODLIST=("$m" "${MODLIST[@]}") ;; esac
done
[ ${#FILES[@]} -gt 0 ] || die "no kernel modules selected"

# ---------------------------------------------------------------- root tree
R="$BUILD/root"
log "assembling busybox root tree"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,proc,sys,dev,tmp,run,root,newroot,mnt,var/log} \
         "$R/usr/share/udhcpc" "$R/lib/modules/$KVER"
chmod 1777 "$R/tmp"
chmod 700 "$R/root"
install -m 0755 "$BB" "$R/bin/busybox"
for a in $("$BB" --list-full); do
  [ -e "$R/$a" ] || [ -L "$R/$a" ] || ln -s /bin/busybox "$R/$a"
done
mknod -m 600 "$R/dev/console" c 5 1
mknod -m 666 "$R/dev/null"    c 1 3
mknod -m 620 "$R/dev/ttyS0"   c 4 64
mknod -m 620 "$R/dev/tty0"    c 4 0

# modules + busybox depmod for the guest
printf '%s\n' "${FILES[@]}" | sort -u > "$BUILD/modfiles"
(cd "$KSRC" && tar cf - -T "$BUILD/modfiles") | tar xf - -C "$R/lib/modules/$KVER"
for f in modules.builtin modules.builtin.modinfo modules.order; do
  if [ -f "$KSRC/$f" ]; then cp "$KSRC/$f" "$R/lib/modules/$KVER/"; fi
done
"$BB" depmod -b "$R" "$KVER"
printf '%s\n' "${MODLIST[@]}" > "$R/etc/portal-modules"

# verify: every module we will modprobe resolves with all dependency files present
RDEP="$R/lib/modules/$KVER/modules.dep"
for m in "${MODLIST[@]}"; do
  line=$(awk -F': *' -v n="$m" '{ b = $1; sub(/.*\//, "", b); sub(/\.ko$/, "", b); gsub("-", "_", b);
                                  if (b == n) { print; exit } }' "$RDEP")
  [ -n "$line" ] || die "guest modules.dep has no entry for $m"
  for f in ${line/:/ }; do
    [ -f "$R/lib/modules/$KVER/$f" ] || die "module $m: dependency $f missing in guest tree"
  done
done
log "modules: ${#MODLIST[@]} to load, $(wc -l < "$BUILD/modfiles") files; built-in: ${BUILTIN[*]:-none}; skipped: ${SKIPPED[*]:-none}"

# ---- /init (initramfs PID 1)
cat > "$R/init" <<'EOF'
#!/bin/sh
# portal guest initramfs init
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in $(cat /etc/portal-modules); do modprobe -q "$m" 2>/dev/null; done

root=
for arg in $(cat /proc/cmdline); do
  case "$arg" in portalroot=*) root=${arg#portalroot=} ;; esac
done

if [ -n "$root" ]; then
  dev=$root
  i=0
  while [ $i -lt 50 ]; do            # wait up to 5 s for the disk to show up
    case "$root" in
      LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null) || dev= ;;
    esac
    [ -n "$dev" ] && [ -b "$dev" ] && break
    sleep 0.1; i=$((i + 1))
  done
  if [ -n "$dev" ] && [ -b "$dev" ] && mount -t ext4 -o rw "$dev" /newroot; then
    if [ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ]; then
      for d in dev proc sys; do
        mkdir -p /newroot/$d
        mount --move /$d /newroot/$d 2>/dev/null || umount /$d 2>/dev/null
      done
      exec switch_root /newroot /sbin/init
    fi
    echo "WARNING: portalroot=$root has no /sbin/init - staying on the initramfs" > /dev/console
    umount /newroot 2>/dev/null
  else
    echo "WARNING: cannot mount portalroot=$root (ext4) - staying on the initramfs" > /dev/console
  fi
fi
exec /sbin/init
EOF
chmod 0755 "$R/init"

# ---- busybox init
cat > "$R/etc/inittab" <<'EOF'
::sysinit:/etc/rc
ttyS0::respawn:-/bin/sh
tty1::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
EOF

cat > "$R/etc/rc" <<'EOF'
#!/bin/sh
# portal guest system start (busybox init sysinit)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mounted() { [ -r /proc/mounts ] && awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
mounted /proc || mount -t proc proc /proc
mounted /sys  || mount -t sysfs sysfs /sys
mounted /dev  || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts -o mode=620,ptmxmode=666 devpts /dev/pts
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mkdir -p /run
mounted /run || mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run

modprobe -a -q $(cat /etc/portal-modules) 2>/dev/null

name=portal-guest
for arg in $(cat /proc/cmdline); do
  case "$arg" in portalhost=?*) name=${arg#portalhost=} ;; esac
done
hostname "$name"

# ACPI power button -> /etc/acpi/PWRF/00000080 -> poweroff
acpid -c /etc/acpi -l /tmp/acpid.log

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up 2>/dev/null
  ( udhcpc -i eth0 -b -q -s /usr/share/udhcpc/default.script > /tmp/udhcpc.log 2>&1 & ) || true
fi

rootdev=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts)
case "$rootdev" in /dev/*) ;; *) rootdev=initramfs ;; esac
read up rest < /proc/uptime
msg="=== PORTAL GUEST READY host=$(hostname) root=$rootdev kernel=$(uname -r) uptime=${up}s ==="
echo "$msg" > /run/portal-ready
for t in /dev/ttyS0 /dev/tty0; do
  [ -c "$t" ] && echo "$msg" > "$t" 2>/dev/null
done
exit 0
EOF
chmod 0755 "$R/etc/rc"

printf '#!/bin/sh\npoweroff\n' > "$R/etc/acpi/PWRF/00000080"
chmod 0755 "$R/etc/acpi/PWRF/00000080"

cat > "$R/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# busybox udhcpc event script: $1 = deconfig | bound | renew | leasefail | nak
[ -n "$interface" ] || exit 1
prefix() {   # dotted netmask -> prefix length
  n=0; IFS=.; set -- $1; unset IFS
  for o in "$@"; do
    case $o in 255) n=$((n+8));; 254) n=$((n+7));; 252) n=$((n+6));; 248) n=$((n+5));;
               240) n=$((n+4));; 224) n=$((n+3));; 192) n=$((n+2));; 128) n=$((n+1));; esac
  done
  echo $n
}
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface" 2>/dev/null
    ip link set "$interface" up
    ;;
  bound|renew)
    bits=${mask:-}
    [ -n "$bits" ] || bits=$( [ -n "${subnet:-}" ] && prefix "$subnet" || echo 24 )
    [ "$1" = bound ] && ip -4 addr flush dev "$interface" 2>/dev/null
    ip addr replace "$ip/$bits" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    if [ -n "${router:-}" ]; then
      while ip route del default dev "$interface" 2>/dev/null; do :; done
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    if [ -n "${dns:-}" ]; then
      { [ -n "${domain:-}" ] && echo "search $domain"
        for d in $dns; do echo "nameserver $d"; done; } > /etc/resolv.conf
    fi
    ;;
esac
exit 0
EOF
chmod 0755 "$R/usr/share/udhcpc/default.script"

cat > "$R/etc/passwd" <<'EOF'
root::0:0:root:/root:/bin/sh
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
EOF
cat > "$R/etc/profile" <<'EOF'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
export PS1='\h:\w# '
[ -f /etc/motd ] && cat /etc/motd
cd "$HOME" 2>/dev/null
EOF
cat > "$R/etc/motd" <<EOF
VM portal busybox guest (kernel $KVER, busybox $BB_VER). 'poweroff' to stop.
EOF
echo portal-guest > "$R/etc/hostname"
: > "$R/etc/resolv.conf"
ln -s /proc/mounts "$R/etc/mtab"

# ---------------------------------------------------------------- images
O="$BUILD/out"
cp "$VMLINUZ" "$O/vmlinuz"

log "packing initrd.gz"
(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 -n > "$O/initrd.gz"

log "building ext4 root ($ROOT_SIZE, label $ROOT_LABEL)"
mke2fs -q -t ext4 -L "$ROOT_LABEL" -d "$R" "$BUILD/rootfs.img" "$ROOT_SIZE" >/dev/null
qemu-img convert -O qcow2 -o compat=1.1 "$BUILD/rootfs.img" "$O/root.qcow2"
qemu-img check -q "$O/root.qcow2" >/dev/null

# ---------------------------------------------------------------- manifest + install
fsize() { stat -c %s "$1"; }
fsha()  { sha256sum "$1" | cut -d' ' -f1; }
json_list() { local s="" x; for x in "$@"; do s+="${s:+, }\"$x\""; done; printf '[%s]' "$s"; }
VSIZE=$(qemu-img info --output=json "$O/root.qcow2" | awk -F'[:,]' '!f && /"virtual-size"/ { gsub(/ /, "", $2); print $2; f = 1 }')
BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
  printf '{\n'
  printf '  "kernel_version": "%s",\n' "$KVER"
  printf '  "kernel_package": "%s",\n' "$KPKG"
  printf '  "kernel_package_version": "%s",\n' "$(dpkg-deb -f "$KDEB" Version)"
  printf '  "busybox_version": "%s",\n' "$BB_VER"
  printf '  "root_label": "%s",\n' "$ROOT_LABEL"
  printf '  "root_virtual_size": %s,\n' "${VSIZE:-0}"
  printf '  "kernel_cmdline": "console=tty0 console=ttyS0,115200 portalroot=/dev/vda",\n'
  printf '  "modules": %s,\n' "$(json_list "${MODLIST[@]}")"
  printf '  "sizes": {"vmlinuz": %s, "initrd.gz": %s, "root.qcow2": %s},\n' \
    "$(fsize "$O/vmlinuz")" "$(fsize "$O/initrd.gz")" "$(fsize "$O/root.qcow2")"
  printf '  "sha256": {"vmlinuz": "%s", "initrd.gz": "%s", "root.qcow2": "%s"},\n' \
    "$(fsha "$O/vmlinuz")" "$(fsha "$O/initrd.gz")" "$(fsha "$O/root.qcow2")"
  printf '  "built_at": "%s",\n' "$BUILT_AT"
  printf '  "script_sha256": "%s"\n' "$SCRIPT_SHA"
  printf '}\n'
} > "$O/manifest.json"

# Replace outputs (each rename is atomic; the stamp goes last).
rm -f "$OUTDIR/.stamp"
for f in vmlinuz initrd.gz root.qcow2 manifest.json; do
  chmod 0644 "$O/$f"
  mv -f "$O/$f" "$OUTDIR/$f"
done
printf '%s\n' "$STAMP_WANT" > "$OUTDIR/.stamp"

log "done: $OUTDIR"
for f in vmlinuz initrd.gz root.qcow2; do
  printf '  %-12s %10s bytes\n' "$f" "$(fsize "$OUTDIR/$f")"
done
