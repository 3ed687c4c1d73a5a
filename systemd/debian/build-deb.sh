#!/usr/bin/env bash
# Builds the Debian package ironbridge_<version>_<arch>.deb from a release binary with dpkg-deb
# (no debhelper: the binary is cross-built outside dpkg-buildpackage) and checks it with lintian.
# The package holds the binary, the same unit, sysusers.d and tmpfiles.d files as the Yocto recipe,
# the default /etc/ironbridge/ironbridge.toml as a conffile, a man page and the README; the
# maintainer scripts (this directory) create the account, start the service, check the
# configuration with the new binary before restarting it on upgrade, and delete state on purge only.
#
# Usage: systemd/debian/build-deb.sh --arch amd64|arm64 --bin PATH [--version V] [--out DIR] [--no-lintian]
#   --bin       stripped ironbridge binary for --arch
#   --version   package version (default: the workspace version in Cargo.toml)
#   --out       output directory (default /var/tmp/ironbridge-deb)
# Prints the path of the package as the last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
arch="" bin="" version="" out=/var/tmp/ironbridge-deb lint=1
while [ $# -gt 0 ]; do
    case $1 in
        --arch) arch=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-lintian) lint=0; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
fail() { echo "build-deb: $*" >&2; exit 1; }
case $arch in
    amd64) elf="x86-64" ;;
    arm64) elf="ARM aarch64" ;;
    *) fail "--arch must be amd64 or arm64" ;;
esac
need=""
command -v file >/dev/null || need="$need file"
command -v readelf >/dev/null || need="$need binutils"
[ "$lint" = 1 ] && ! command -v lintian >/dev/null && need="$need lintian"
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || fail "missing:$need (apt-get install$need)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $need >/dev/null
fi
[ -f "$bin" ] || fail "no binary at '$bin' (--bin)"
file -b "$bin" | grep -q "$elf" || fail "$bin is not a $elf executable"
[ -n "$version" ] || version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || fail "no version"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg="$work/pkg"
doc="$pkg/usr/share/doc/ironbridge"
install -d "$pkg/DEBIAN" "$doc" "$pkg/usr/share/man/man8"
install -D -m 0755 "$bin" "$pkg/usr/bin/ironbridge"
install -D -m 0644 "$root/systemd/ironbridge.service" "$pkg/usr/lib/systemd/system/ironbridge.service"
install -D -m 0644 "$root/systemd/ironbridge.sysusers" "$pkg/usr/lib/sysusers.d/ironbridge.conf"
install -D -m 0644 "$root/systemd/ironbridge.tmpfiles" "$pkg/usr/lib/tmpfiles.d/ironbridge.conf"
# The conffile ships without secrets; tmpfiles.d gives it to the service account (0640) at install.
install -D -m 0644 "$root/yocto/meta-ironbridge/recipes-ironbridge/ironbridge/files/ironbridge.toml" \
    "$pkg/etc/ironbridge/ironbridge.toml"
install -m 0644 "$here/copyright" "$doc/copyright"
gzip -9n -c "$root/README.md" > "$doc/README.md.gz"
gzip -9n -c "$here/ironbridge.8" > "$pkg/usr/share/man/man8/ironbridge.8.gz"
# A native package's changelog: this version, dated by the commit it was built from.
date=$(git -C "$root" log -1 --format=%aD 2>/dev/null || date -R)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'ironbridge (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- Ironbridge maintainers <maintainers@ironbridge.example>  %s\n' \
    "$version" "$commit" "$date" | gzip -9n > "$doc/changelog.gz"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"
echo /etc/ironbridge/ironbridge.toml > "$pkg/DEBIAN/conffiles"

# libc6 at least the newest GLIBC_ symbol version the binary uses; the other shared libraries it
# needs (libgcc_s) come with libgcc-s1.
glibc=$(readelf -W --dyn-syms "$bin" | grep -o 'GLIBC_[0-9.]*[0-9]' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -n "$glibc" ] || fail "no GLIBC_ symbol versions in $bin (readelf --dyn-syms)"
depends="libc6 (>= $glibc), systemd, ca-certificates"
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for lib in $needed; do
    case $lib in
        libc.so.6 | libm.so.6 | ld-linux*.so.* | libpthread.so.0 | libdl.so.2 | librt.so.1) ;;
        libgcc_s.so.1) depends="libgcc-s1, $depends" ;;
        *) fail "the binary needs $lib: add its package to Depends" ;;
    esac
done
size_kib=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size_kib/" \
    -e "s/@DEPENDS@/$depends/" "$here/control.in" > "$pkg/DEBIAN/control"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/control"

mkdir -p "$out"
deb="$out/ironbridge_${version}_${arch}.deb"
# Built beside the tree, then renamed: a reader never sees a half-written package.
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$work/package.deb" >/dev/null
mv -f "$work/package.deb" "$deb"
echo "built $deb ($(stat -c %s "$deb") bytes, installed $size_kib KiB, Depends: $depends)"
if [ "$lint" = 1 ]; then
    lintian --fail-on error,warning --display-info "$deb"
    echo "lintian: clean (warnings and errors; info shown above)"
fi
echo "$deb"
