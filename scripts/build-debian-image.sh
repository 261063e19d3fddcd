#!/usr/bin/env bash
# build-debian-image.sh - build the Debian 12 cloud-init guest image of the VM portal, offline from
# Debian's packages (debootstrap + apt in a chroot; no cloud image is downloaded, nothing is booted).
#
# Usage: scripts/build-debian-image.sh [OUTDIR]        (default: /var/lib/vmportal/debian-12)
#
# Produces in OUTDIR:
#   vmlinuz          the image's own kernel (linux-image-cloud-amd64), for direct kernel boot
#   initrd.img       its initramfs (initramfs-tools, built in the chroot)
#   debian-12.qcow2  qcow2 (compat 1.1) of a 3 GiB ext4 filesystem, no partition table, no boot
#                    loader: boot with root=/dev/vda rw console=ttyS0. VMs are thin overlays on it.
#   manifest.json    versions, sizes, sha256 of each file, login user, build time
# The guest runs systemd, cloud-init (NoCloud / ConfigDrive datasources), OpenSSH and ifupdown +
# isc-dhcp-client. No SSH host keys and no machine-id are baked in: each VM makes its own at first
# boot (cloud-init's ssh module, or portal-ssh-hostkeys.service where cloud-init did not).
#
# Re-running is cheap: when all outputs exist and OUTDIR/.stamp matches this script's sha256, it
# prints "debian image up to date" and exits 0. Downloaded packages are kept in OUTDIR/.cache (only
# the ones the image holds) so a rebuild after a change of this script downloads little.
#
# Progress: "[build-debian] step N/M: ..." lines on stderr (the portal's image.build job shows them).
# Environment: KEEP_BUILD=1 keeps OUTDIR/.build after the run (debugging);
#              DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR override the mirrors read from apt's sources.
set -euo pipefail

OUTDIR=${1:-/var/lib/vmportal/debian-12}
SUITE=bookworm
IMAGE=debian-12.qcow2
DISK_SIZE=3G
FS_LABEL=portal-debian
CMDLINE="root=/dev/vda rw console=ttyS0"
STEPS=8
# Installed by debootstrap from the release. The kernel and cloud-init come afterwards, from apt in
# the chroot with the security suite enabled: the kernel so that only its current version is
# installed (and its initramfs made once, with fstab in place); cloud-init because debootstrap does
# not resolve the virtual python3-cffi-backend-api-* that python3-cryptography needs (so
# python3-cffi-backend goes first).
INCLUDE=systemd-sysv,udev,dbus,openssh-server,ifupdown,isc-dhcp-client,netbase,iproute2,iputils-ping,sudo,ca-certificates,e2fsprogs,locales,less,qemu-guest-agent,initramfs-tools
CHROOT_PKGS=(python3-cffi-backend cloud-init linux-image-cloud-amd64)

log()  { printf '[build-debian] %s\n' "$*" >&2; }
step() { STEP_NO=$((STEP_NO + 1)); printf '[build-debian] step %d/%d: %s\n' "$STEP_NO" "$STEPS" "$*" >&2; }
warn() { printf '[build-debian] WARNING: %s\n' "$*" >&2; }
die()  { printf '[build-debian] ERROR: %s\n' "$*" >&2; exit 1; }
STEP_NO=0

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_SHA=$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)
STAMP_WANT="script_sha256=$SCRIPT_SHA suite=$SUITE"

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
OUTPUTS=(vmlinuz initrd.img "$IMAGE" manifest.json)

up_to_date() {
  local f
  for f in "${OUTPUTS[@]}"; do [ -s "$OUTDIR/$f" ] || return 1; done
  [ -f "$OUTDIR/.stamp" ] && [ "$(cat "$OUTDIR/.stamp")" = "$STAMP_WANT" ]
}

if up_to_date; then
  echo "debian image up to date ($OUTDIR)"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building needs root (debootstrap, chroot, mount)"

# One build at a time per OUTDIR (a second caller waits, then finds the image up to date).
exec 9>"$OUTDIR/.lock"
flock 9
if up_to_date; then echo "debian image up to date ($OUTDIR)"; exit 0; fi

START_TS=$(date +%s)
BUILD="$OUTDIR/.build"
R="$BUILD/root"
CACHE="$OUTDIR/.cache/debs"

