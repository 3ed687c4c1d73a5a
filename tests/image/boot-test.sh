#!/usr/bin/env bash
# The booted-image test: the Debian package installed on a real Debian (trixie, made by
# tests/image/build-debian-image.sh) booted under qemu-system-x86_64 (TCG) with systemd as PID 1,
# the buffer on its own ext4 disk as on the Yocto image. From the host, through qemu's user
# network (hostfwd on 127.0.0.1 only; the guest reaches the host's Kafka-protocol broker tansu at
# 10.0.2.2), it checks, in order, and fails at the first miss:
#   install      `apt-get install ./ironbridge_<v>_amd64.deb` starts the service; the account owns
#                /etc/ironbridge (0750) and the config (0640), nobody else can read it
#   ready        active under the shipped unit, READY=1 (Type=notify reached "active"), status text
#   first boot   setup code from the journal, admin created over HTTPS, an API token made
#   serial       a Modbus RTU simulator (pymodbus) on the host end of the guest's ttyS1 (a qemu pty)
#                is read by the service under DeviceAllow=char-ttyS and group dialout
#   kafka        MQTT QoS 1 publish -> PUBACK -> record in the guest's buffer -> in Kafka on the host
#   security     `systemd-analyze security ironbridge` in the guest <= 2.0 (and <= the offline score)
#   kill -9      systemd restarts the daemon; every message acknowledged around the kill is in Kafka
#   watchdog     kill -STOP: "Watchdog timeout" within WatchdogSec= (30 s), restarted
#   upgrade      (with --next-deb) Kafka unreachable, messages buffered, upgrade to the next
#                version: config kept, everything buffered forwarded after the upgrade
#   power cut    qemu killed (no shutdown) under QoS 1 load, booted again: ext4 journal replayed,
#                every acknowledged message in Kafka; e2fsck clean on both disks afterwards
#   journal      no SIGSYS, seccomp, "Permission denied", "Operation not permitted" or read-only
#                file system error from the service in any boot
#   purge        `apt-get remove` keeps the buffer, `apt-get purge` deletes it and /etc/ironbridge
# and prints the timings (boot to READY, restart after kill -9, watchdog restart, power cut).
#
# Usage: tests/image/boot-test.sh --deb PATH [--next-deb PATH] [--keep]
# Needs (installs as root when missing): qemu-system-x86, mmdebstrap, mosquitto-clients, curl,
# e2fsprogs, the test venv (tests/scripts/setup-python.sh) and tansu (tests/scripts/install-tansu.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
deb="" next_deb="" keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --deb) deb=$(realpath "$2"); shift 2 ;;
        --next-deb) next_deb=$(realpath "$2"); shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "[image-test +$(since "$t0")s] $*"; }
fail() { echo "[image-test +$(since "$t0")s] FAIL: $*" >&2; exit 1; }
[ -f "$deb" ] || fail "--deb: no package"

need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v mosquitto_pub >/dev/null || need="$need mosquitto-clients"
command -v curl >/dev/null || need="$need curl"
command -v e2fsck >/dev/null || need="$need e2fsprogs"
command -v ssh >/dev/null || need="$need openssh-client"
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || fail "missing host packages:$need"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $need >/dev/null
fi
venv=${IRONBRIDGE_VENV:-/var/cache/ironbridge/venv}
[ -x "$venv/bin/python" ] || bash "$root/tests/scripts/setup-python.sh" >/dev/null
py="$venv/bin/python"
modbus_py=${IRONBRIDGE_MODBUS_VENV:-/var/cache/ironbridge/modbus-venv}/bin/python
[ -x "$modbus_py" ] || bash "$root/adapters/scripts/install-test-deps.sh" >/dev/null
tansu=/var/cache/ironbridge/tansu/bin/tansu
[ -x "$tansu" ] || bash "$root/tests/scripts/install-tansu.sh"

