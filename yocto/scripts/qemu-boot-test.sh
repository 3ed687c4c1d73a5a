#!/usr/bin/env bash
# ARM boot test: boots a real aarch64 Linux (Debian's cloud-arm64 kernel) under
# qemu-system-aarch64 with an initramfs holding the cross-built ironbridge binary, busybox, the
# glibc it links and the virtio modules; the gateway runs there with a test config and its
# buffer on an ext4 disk (virtio-blk) like the image's data partition. From the host, through
# qemu's user network (restrict=on: the guest reaches nothing outside qemu; hostfwd on 127.0.0.1
# only), it publishes a random nonce with MQTT QoS 1, reads /api/status, then publishes a second
# random value that tells the guest to stop. Passes only when
#   - mosquitto_pub got its PUBACK for the nonce (the gateway acks after the durable append),
#   - the guest's /api/status counted the record,
#   - the guest found the nonce in its buffer segment files, stopped the daemon with SIGTERM
#     (exit 0), unmounted the disk and powered off,
#   - and the host finds the nonce in a buffer segment inside the disk image (debugfs, after the
#     guest is gone) with a clean file system (e2fsck -n).
# Usage: yocto/scripts/qemu-boot-test.sh [--bin PATH] [--timeout SECONDS] [--keep]
#   --bin       aarch64 ironbridge (default: the output of yocto/scripts/build-aarch64.sh)
#   --timeout   bound for the whole guest run (default 240 s)
#   --keep      keep the work directory (console log, disk image)
# Downloads (once, cached in /var/cache/ironbridge/qemu-arm64) the arm64 kernel and busybox-static
# .debs with apt-get download; installs qemu-system-arm, mosquitto-clients, e2fsprogs, cpio if
# missing (as root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${IRONBRIDGE_AARCH64_TARGET_DIR:-/var/tmp/ironbridge-aarch64}/ironbridge-aarch64
limit=240
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --bin) bin=$2; shift 2 ;;
        --timeout) limit=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
t_start=$(date +%s.%N)
elapsed() { awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "[qemu-boot-test +$(elapsed)s] $*"; }
fail() { echo "[qemu-boot-test +$(elapsed)s] FAIL: $*" >&2; exit 1; }

[ -x "$bin" ] || fail "no aarch64 binary at $bin: run yocto/scripts/build-aarch64.sh first (or pass --bin)"
file -b "$bin" | grep -q 'ARM aarch64' || fail "$bin is not an aarch64 executable"

# Host tools.
need=""
command -v qemu-system-aarch64 >/dev/null || need="$need qemu-system-arm"
command -v mosquitto_pub >/dev/null || need="$need mosquitto-clients"
command -v debugfs >/dev/null || need="$need e2fsprogs"
command -v cpio >/dev/null || need="$need cpio"
command -v strings >/dev/null || need="$need binutils"
command -v curl >/dev/null || need="$need curl"
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need="$need libc6-arm64-cross libgcc-s1-arm64-cross"
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || fail "missing host packages:$need"
    say "installing$need"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $need >/dev/null
fi

# The arm64 kernel and busybox from Debian, fetched once.
cache=/var/cache/ironbridge/qemu-arm64
mkdir -p "$cache"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$(id -u)" = 0 ] || fail "dpkg has no arm64 architecture (dpkg --add-architecture arm64 as root)"
    dpkg --add-architecture arm64
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
fi
kpkg=$(apt-cache depends linux-image-cloud-arm64:arm64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[^:]*-cloud-arm64\).*/\1/p' | head -1)
[ -n "$kpkg" ] || fail "cannot resolve linux-image-cloud-arm64:arm64 (apt-get update?)"
kdir="$cache/$kpkg"
if [ ! -e "$kdir/.done" ]; then
    say "downloading $kpkg:arm64 and busybox-static:arm64"
    rm -rf "$kdir" && mkdir -p "$kdir/debs"
    (cd "$kdir/debs" && apt-get download -q "$kpkg:arm64" busybox-static:arm64 >/dev/null 2>&1) ||
        fail "apt-get download $kpkg:arm64 busybox-static:arm64 failed"
    for deb in "$kdir"/debs/*.deb; do dpkg-deb -x "$deb" "$kdir/root"; done
    touch "$kdir/.done"
fi
kernel=$(ls "$kdir"/root/boot/vmlinuz-* | head -1)
kver=${kernel##*/vmlinuz-}
moddir="$kdir/root/lib/modules/$kver/kernel"