# ---------------------------------------------------------------- mounts and clean-up
# Everything mounted under $BUILD is unmounted on every exit path, deepest first, before anything
# is deleted (the chroot's /dev is the host's /dev: deleting through a live bind mount would be a
# disaster, so removal also never crosses file systems).
unmount_all() {
  local m
  for m in $(awk -v b="$BUILD/" 'index($2, b) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "could not unmount $m"
  done
}
cleanup() {
  local rc=$?
  unmount_all
  if [ "${KEEP_BUILD:-0}" = 1 ]; then
    log "keeping $BUILD"
  elif ! awk -v b="$BUILD/" 'index($2, b) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
    rm -rf --one-file-system "$BUILD"
  else
    warn "mounts left under $BUILD; not deleting it"
  fi
  [ "$rc" = 0 ] || log "failed (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

unmount_all   # a build killed hard (SIGKILL) may have left its mounts behind
if awk -v b="$BUILD/" 'index($2, b) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
  die "mounts left under $BUILD from an earlier build; unmount them first"
fi
rm -rf --one-file-system "$BUILD"
mkdir -p "$R" "$CACHE"

# ---------------------------------------------------------------- 1. tools and mirrors
step "checking build tools and the apt mirror"
APT_UPDATED=0
apt_install_host() {
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >&2; then
    [ "$APT_UPDATED" = 1 ] || { apt-get update -q >&2 || warn "apt-get update failed"; APT_UPDATED=1; }
    apt-get install -y -q --no-install-recommends "$@" >&2
  fi
}
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v mkfs.ext4   >/dev/null 2>&1 || need+=(e2fsprogs)
command -v qemu-img    >/dev/null 2>&1 || need+=(qemu-utils)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  log "installing build tools: ${need[*]}"
  apt_install_host "${need[@]}"
fi

# The mirror this machine's apt uses for $SUITE (deb822 .sources or one-line .list files).
apt_uri_for() {   # $1 = suite; prints the first URI that serves it with the main component
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v want="$1" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " want " ") &&
            (" " comps " ") ~ / main /) { split(uris, u, " "); print u[1]; found = 1; exit }
        types = ""; uris = ""; suites = ""; comps = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { line = $0; key = tolower(line); sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val; else if (key == "uris") uris = val
        else if (key == "suites") suites = val; else if (key == "components") comps = val
        else if (key == "enabled") enabled = tolower(val) }
      END { if (!found) flush() }' "$f"
  done
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    awk -v want="$1" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                    if ($(i + 1) == want) { for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit } } }'
}
MIRROR=${DEBIAN_MIRROR:-$(apt_uri_for "$SUITE" | sed -n 1p)}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(apt_uri_for "$SUITE-security" | sed -n 1p)}
if [ -z "$MIRROR" ]; then
  MIRROR=http://deb.debian.org/debian
  warn "no apt source for $SUITE main found; using $MIRROR"
fi
[ -n "$SECURITY" ] || SECURITY=http://deb.debian.org/debian-security
MIRROR=${MIRROR%/}; SECURITY=${SECURITY%/}
log "mirror $MIRROR, security $SECURITY"

# ---------------------------------------------------------------- 2. debootstrap
step "debootstrap: minimal Debian 12 ($SUITE) with systemd and OpenSSH (about a minute)"
if ! debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE" \
       --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
       "$SUITE" "$R" "$MIRROR" > "$BUILD/debootstrap.log" 2>&1; then
  tail -n 30 "$BUILD/debootstrap.log" >&2
  [ -f "$R/debootstrap/debootstrap.log" ] && tail -n 30 "$R/debootstrap/debootstrap.log" >&2
  die "debootstrap failed"
fi