image=$(bash "$here/build-debian-image.sh" | tail -1)
work=$(mktemp -d /var/tmp/ironbridge-image-test.XXXXXX)
qpid="" tpid="" mpid=""
cleanup() {
    [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
    [ -n "$mpid" ] && kill "$mpid" 2>/dev/null || true
    [ -n "$tpid" ] && kill "$tpid" 2>/dev/null || true
    if [ "$keep" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cp --sparse=always "$image/rootfs.ext4" "$work/root.img"
truncate -s 512M "$work/data.img"
mkfs.ext4 -q -F -L ironbridge-data "$work/data.img"

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ssh_port=$(port) mqtt_port=$(port) web_port=$(port) kafka_port=$(port)
ssh_opts=(-q -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -i "$image/id_ed25519")
guest() { ssh "${ssh_opts[@]}" -p "$ssh_port" root@127.0.0.1 "$@"; }
copy_in() { scp "${ssh_opts[@]}" -P "$ssh_port" "$1" "root@127.0.0.1:$2"; }
kafka() { "$py" "$root/tests/py/kafka_tool.py" "$@"; }

# Kafka on the host: tansu with sqlite storage (exact watermarks; see tests/TANSU.md), advertised
# as 127.0.0.1:<port>, which the guest's socat forwards to the host (10.0.2.2).
mkdir -p "$work/tansu"
(cd "$work/tansu" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine sqlite://tansu.db) \
    > "$work/tansu.log" 2>&1 &
tpid=$!
for _ in $(seq 100); do
    kafka create-topic --bootstrap "127.0.0.1:$kafka_port" --topic mqtt --partitions 1 >/dev/null 2>&1 && break
    kill -0 "$tpid" 2>/dev/null || { cat "$work/tansu.log"; fail "tansu exited"; }
    sleep 0.2
done
"$py" -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); c.execute("create index if not exists image_test_header_record on header (topition, offset_id)"); c.commit()' \
    "$work/tansu/tansu.db"

boot=0
start_vm() {
    boot=$((boot + 1))
    console="$work/console-$boot.log"
    # TCG: KVM in this machine's nested setup aborts on an MSR (-cpu host/max) or the kernel traps
    # on missing instructions (-cpu qemu64). romfile=: no iPXE option ROM (direct kernel boot).
    qemu-system-x86_64 -machine q35 -cpu max -smp 2 -m 1024 -nographic -no-reboot -serial mon:stdio \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 panic=-1" \
        -drive "file=$work/root.img,if=virtio,format=raw" -drive "file=$work/data.img,if=virtio,format=raw" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$mqtt_port-:1883,hostfwd=tcp:127.0.0.1:$web_port-:443" \
        -device virtio-net-pci,netdev=n0,romfile= -device virtio-rng-pci \
        -chardev pty,id=rtu -serial chardev:rtu \
        < /dev/null > "$console" 2>&1 &
    qpid=$!
    t_qemu=$(date +%s.%N)
    local i
    for i in $(seq 300); do
        guest true 2>/dev/null && { say "boot $boot: ssh up $(since "$t_qemu") s after qemu started"; return 0; }
        kill -0 "$qpid" 2>/dev/null || break
        sleep 1
    done
    sed 's/\x1b\[[0-9;]*m//g' "$console" | tail -40
    fail "boot $boot: no ssh into the guest"
}
# Waits until the service is active with a new main PID (not $1); prints the seconds it took.
wait_active() {
    local old=$1 t=$(date +%s.%N) i st pid
    for i in $(seq 600); do
        read -r st pid < <(guest 'echo $(systemctl show -P ActiveState ironbridge) $(systemctl show -P MainPID ironbridge)')
        if [ "$st" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$old" ]; then since "$t"; return 0; fi
        sleep 0.2
    done
    guest 'systemctl status ironbridge --no-pager; journalctl -u ironbridge -n 30 --no-pager' || true
    fail "ironbridge did not become active again (state $st)"
}
main_pid() { guest systemctl show -P MainPID ironbridge; }
api() { curl -sk --max-time 20 -H "Authorization: Bearer $token" "https://127.0.0.1:$web_port$1"; }
backlog() { api /api/status | "$py" -c 'import json, sys; print(json.load(sys.stdin)["uplink"]["lag_records"])'; }
wait_drained() {
    local i b
    for i in $(seq 300); do
        b=$(backlog 2>/dev/null || echo "?")
        [ "$b" = 0 ] && return 0
        sleep 1
    done
    api /api/status; fail "backlog not forwarded within 300 s (last: $b)"
}
# Every line of $1 (acknowledged payloads) must be a record value in Kafka's topic mqtt.
check_in_kafka() {
    kafka consume --bootstrap "127.0.0.1:$kafka_port" --topic mqtt --timeout 60 > "$work/kafka.jsonl" ||
        fail "consuming topic mqtt from the host's Kafka failed"
    "$py" - "$1" "$work/kafka.jsonl" <<'EOF'
import base64, json, sys
acked = [l.strip() for l in open(sys.argv[1]) if l.strip()]
values = set()
for line in open(sys.argv[2]):
    v = json.loads(line)["value"]
    if v is not None:
        values.add(base64.b64decode(v).decode("utf-8", "replace"))
missing = [a for a in acked if a not in values]
print(f"{len(acked)} acknowledged, {len(acked) - len(missing)} in Kafka ({len(values)} records in the topic)")
if missing or not acked:
    print("missing:", missing[:20], file=sys.stderr)
    sys.exit(1)
EOF
}

# ---- install --------------------------------------------------------------------------------
start_vm
# The Modbus RTU simulator on the host end of the guest's ttyS1 (qemu's pty).
pty=$(sed -n 's/.*char device redirected to \(\/dev\/pts\/[0-9]*\) (label rtu).*/\1/p' "$console" | head -1)
[ -n "$pty" ] || fail "qemu did not say which pty is the guest's ttyS1"
"$modbus_py" "$root/adapters/tests/py/pymodbus_server.py" rtu "$pty" 19200 > "$work/pymodbus.log" 2>&1 &
mpid=$!
copy_in "$deb" /tmp/
t=$(date +%s.%N)
guest "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/$(basename "$deb")" > "$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "apt-get install of the package failed"; }
grep -qi 'unsafe path\|warning' "$work/install.log" && { cat "$work/install.log"; fail "the installation printed a warning"; }
say "installed $(basename "$deb") in $(since "$t") s"
wait_active 0 >/dev/null
perms=$(guest 'stat -c "%U:%G %a" /etc/ironbridge /etc/ironbridge/ironbridge.toml' | tr '\n' ' ')
[ "$perms" = "ironbridge:ironbridge 750 ironbridge:ironbridge 640 " ] || fail "/etc/ironbridge and its config: $perms"
guest 'setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/ironbridge/ironbridge.toml' >/dev/null 2>&1 &&
    fail "another account can read /etc/ironbridge/ironbridge.toml"
say "config: $perms(other accounts cannot read it)"

# The test's configuration: anonymous MQTT, Kafka on the host through the guest's forward.
guest "cat > /etc/systemd/system/kafka-forward.service" <<EOF
[Unit]
Description=test: forward 127.0.0.1:$kafka_port to the host's Kafka
[Service]
ExecStart=/usr/bin/socat TCP-LISTEN:$kafka_port,bind=127.0.0.1,fork,reuseaddr TCP:10.0.2.2:$kafka_port
[Install]
WantedBy=multi-user.target
EOF
guest "systemctl daemon-reload && systemctl enable --now kafka-forward.service" >/dev/null 2>&1
guest "cat > /etc/ironbridge/ironbridge.toml" <<EOF
# image test configuration
[gateway]
id = "image-test"
state_dir = "/var/lib/ironbridge"
[buffer]
max_bytes = "256 MiB"
segment_bytes = "8 MiB"
fsync = "always"
[web]
listen = "0.0.0.0:443"
http_listen = "0.0.0.0:80"
[mqtt]
listen = "0.0.0.0:1883"
allow_anonymous = true
[kafka]
bootstrap_servers = ["127.0.0.1:$kafka_port"]
default_topic = "mqtt"
[log]
level = "info"
# The guest's second UART, a pty on the host where a Modbus RTU simulator (pymodbus) answers.
[[modbus.devices]]
name = "rtu-sim"
transport = { type = "rtu", path = "/dev/ttyS1", baud = 19200, parity = "none", data_bits = 8, stop_bits = 1 }
unit_id = 1
[[modbus.devices.tags]]
name = "ir2"
address = "300003"
type = "u16"
EOF
old=$(main_pid)
t_restart=$(date +%s.%N)
guest systemctl restart ironbridge
ready_s=$(wait_active "$old")
say "ready: restart with the test config -> active (READY=1) in $ready_s s"

# ---- ready ----------------------------------------------------------------------------------
show=$(guest 'systemctl show ironbridge -P Type; systemctl show ironbridge -P FragmentPath; systemctl show ironbridge -P StatusText; systemctl show ironbridge -P User')
type=$(sed -n 1p <<< "$show") fragment=$(sed -n 2p <<< "$show") status_text=$(sed -n 3p <<< "$show") user=$(sed -n 4p <<< "$show")
[ "$type" = notify ] && [ "$fragment" = /usr/lib/systemd/system/ironbridge.service ] && [ "$user" = ironbridge ] ||
    fail "unit: Type=$type from $fragment, User=$user"
guest cat /usr/lib/systemd/system/ironbridge.service | cmp -s - "$root/systemd/ironbridge.service" ||
    fail "the installed unit differs from systemd/ironbridge.service"
case $status_text in uplink*) ;; *) fail "no status text from the daemon: '$status_text'" ;; esac
say "unit: shipped file, Type=notify, User=ironbridge, status '$status_text'"

# ---- first boot -----------------------------------------------------------------------------
code=$(guest journalctl -u ironbridge -b --no-pager | sed -n 's/.*setup_code=\([A-Z0-9-]*\).*/\1/p' | tail -1)
[ -n "$code" ] || fail "no setup code in the journal"
curl -sk --max-time 20 -c "$work/cookies" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"image test passphrase\",\"setup_code\":\"$code\"}" \
    "https://127.0.0.1:$web_port/api/setup" > "$work/setup.json"
csrf=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["csrf_token"])' "$work/setup.json") ||
    { cat "$work/setup.json"; fail "POST /api/setup"; }
curl -sk --max-time 20 -b "$work/cookies" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
    -d '{"name":"image-test","role":"admin"}' "https://127.0.0.1:$web_port/api/tokens" > "$work/token.json"
token=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["token"])' "$work/token.json") ||
    { cat "$work/token.json"; fail "POST /api/tokens"; }