work=$(mktemp -d /var/tmp/ironbridge-qemu-boot.XXXXXX)
qpid=""
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
    if [ "$keep" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# initramfs: busybox init, the binary, its glibc, the virtio modules, configs.
ir="$work/initramfs"
mkdir -p "$ir"/{bin,sbin,usr/bin,lib/aarch64-linux-gnu,lib/modules,etc/ironbridge,proc,sys,dev,tmp,run,var/lib/ironbridge}
cp "$kdir/root/bin/busybox" "$ir/bin/busybox"
cp "$bin" "$ir/usr/bin/ironbridge"
cp "$root/yocto/meta-ironbridge/recipes-ironbridge/ironbridge/files/ironbridge.toml" "$ir/etc/ironbridge/ironbridge.toml"
cross=/usr/aarch64-linux-gnu/lib
cp -L "$cross/ld-linux-aarch64.so.1" "$ir/lib/ld-linux-aarch64.so.1"
libs=$(aarch64-linux-gnu-readelf -d "$bin" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' ||
       readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for lib in $libs; do
    [ -e "$cross/$lib" ] || fail "the binary needs $lib, not found in $cross"
    cp -L "$cross/$lib" "$ir/lib/aarch64-linux-gnu/$lib"
done
# The virtio drivers (PCI transport, net, block, rng) and their dependencies, in load order
# (from each module's depends= in its .modinfo; the .deb ships no modules.dep).
declare -A modpath=()
while read -r f; do n=$(basename "$f" .ko); modpath[${n//-/_}]=$f; done < <(find "$moddir" -name '*.ko')
order=()
add_module() {
    local name=${1//-/_} dep
    [ -n "${modpath[$name]:-}" ] || fail "module $name missing from $kpkg"
    case " ${order[*]} " in *" $name "*) return ;; esac
    for dep in $(strings "${modpath[$name]}" | sed -n 's/^depends=//p' | head -1 | tr ',' ' '); do
        add_module "$dep"
    done
    order+=("$name")
    cp "${modpath[$name]}" "$ir/lib/modules/$name.ko"
}
for m in virtio_pci virtio_net virtio_blk virtio_rng; do add_module "$m"; done
echo "${order[*]}" > "$ir/lib/modules/load-order"
cat > "$ir/etc/ironbridge/boot-test.toml" <<'EOF'
[gateway]
id = "qemu-aarch64-boot-test"
state_dir = "/var/lib/ironbridge"
shutdown_timeout_ms = 10000

[buffer]
max_bytes = "64 MiB"
segment_bytes = "8 MiB"
fsync = "always"

[web]
listen = "0.0.0.0:8443"
http_listen = "0.0.0.0:8080"

[mqtt]
listen = "0.0.0.0:1883"
allow_anonymous = true

[log]
level = "info"
EOF
cat > "$ir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
say() { echo "BOOTTEST $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
finish() { say "done uptime=$(up)"; sync; poweroff -f; sleep 10; }
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko || say "insmod $m failed"
done
nonce=$(sed -n 's/.*ironbridge_nonce=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
stop=$(sed -n 's/.*ironbridge_stop=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
hostname qemu-aarch64
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
    say "network setup failed"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o noatime /dev/vda /var/lib/ironbridge || { say "mount of the data disk failed"; finish; }
say "arch=$(uname -m) kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) uptime=$(up)"
/usr/bin/ironbridge check-config /etc/ironbridge/ironbridge.toml
say "check-config-default=$?"
/usr/bin/ironbridge --config /etc/ironbridge/boot-test.toml &
pid=$!
i=0
# The plain-HTTP port answers every request with a redirect to HTTPS once the web port serves
# (busybox wget cannot follow it to HTTPS; -S shows the status line).
until wget -S -O /dev/null http://127.0.0.1:8080/healthz 2>&1 | grep -q ' 308'; do
    kill -0 $pid 2>/dev/null || { wait $pid; say "daemon exited early with $?"; finish; }
    i=$((i + 1)); [ $i -lt 600 ] || { say "not healthy after 60 s"; kill $pid; finish; }
    sleep 0.1
done
say "ready uptime=$(up)"
# The host publishes the nonce, reads /api/status, then publishes the stop token (another random
# value: neither contains the other).
found=no; i=0
while [ $i -lt 1800 ]; do
    if [ $found = no ] && grep -q "$nonce" /var/lib/ironbridge/buffer/*.seg 2>/dev/null; then
        found=yes; say "nonce-in-buffer=yes uptime=$(up)"
    fi
    grep -q "$stop" /var/lib/ironbridge/buffer/*.seg 2>/dev/null && break
    sleep 0.1; i=$((i + 1))
done
[ $found = yes ] || say "nonce-in-buffer=no"
t0=$(up)
kill -TERM $pid
wait $pid
say "daemon-exit=$? stop-seconds=$(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.2f", b - a }')"
ls -l /var/lib/ironbridge/buffer
sync
umount /var/lib/ironbridge && say "umount=ok"
finish
EOF
chmod +x "$ir/init"
(cd "$ir" && find . | sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$work/initramfs.gz"
say "initramfs $(stat -c %s "$work/initramfs.gz") bytes (binary $(stat -c %s "$bin") bytes), kernel $kver"

# The data disk: ext4 as on the image's data partition.
truncate -s 128M "$work/data.img"
mkfs.ext4 -q -F -L ironbridge-data "$work/data.img"

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mqtt_port=$(port)
web_port=$(port)
nonce=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
stop=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
console="$work/console.log"

say "booting qemu-system-aarch64 (mqtt 127.0.0.1:$mqtt_port, web 127.0.0.1:$web_port)"
t_boot=$(date +%s.%N)
# romfile= : the kernel boots directly, so the NIC needs no iPXE option ROM (efi-virtio.rom is in
# ipxe-qemu, a Recommends that --no-install-recommends leaves out; without it qemu refuses to start).
timeout --kill-after=10 "$limit" qemu-system-aarch64 -machine virt -cpu cortex-a57 -smp 2 -m 512 \
    -nographic -no-reboot \
    -kernel "$kernel" -initrd "$work/initramfs.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 quiet ironbridge_nonce=$nonce ironbridge_stop=$stop" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$mqtt_port-:1883,hostfwd=tcp:127.0.0.1:$web_port-:8443" \
    -device virtio-net-pci,netdev=n0,romfile= \
    -drive "file=$work/data.img,if=none,format=raw,id=d0" -device virtio-blk-pci,drive=d0 \
    -device virtio-rng-pci \
    < /dev/null > "$console" 2>&1 &
qpid=$!
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
show_console() {
    echo "---- guest console ----"
    sed -e 's/\r$//' -e 's/\x1b\[[0-9;]*m//g' "$console" | tail -60
    echo "-----------------------"
}

# Wait for the gateway to be healthy in the guest.
until grep -q 'BOOTTEST ready' "$console"; do
    if ! kill -0 "$qpid" 2>/dev/null || grep -q 'BOOTTEST done' "$console"; then
        show_console; fail "the guest stopped before the gateway was ready"
    fi
    sleep 0.2
done
t_ready=$(since "$t_boot")
say "gateway ready in the guest $t_ready s after qemu started ($(grep -o 'BOOTTEST arch=[^ ]*' "$console" | head -1))"

# Publish the nonce with QoS 1: mosquitto_pub exits 0 only after the PUBACK.
t_pub=$(date +%s.%N)
ok=0
for attempt in 1 2 3 4 5; do
    if mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -q 1 -i boot-test -t ironbridge/boot-test \
        -m "$nonce" 2>"$work/pub.err"; then ok=1; break; fi
    sleep 1
done
[ $ok = 1 ] || { cat "$work/pub.err"; show_console; fail "mosquitto_pub to the guest failed"; }
t_puback=$(since "$t_pub")
say "PUBACK for the nonce after $t_puback s"

# /api/status needs a login: first-boot setup with the code the daemon printed on the console.
code=$(sed -e 's/\x1b\[[0-9;]*m//g' "$console" | sed -n 's/.*setup_code=\([A-Z0-9-]*\).*/\1/p' | tail -1)
[ -n "$code" ] || { show_console; fail "no setup code on the guest console"; }
curl -sk --max-time 10 -c "$work/cookies" -H 'Content-Type: application/json' \
    -d "{\"username\":\"boot-test\",\"password\":\"boot test passphrase\",\"setup_code\":\"$code\"}" \
    "https://127.0.0.1:$web_port/api/setup" > "$work/setup.json" || { show_console; fail "POST /api/setup through hostfwd failed"; }
status=$(curl -sk --max-time 10 -b "$work/cookies" "https://127.0.0.1:$web_port/api/status") || { show_console; fail "GET /api/status through hostfwd failed"; }
buffer=$(printf '%s' "$status" | python3 -c 'import json, sys; b = json.load(sys.stdin)["buffer"]; print(b["records"], b["next_offset"])')
read -r records next_offset <<< "$buffer"
say "guest /api/status: buffer records=$records next_offset=$next_offset"
[ "$records" -ge 1 ] || { show_console; fail "the guest's buffer holds no record after the PUBACK"; }

mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -q 1 -i boot-test -t ironbridge/boot-test -m "$stop" ||
    { show_console; fail "publishing the stop message failed"; }
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
t_total=$(since "$t_boot")
show_console
[ "$qrc" = 0 ] || fail "qemu exited with $qrc (124: timeout after $limit s)"
grep -q 'BOOTTEST check-config-default=0' "$console" || fail "check-config of the image's default config failed in the guest"
grep -q 'BOOTTEST nonce-in-buffer=yes' "$console" || fail "the guest did not find the nonce in its buffer"
grep -q 'BOOTTEST daemon-exit=0 ' "$console" || fail "the daemon did not exit 0 on SIGTERM"
grep -q 'BOOTTEST umount=ok' "$console" || fail "the guest could not unmount the data disk"

# After the guest: the nonce is in a segment file on the disk, and the file system is clean.
e2fsck -fn "$work/data.img" > "$work/fsck.log" 2>&1 || { cat "$work/fsck.log"; fail "e2fsck found problems in the data disk"; }
segs=$(debugfs -R 'ls /buffer' "$work/data.img" 2>/dev/null | tr -s ' ' '\n' | grep -E '^[0-9]{20}\.seg$' || true)
[ -n "$segs" ] || fail "no buffer segment on the data disk"
hit=""
for s in $segs; do
    debugfs -R "dump /buffer/$s $work/$s" "$work/data.img" >/dev/null 2>&1
    grep -q "$nonce" "$work/$s" && hit=$s
done
[ -n "$hit" ] || fail "the nonce is not in any buffer segment on the data disk ($segs)"
stop_s=$(sed -n 's/.*BOOTTEST daemon-exit=0 stop-seconds=\([0-9.]*\).*/\1/p' "$console" | head -1)
echo "PASS: aarch64 ironbridge under qemu-system-aarch64 ($kver): ready ${t_ready} s after start," \
    "PUBACK ${t_puback} s, record in the guest buffer (records=$records) and on disk ($hit)," \
    "SIGTERM stop ${stop_s} s, total ${t_total} s"