# ---------------------------------------------------------------- 3. chroot: updates + cloud-init
step "installing security updates, the cloud kernel and cloud-init in the chroot"
mountpoint -q "$R/proc"    || mount -t proc proc "$R/proc"
mountpoint -q "$R/sys"     || mount -t sysfs sysfs "$R/sys"
mountpoint -q "$R/dev"     || mount --bind /dev "$R/dev"
mountpoint -q "$R/dev/pts" || mount --bind /dev/pts "$R/dev/pts"
mkdir -p "$R/var/cache/apt/archives"
mount --bind "$CACHE" "$R/var/cache/apt/archives"
cp -L /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || : > "$R/etc/resolv.conf"
# No service starts inside the chroot; dpkg skips fsync (the image is packed afterwards anyway).
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod 0755 "$R/usr/sbin/policy-rc.d"
echo force-unsafe-io > "$R/etc/dpkg/dpkg.cfg.d/zz-portal-build"

# fstab before the kernel: the initramfs made when it is installed fsck-checks the root it names.
cat > "$R/etc/fstab" <<'EOF'
# The portal boots this image's kernel directly with root=/dev/vda (ext4, no partition table).
/dev/vda  /  ext4  defaults,errors=remount-ro  0  1
EOF
cat > "$R/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -f "$R/etc/apt/sources.list"