say "first boot: setup code from the journal, admin created, API token made"

# ---- serial ---------------------------------------------------------------------------------
t=$(date +%s.%N)
for _ in $(seq 60); do
    api /api/devices/rtu-sim > "$work/rtu.json" 2>/dev/null || true
    rtu=$("$py" -c 'import json, sys; t = json.load(open(sys.argv[1]))["tags"][0]; print(t["value"], t["quality"])' "$work/rtu.json" 2>/dev/null || true)
    [ "$rtu" = "1234 good" ] && break
    sleep 1
done
[ "$rtu" = "1234 good" ] || { cat "$work/rtu.json"; guest journalctl -u ironbridge -n 20 --no-pager; fail "the RTU device on /dev/ttyS1 was not read (got '$rtu')"; }
say "serial: Modbus RTU over the guest's /dev/ttyS1 (DeviceAllow=char-ttyS, group dialout) read input register 2 = 1234, quality good"

# ---- kafka ----------------------------------------------------------------------------------
nonce=nonce-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
t=$(date +%s.%N)
mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -q 1 -i image-test-nonce -t image-test/nonce -m "$nonce" ||
    fail "mosquitto_pub (QoS 1) to the guest failed"
puback_s=$(since "$t")
guest "grep -rqa '$nonce' /var/lib/ironbridge/buffer" || fail "the acknowledged message is not in the guest's buffer files"
echo "$nonce" > "$work/acked-nonce"
wait_drained
check_in_kafka "$work/acked-nonce" >/dev/null || fail "the message is not in Kafka"
say "kafka: PUBACK in $puback_s s, record in the guest's buffer, forwarded to Kafka on the host"

