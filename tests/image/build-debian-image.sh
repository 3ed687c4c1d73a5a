#!/usr/bin/env bash
# Builds the Debian image the booted-image test installs ironbridge_<v>_<arch>.deb into: a plain
# Debian trixie made by mmdebstrap from the Debian archive (what a plant's own Debian box has),
# systemd as PID 1, systemd-networkd (DHCP), openssh-server (the test's way in, key only) and socat
# (the guest's end of the Kafka forward). No ironbridge in it: the test installs the package the
# way a user would. Output, cached under $IRONBRIDGE_IMAGE_CACHE (default
# /var/cache/ironbridge/debian-image) until this script or the suite changes:
#   <cache>/<key>/rootfs.ext4   root file system (ext4, no partition table: root=/dev/vda)
#   <cache>/<key>/vmlinuz, initrd.img   the image's kernel and initramfs, for qemu -kernel
#   <cache>/<key>/id_ed25519    the test's SSH key (root's authorized key in the image)
# Usage: tests/image/build-debian-image.sh [--arch amd64] ; prints the cache directory last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
arch=amd64
while [ $# -gt 0 ]; do
    case $1 in
        --arch) arch=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
suite=trixie
mirror=http://deb.debian.org/debian
case $arch in
    amd64) kernel_pkg=linux-image-cloud-amd64 ;;
    arm64) kernel_pkg=linux-image-cloud-arm64 ;;
    *) echo "--arch amd64|arm64" >&2; exit 2 ;;
esac
packages="systemd-sysv,udev,$kernel_pkg,initramfs-tools,openssh-server,socat,e2fsprogs,ca-certificates,libgcc-s1,iproute2,procps"
key=$(printf '%s\n' "$suite" "$arch" "$packages" | cat - "$0" | sha256sum | cut -c1-16)
cache=${IRONBRIDGE_IMAGE_CACHE:-/var/cache/ironbridge/debian-image}/$suite-$arch-$key
if [ -e "$cache/.done" ]; then
    echo "image cached: $cache"
    echo "$cache"
    exit 0
fi
need=""
command -v mmdebstrap >/dev/null || need="$need mmdebstrap"
command -v mkfs.ext4 >/dev/null || need="$need e2fsprogs"
command -v ssh-keygen >/dev/null || need="$need openssh-client"
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || need="$need qemu-user-static binfmt-support"
fi
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || { echo "missing host packages:$need" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $need >/dev/null
fi
start=$(date +%s)
rm -rf "$cache"
mkdir -p "$cache"
work=$(mktemp -d /var/tmp/ironbridge-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
ssh-keygen -q -t ed25519 -N '' -C ironbridge-image-test -f "$cache/id_ed25519"

# The customize hooks run outside the chroot with the root directory as $1.
mmdebstrap --quiet --variant=apt --architectures="$arch" --include="$packages" \
    --components=main \
    --customize-hook='echo ironbridge-test > "$1/etc/hostname"' \
    --customize-hook='printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\nLABEL=ironbridge-data /var/lib/ironbridge ext4 defaults,noatime 0 2\n" > "$1/etc/fstab"' \
    --customize-hook='printf "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/20-wired.network"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service ssh.service' \
    --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer' \
    --customize-hook="mkdir -p -m 0700 \"\$1/root/.ssh\" && cp '$cache/id_ed25519.pub' \"\$1/root/.ssh/authorized_keys\"" \
    --customize-hook='mkdir -p "$1/var/lib/ironbridge"' \
    --customize-hook="cp -L \"\$1/vmlinuz\" '$cache/vmlinuz' && cp -L \"\$1/initrd.img\" '$cache/initrd.img'" \
    --customize-hook="rm -f \"\$1/vmlinuz\" \"\$1/vmlinuz.old\" \"\$1/initrd.img\" \"\$1/initrd.img.old\"; chroot \"\$1\" apt-get clean" \
    "$suite" "$work/root" "$mirror"
truncate -s 2G "$cache/rootfs.ext4"
mkfs.ext4 -q -F -L root -d "$work/root" "$cache/rootfs.ext4"
touch "$cache/.done"
echo "image built in $(( $(date +%s) - start )) s: $cache ($(du -sh --apparent-size "$work/root" | cut -f1) of files)"
echo "$cache"