in_chroot() { LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$R" "$@"; }
APT=(apt-get -y -q -o APT::Sandbox::User=root -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
{
  in_chroot "${APT[@]}" update &&
  in_chroot "${APT[@]}" dist-upgrade &&
  # python3-cffi-backend first: it provides the virtual package python3-cryptography needs.
  in_chroot "${APT[@]}" install --no-install-recommends "${CHROOT_PKGS[0]}" &&
  in_chroot "${APT[@]}" install --no-install-recommends "${CHROOT_PKGS[@]:1}"
} > "$BUILD/apt.log" 2>&1 || { tail -n 40 "$BUILD/apt.log" >&2; die "apt-get in the chroot failed"; }

# The kernel linux-image-cloud-amd64 depends on, and the only one installed.
KPKG=$(in_chroot dpkg-query -W -f='${Depends}' linux-image-cloud-amd64 |
       tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | sed -n 1p)
[ -n "$KPKG" ] || die "cannot tell which kernel linux-image-cloud-amd64 depends on"
KVER=${KPKG#linux-image-}; KVER=${KVER%-unsigned}
[ "$(ls "$R"/boot/vmlinuz-* | wc -l)" = 1 ] || die "more than one kernel in /boot: $(ls "$R"/boot)"

# ---------------------------------------------------------------- 4. configure
step "configuring: serial console, network, cloud-init, SSH host keys, locale"
echo debian > "$R/etc/hostname"
cat > "$R/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	debian

::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
# ifupdown: loopback here; cloud-init writes the NICs' configuration into interfaces.d.
mkdir -p "$R/etc/network/interfaces.d"
cat > "$R/etc/network/interfaces" <<'EOF'
# Loopback; cloud-init writes the network interfaces into /etc/network/interfaces.d/.
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
EOF

# Serial console login (the portal's terminal is ttyS0).
mkdir -p "$R/etc/systemd/system/getty.target.wants"
ln -sf /lib/systemd/system/serial-getty@.service \
       "$R/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"

# cloud-init: only the datasources the portal offers (no minutes spent probing cloud metadata
# addresses; the NoCloud seed is a disk labelled "cidata"); /etc/hosts names the VM (sudo looks it
# up); apt's sources stay the ones written here; no grub (the kernel is booted directly). Host keys:
# ed25519 and ECDSA only (an RSA key costs seconds of an emulated first boot; no DSA).
cat > "$R/etc/cloud/cloud.cfg.d/90-portal.cfg" <<'EOF'
# VM portal image (scripts/build-debian-image.sh): the portal attaches a NoCloud seed (cidata).
datasource_list: [ NoCloud, ConfigDrive, None ]
manage_etc_hosts: true
ssh_genkeytypes: [ ed25519, ecdsa ]
apt:
  preserve_sources_list: true
grub_dpkg:
  enabled: false
EOF

# SSH host keys are made per VM at first boot, never baked into the image: cloud-init's ssh module
# makes them; this unit covers a boot where cloud-init did not (it runs only while keys are missing).
rm -f "$R"/etc/ssh/ssh_host_*
cat > "$R/etc/ssh/sshd_config.d/10-portal-hostkeys.conf" <<'EOF'
# Host keys made per VM at first boot (cloud-init, or portal-ssh-hostkeys.service).
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
EOF
cat > "$R/etc/systemd/system/portal-ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate missing SSH host keys (VM portal image)
After=cloud-init.service
Before=ssh.service
ConditionPathExists=|!/etc/ssh/ssh_host_ed25519_key
ConditionPathExists=|!/etc/ssh/ssh_host_ecdsa_key

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for t in ed25519 ecdsa; do f=/etc/ssh/ssh_host_$${t}_key; [ -s $$f ] || ssh-keygen -q -t $$t -N "" -f $$f; done'

[Install]
WantedBy=multi-user.target ssh.service
EOF
mkdir -p "$R/etc/systemd/system/multi-user.target.wants" "$R/etc/systemd/system/ssh.service.wants"
ln -sf /etc/systemd/system/portal-ssh-hostkeys.service "$R/etc/systemd/system/multi-user.target.wants/"
ln -sf /etc/systemd/system/portal-ssh-hostkeys.service "$R/etc/systemd/system/ssh.service.wants/"

# Locale generated now: cloud-init would otherwise run locale-gen at first boot (slow when emulated).
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$R/etc/locale.gen"
grep -q '^en_US.UTF-8 UTF-8' "$R/etc/locale.gen" || echo 'en_US.UTF-8 UTF-8' >> "$R/etc/locale.gen"
in_chroot locale-gen >> "$BUILD/apt.log" 2>&1 || die "locale-gen failed"
in_chroot update-locale LANG=en_US.UTF-8 >> "$BUILD/apt.log" 2>&1 || die "update-locale failed"

[ -f "$R/boot/vmlinuz-$KVER" ] || die "no /boot/vmlinuz-$KVER in the image"
[ -f "$R/boot/initrd.img-$KVER" ] || die "no /boot/initrd.img-$KVER in the image"

# The user cloud-init creates (system_info.default_user in Debian's cloud.cfg).
LOGIN_USER=$(awk '/^system_info:/ { s = 1 } s && /default_user:/ { d = 1; next }
                  s && d && $1 == "name:" { print $2; exit }' "$R/etc/cloud/cloud.cfg")
LOGIN_USER=${LOGIN_USER:-debian}

# ---------------------------------------------------------------- 5. clean
step "cleaning: apt caches and lists, logs, machine-id, cloud-init state"
CLOUD_INIT_VERSION=$(in_chroot dpkg-query -W -f='${Version}' cloud-init)
KPKG_VERSION=$(in_chroot dpkg-query -W -f='${Version}' "$KPKG")
DEBIAN_VERSION=$(cat "$R/etc/debian_version")
N_PACKAGES=$(in_chroot dpkg-query -W -f='${db:Status-Abbrev}\n' | grep -c '^ii')
# keep in the download cache only the packages the image holds
in_chroot dpkg-query -W -f='${Package}_${Version}_${Architecture}.deb\n' | sed 's/:/%3a/g' > "$BUILD/keep"
for f in "$CACHE"/*.deb; do
  [ -e "$f" ] || continue
  grep -qxF "${f##*/}" "$BUILD/keep" || rm -f "$f"
done
rm -rf "$CACHE/partial" "$CACHE/lock"
umount "$R/var/cache/apt/archives"
unmount_all
rm -f "$R/usr/sbin/policy-rc.d" "$R/etc/dpkg/dpkg.cfg.d/zz-portal-build"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/apt/*.bin "$R"/var/lib/apt/lists/*
mkdir -p "$R/var/lib/apt/lists/partial" "$R/var/cache/apt/archives/partial"
rm -rf "$R"/var/lib/cloud/* "$R"/var/log/cloud-init*.log "$R/debootstrap"
find "$R/var/log" -type f \( -name '*.log' -o -name '*.gz' -o -name '*.[0-9]' \) -delete
: > "$R/etc/machine-id"                 # systemd makes one per VM at first boot
rm -f "$R/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$R/var/lib/dbus/machine-id" 2>/dev/null || true
rm -f "$R"/etc/ssh/ssh_host_* "$R/var/lib/systemd/random-seed"
: > "$R/etc/resolv.conf"
rm -rf "$R"/tmp/* "$R"/var/tmp/* "$R/root/.bash_history"
ls "$R"/etc/ssh/ssh_host_* >/dev/null 2>&1 && die "SSH host keys left in the image"

# ---------------------------------------------------------------- 6. file system
ROOTFS_BYTES=$(du -sb --one-file-system "$R" | cut -f1)
step "building the ext4 file system ($DISK_SIZE, $((ROOTFS_BYTES / 1048576)) MiB of files)"
cp "$R/boot/vmlinuz-$KVER" "$BUILD/vmlinuz"
cp "$R/boot/initrd.img-$KVER" "$BUILD/initrd.img"
truncate -s "$DISK_SIZE" "$BUILD/root.raw"
mkfs.ext4 -q -F -L "$FS_LABEL" -d "$R" "$BUILD/root.raw" >/dev/null
e2fsck -fn "$BUILD/root.raw" >/dev/null 2>&1 || die "the new file system does not check clean"

# ---------------------------------------------------------------- 7. qcow2
step "converting to qcow2"
qemu-img convert -O qcow2 -o compat=1.1 "$BUILD/root.raw" "$BUILD/$IMAGE"
rm -f "$BUILD/root.raw"
qemu-img check -q "$BUILD/$IMAGE" >/dev/null

# ---------------------------------------------------------------- 8. manifest + install
step "writing the manifest"
fsize() { stat -c %s "$1"; }
fsha()  { sha256sum "$1" | cut -d' ' -f1; }
VSIZE=$(qemu-img info --output=json "$BUILD/$IMAGE" | awk -F'[:,]' '!f && /"virtual-size"/ { gsub(/ /, "", $2); print $2; f = 1 }')
BUILD_SECONDS=$(( $(date +%s) - START_TS ))
{
  printf '{\n'
  printf '  "name": "debian-12",\n'
  printf '  "debian_version": "%s",\n' "$DEBIAN_VERSION"
  printf '  "suite": "%s",\n' "$SUITE"
  printf '  "kernel_version": "%s",\n' "$KVER"
  printf '  "kernel_package": "%s",\n' "$KPKG"
  printf '  "kernel_package_version": "%s",\n' "$KPKG_VERSION"
  printf '  "cloud_init_version": "%s",\n' "$CLOUD_INIT_VERSION"
  printf '  "packages": %s,\n' "$N_PACKAGES"
  printf '  "login_user": "%s",\n' "$LOGIN_USER"
  printf '  "kernel_cmdline": "%s",\n' "$CMDLINE"
  printf '  "fs_label": "%s",\n' "$FS_LABEL"
  printf '  "rootfs_bytes": %s,\n' "$ROOTFS_BYTES"
  printf '  "root_virtual_size": %s,\n' "${VSIZE:-0}"
  printf '  "sizes": {"vmlinuz": %s, "initrd.img": %s, "%s": %s},\n' \
    "$(fsize "$BUILD/vmlinuz")" "$(fsize "$BUILD/initrd.img")" "$IMAGE" "$(fsize "$BUILD/$IMAGE")"
  printf '  "sha256": {"vmlinuz": "%s", "initrd.img": "%s", "%s": "%s"},\n' \
    "$(fsha "$BUILD/vmlinuz")" "$(fsha "$BUILD/initrd.img")" "$IMAGE" "$(fsha "$BUILD/$IMAGE")"
  printf '  "mirror": "%s",\n' "$MIRROR"
  printf '  "build_seconds": %s,\n' "$BUILD_SECONDS"
  printf '  "built_at": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '  "script_sha256": "%s"\n' "$SCRIPT_SHA"
  printf '}\n'
} > "$BUILD/manifest.json"

# Replace the outputs (each rename is atomic; the stamp goes last).
rm -f "$OUTDIR/.stamp"
for f in vmlinuz initrd.img "$IMAGE" manifest.json; do
  chmod 0644 "$BUILD/$f"
  mv -f "$BUILD/$f" "$OUTDIR/$f"
done
printf '%s\n' "$STAMP_WANT" > "$OUTDIR/.stamp"

log "done in ${BUILD_SECONDS} s: $OUTDIR (Debian $DEBIAN_VERSION, kernel $KVER, cloud-init $CLOUD_INIT_VERSION)"
for f in vmlinuz initrd.img "$IMAGE"; do
  printf '  %-16s %10s bytes\n' "$f" "$(fsize "$OUTDIR/$f")"
done