# ---- security -------------------------------------------------------------------------------
score() { sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'; }
guest_score=$(guest systemd-analyze security ironbridge --no-pager | score)
# The same systemd's offline rating of the installed unit file, and the CI host's (systemd/check.sh).
guest_offline=$(guest systemd-analyze security --offline=true /usr/lib/systemd/system/ironbridge.service --no-pager 2>/dev/null | score)
host_offline=$(bash "$root/systemd/check.sh" | sed -n 's/.*exposure \([0-9.]*\) .*/\1/p')
awk -v g="$guest_score" -v o="$guest_offline" -v h="$host_offline" \
    'BEGIN { exit !(g != "" && g + 0 <= 2.0 && g + 0 <= o + 0 && g + 0 <= h + 0) }' ||
    fail "exposure of the running service '$guest_score' is above 2.0 or above the offline ratings (guest '$guest_offline', host '$host_offline')"
say "security: exposure $guest_score for the running service, offline $guest_offline (guest's systemd) and $host_offline (host's, systemd/check.sh)"

# ---- kill -9 under load ---------------------------------------------------------------------
: > "$work/acked-kill"
"$py" "$here/acked_pub.py" --port "$mqtt_port" --prefix kill9 --acked "$work/acked-kill" --rate 100 --duration 20 \
    > "$work/pub-kill.json" 2>"$work/pub-kill.err" &
ppid_=$!
sleep 5
old=$(main_pid)
t=$(date +%s.%N)
guest kill -9 "$old"
kill9_s=$(wait_active "$old")
wait "$ppid_" || true
say "kill -9: restarted and ready in $kill9_s s (publisher: $(cat "$work/pub-kill.json"))"
wait_drained
say "kill -9: $(check_in_kafka "$work/acked-kill")" || fail "acknowledged messages lost around kill -9"

# ---- watchdog -------------------------------------------------------------------------------
old=$(main_pid)
t=$(date +%s.%N)
guest kill -STOP "$old"
wait_active "$old" >/dev/null
wd_s=$(since "$t")
guest "journalctl -u ironbridge -b --no-pager | grep -q 'Watchdog timeout'" || fail "no watchdog timeout in the journal"
say "watchdog: kill -STOP -> 'Watchdog timeout' -> restarted and ready $wd_s s after the stop (WatchdogSec=30 + restart delay + start)"

# ---- upgrade --------------------------------------------------------------------------------
if [ -n "$next_deb" ]; then
    guest systemctl stop kafka-forward
    : > "$work/acked-upgrade"
    "$py" "$here/acked_pub.py" --port "$mqtt_port" --prefix upgrade --acked "$work/acked-upgrade" --count 500 --rate 200 --duration 120 \
        > "$work/pub-upgrade.json" || fail "publishing before the upgrade"
    buffered=$(backlog)
    [ "$buffered" -ge 500 ] || fail "expected >= 500 records buffered while Kafka is unreachable, backlog $buffered"
    guest "echo '# kept across the upgrade' >> /etc/ironbridge/ironbridge.toml"
    copy_in "$next_deb" /tmp/
    old=$(main_pid)
    guest "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold /tmp/$(basename "$next_deb")" \
        > "$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "upgrade failed"; }
    wait_active "$old" >/dev/null
    version=$(guest dpkg-query -W -f='\${Version}' ironbridge)
    guest "grep -q '^# kept across the upgrade' /etc/ironbridge/ironbridge.toml && grep -q 'image-test' /etc/ironbridge/ironbridge.toml" ||
        fail "the configuration was not kept across the upgrade"
    perms=$(guest 'stat -c "%U:%G %a" /etc/ironbridge/ironbridge.toml')
    [ "$perms" = "ironbridge:ironbridge 640" ] || fail "config after the upgrade: $perms"
    guest systemctl start kafka-forward
    wait_drained
    say "upgrade: $buffered buffered offline, upgraded to $version (config kept, $perms), $(check_in_kafka "$work/acked-upgrade")" ||
        fail "buffered messages lost across the upgrade"
fi

# ---- power cut ------------------------------------------------------------------------------
: > "$work/acked-power"
"$py" "$here/acked_pub.py" --port "$mqtt_port" --prefix power --acked "$work/acked-power" --rate 300 --duration 120 \
    > "$work/pub-power.json" 2>"$work/pub-power.err" &
ppid_=$!
sleep 10
kill -9 "$qpid"
wait "$qpid" 2>/dev/null || true
qpid=""
wait "$ppid_" || true
acked_before=$(wc -l < "$work/acked-power")
say "power cut: qemu killed under QoS 1 load after $acked_before acknowledged ($(cat "$work/pub-power.json"))"
start_vm
t_boot=$t_qemu
wait_active 0 >/dev/null
power_ready_s=$(since "$t_boot")
say "power cut: ironbridge active $power_ready_s s after qemu started (boot, fsck journal replay, buffer recovery, READY)"
# Journal replay: the kernel's for the root, systemd-fsck's (e2fsck) for the data disk before its mount.
guest "{ journalctl -b --no-pager -o cat -k; journalctl -b --no-pager -o cat -u 'systemd-fsck*'; } | grep -Ei 'recovery complete|recovering journal|clean,'" > "$work/ext4.log" || true
say "power cut: $(tr '\n' ';' < "$work/ext4.log")"
wait_drained
say "power cut: $(check_in_kafka "$work/acked-power")" || fail "acknowledged messages lost in the power cut"

# ---- journal --------------------------------------------------------------------------------
guest "journalctl --no-pager -o cat -u ironbridge" > "$work/journal-unit.txt" 2>&1 || true
guest "journalctl --no-pager -o cat -k" > "$work/journal-kernel.txt" 2>&1 || true
# The service's own lines (every boot), and the kernel's audit records of seccomp kills and LSM denials.
if grep -Ei 'SIGSYS|seccomp|Bad system call|Permission denied|Operation not permitted|Read-only file system|mode is different' \
        "$work/journal-unit.txt" > "$work/denials.txt" ||
    grep -E 'audit: type=1326|apparmor="DENIED"' "$work/journal-kernel.txt" >> "$work/denials.txt"; then
    cat "$work/denials.txt"; fail "sandbox denials in the journal"
fi
say "journal: no SIGSYS, seccomp, permission or read-only error in $(wc -l < "$work/journal-unit.txt") lines of the unit, no seccomp/LSM audit record"

# ---- remove, purge --------------------------------------------------------------------------
guest "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q ironbridge" > "$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "remove"; }
guest "ls /var/lib/ironbridge/buffer/*.seg && test -f /etc/ironbridge/ironbridge.toml" >/dev/null || fail "remove deleted the buffer or the config"
guest "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ironbridge" > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "purge"; }
guest "test ! -e /etc/ironbridge && test -z \"\$(ls -A /var/lib/ironbridge 2>/dev/null)\"" || fail "purge left state behind"
say "remove kept the buffer and config; purge deleted them"

# No D-Bus in the image: systemctl says so and powers off through systemd directly.
guest "sync; systemctl poweroff" 2>/dev/null || true
for _ in $(seq 120); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
kill "$qpid" 2>/dev/null || true
qpid=""
e2fsck -fn "$work/data.img" > "$work/fsck-data.log" 2>&1 || { cat "$work/fsck-data.log"; fail "e2fsck: data disk"; }
e2fsck -fn "$work/root.img" > "$work/fsck-root.log" 2>&1 || { cat "$work/fsck-root.log"; fail "e2fsck: root disk"; }
echo "PASS: Debian image test: ready ${ready_s} s after restart, after the power cut active ${power_ready_s} s after qemu started, PUBACK ${puback_s} s, kill -9 -> ready ${kill9_s} s," \
    "watchdog -> ready ${wd_s} s after SIGSTOP, power cut: ${acked_before} acknowledged, none lost; exposure ${guest_score}; total $(since "$t0") s"
