#!/usr/bin/env bash
# Cross-compiles the release `ironbridge` binary for aarch64-unknown-linux-gnu with Debian's Rust
# toolchain (rustup cannot download targets on our CI machines): rustc-web/cargo-web, the arm64
# standard library from the multiarch package libstd-rust-web-dev:arm64 and gcc-aarch64-linux-gnu
# as linker and C compiler (ring, zstd-sys and lz4-sys compile C). Installs what is missing (as
# root), strips the binary and prints its size; fails above the size limit.
#
# Usage: yocto/scripts/build-aarch64.sh [--src DIR] [--max-bytes N] [--no-install]
#   --src DIR       workspace to build (default: this checkout)
#   --max-bytes N   fail if the stripped binary is larger (default 13000000; goal 12 MB, not met: 12,332,096
#                   with fat LTO and zstd-sys at opt-level "s" on 2026-12-08 00:15; BENCHMARKS.md "Binary size")
# Environment: IRONBRIDGE_AARCH64_TARGET_DIR (default /var/tmp/ironbridge-aarch64).
# Output: $IRONBRIDGE_AARCH64_TARGET_DIR/ironbridge-aarch64 (stripped) and a line
#   "aarch64 ironbridge: stripped N bytes (X MiB), unstripped M bytes, built in S s"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
max_bytes=13000000
install=1
while [ $# -gt 0 ]; do
    case $1 in
        --src) src=$(cd "$2" && pwd); shift 2 ;;
        --max-bytes) max_bytes=$2; shift 2 ;;
        --no-install) install=0; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
target_dir=${IRONBRIDGE_AARCH64_TARGET_DIR:-/var/tmp/ironbridge-aarch64}
triple=aarch64-unknown-linux-gnu

# Debian bookworm: rustc-web 1.96 (bookworm-security); our rust-version is 1.89.
pkgs="rustc-web cargo-web libstd-rust-web-dev libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
command -v file >/dev/null || missing="$missing file"
if [ -n "$missing" ]; then
    if [ "$install" = 0 ] || [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages:$missing (run as root without --no-install to install them)" >&2
        exit 1
    fi
    echo "installing:$missing"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends $missing
fi
# The arm64 std must be the build of the same compiler (Multi-Arch: same pins equal versions).
host_ver=$(dpkg-query -W -f='${Version}' "libstd-rust-web-dev:$(dpkg --print-architecture)")
arm_ver=$(dpkg-query -W -f='${Version}' libstd-rust-web-dev:arm64)
if [ "$host_ver" != "$arm_ver" ]; then
    echo "libstd-rust-web-dev $host_ver (amd64) != $arm_ver (arm64): reinstall both at one version" >&2
    exit 1
fi

# Debian's compiler, never the rustup proxies that come first in PATH.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTC_WRAPPER RUSTUP_TOOLCHAIN
cargo=/usr/bin/cargo
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$src/Cargo.toml" | head -1)
have=$($RUSTC --version | awk '{print $2}')
if [ -n "$need" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "Debian rustc $have is older than the workspace rust-version $need" >&2
    exit 1
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# No CFLAGS: the C code (ring, lz4-sys, zstd-sys) is built at its package's opt-level in the
# release profile, as on x86_64 (zstd-sys: "s"); a CFLAGS -O would come last and win.
export CARGO_TERM_COLOR=never

echo "building ironbridge for $triple with $($RUSTC --version) ($($cargo --version)), source $src"
start=$(date +%s)
(cd "$src" && nice -n 5 "$cargo" build --release --locked -p ironbridge --bin ironbridge \
    --target "$triple" --target-dir "$target_dir")
secs=$(( $(date +%s) - start ))

bin="$target_dir/$triple/release/ironbridge"
out="$target_dir/ironbridge-aarch64"
aarch64-linux-gnu-strip --strip-all -o "$out" "$bin"
desc=$(file -b "$out")
case $desc in
    *"ARM aarch64"*) ;;
    *) echo "$out is not an aarch64 ELF: $desc" >&2; exit 1 ;;
esac
size=$(stat -c %s "$out")
unstripped=$(stat -c %s "$bin")
mib=$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')
echo "interpreter/needed: $(aarch64-linux-gnu-readelf -d "$out" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
echo "aarch64 ironbridge: stripped $size bytes ($mib MiB), unstripped $unstripped bytes, built in ${secs} s"
echo "binary: $out"
if [ "$size" -gt "$max_bytes" ]; then
    echo "stripped size $size bytes is above the limit of $max_bytes bytes" >&2
    exit 1
fi
