#!/usr/bin/env bash
# CI check of the Yocto layer, offline (a bitbake build cannot run on CI; yocto/README.md says how
# to run one on a build host):
#   1. ironbridge-crates.inc matches Cargo.lock (regenerated into a temp file and compared);
#   2. the recipe's minimum Rust matches the workspace rust-version; the files the recipe installs
#      from the source tree exist; the image's wks files exist and mount the data partition;
#   3. oelint-adv finds nothing in the layer (only the rule that needs the network is suppressed:
#      the HOMEPAGE ping; a few inline "nooelint" comments in the recipes say why each applies);
#   4. the kas files are valid against kas's schema (kas's own loader, no network).
# Tools live in a venv (IRONBRIDGE_YOCTO_VENV, default /var/cache/ironbridge/yocto-venv), created
# on first use from PyPI and reused while the pinned versions are unchanged.
# Usage: yocto/scripts/check.sh [path of an ironbridge binary: also check-config the default config]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
layer="$root/yocto/meta-ironbridge"
recipe_dir="$layer/recipes-ironbridge/ironbridge"
venv=${IRONBRIDGE_YOCTO_VENV:-/var/cache/ironbridge/yocto-venv}
requirements="oelint-adv==9.11.2 kas==5.5"
release=wrynose
start=$(date +%s)
fail() { echo "yocto check: $*" >&2; exit 1; }

if [ "$(cat "$venv/.ironbridge-requirements" 2>/dev/null)" != "$requirements" ]; then
    echo "creating $venv ($requirements)"
    if ! /usr/bin/python3 -m venv --help >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q python3-venv
    fi
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check $requirements
    echo "$requirements" > "$venv/.ironbridge-requirements"
fi
py="$venv/bin/python"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. crates.inc
"$py" "$here/gen-crates-inc.py" --lock "$root/Cargo.lock" --output "$tmp/ironbridge-crates.inc"
if ! diff -u "$recipe_dir/ironbridge-crates.inc" "$tmp/ironbridge-crates.inc" > "$tmp/crates.diff"; then
    head -40 "$tmp/crates.diff"
    fail "ironbridge-crates.inc does not match Cargo.lock: run yocto/scripts/gen-crates-inc.py and commit the result"
fi
crates=$(grep -c '^    crate://' "$recipe_dir/ironbridge-crates.inc")
echo "crates.inc: $crates crates, matches Cargo.lock"

# 2. consistency with the workspace
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$root/Cargo.toml" | head -1)
have=$(sed -n 's/^IRONBRIDGE_MIN_RUST = "\([0-9.]*\)"$/\1/p' "$recipe_dir"/ironbridge_*.bb)
[ -n "$need" ] && [ "$need" = "$have" ] ||
    fail "IRONBRIDGE_MIN_RUST in ironbridge_*.bb is '$have', Cargo.toml's rust-version is '$need': make them equal"
for f in systemd/ironbridge.service systemd/ironbridge.sysusers systemd/ironbridge.tmpfiles README.md Cargo.lock; do
    [ -f "$root/$f" ] || fail "the recipe installs or needs $f from the source tree, and it is missing"
done
grep -q '^ExecStart=/usr/bin/ironbridge ' "$root/systemd/ironbridge.service" ||
    fail "systemd/ironbridge.service does not start /usr/bin/ironbridge (where the recipe installs it)"
grep -q '^StateDirectory=ironbridge' "$root/systemd/ironbridge.service" ||
    fail "systemd/ironbridge.service has no StateDirectory=ironbridge (the data partition is mounted for it)"
for wks in $(sed -n 's/^WKS_FILE:[a-z0-9-]* = "\(.*\)"$/\1/p' "$layer/recipes-ironbridge/images/ironbridge-image.bb"); do
    [ -f "$layer/files/wic/$wks" ] || fail "ironbridge-image.bb names $wks, which is not in files/wic/"
    grep -Eq '^part /var/lib/ironbridge .*--label ironbridge-data' "$layer/files/wic/$wks" ||
        fail "$wks has no ironbridge-data partition mounted at /var/lib/ironbridge"
done
grep -q '^User=ironbridge$' "$root/systemd/ironbridge.service" &&
    grep -q '^u ironbridge ' "$root/systemd/ironbridge.sysusers" &&
    sed -n '/^USERADD_PARAM/,/"$/p' "$recipe_dir"/ironbridge_*.bb | tr -d '\\\n' | grep -q -- '--system --user-group .* ironbridge"$' ||
    fail "the unit's User=, systemd/ironbridge.sysusers and the recipe's USERADD_PARAM must name the same account ironbridge"
echo "recipe: rust-version $need, unit, README and wks files consistent"

# 3. oelint-adv
cd "$layer"
mapfile -t files < <(find . \( -name '*.bb' -o -name '*.bbappend' -o -name '*.inc' -o -name '*.conf' \) -printf '%P\n' | sort)
set +e
"$venv/bin/oelint-adv" --quiet --relpaths --mode all --release "$release" \
    --constantmods "+$here/oelint-constants.json" \
    --suppress oelint.vars.homepageping \
    "${files[@]}" > "$tmp/oelint.out" 2>&1
rc=$?
set -e
cd "$root"
if [ "$rc" != 0 ] || grep -q . "$tmp/oelint.out"; then
    cat "$tmp/oelint.out"
    fail "oelint-adv found problems in yocto/meta-ironbridge (exit $rc)"
fi
echo "oelint-adv ($("$venv/bin/oelint-adv" --version 2>/dev/null | awk '{print $NF}'), --release $release): ${#files[@]} files clean"

# 4. kas
"$py" "$here/check-kas.py" "$root"/yocto/kas/*.yml

# Optional: the default configuration passes the daemon's own check.
if [ $# -ge 1 ]; then
    "$1" check-config "$recipe_dir/files/ironbridge.toml" ||
        fail "the image's default ironbridge.toml does not pass check-config"
fi
echo "yocto layer: all checks passed in $(( $(date +%s) - start )) s"
