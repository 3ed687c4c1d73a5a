# nooelint: oelint.var.mandatoryvar.HOMEPAGE, oelint.var.suggestedvar.BUGTRACKER, oelint.var.bbclassextend - no public homepage or bug tracker yet; a daemon for the target only
SUMMARY = "Ironbridge edge gateway: MQTT and Modbus to Kafka through a durable disk buffer"
DESCRIPTION = "The ironbridge daemon runs a local MQTT endpoint for PLCs, sensors and \
               Sparkplug B edge nodes, polls Modbus TCP/RTU devices, appends every accepted \
               message to a durable disk buffer and forwards the buffer to a Kafka cluster, \
               catching up in order after an uplink outage."
SECTION = "net"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile - the repository has no license file; Cargo.toml declares Apache-2.0
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"
CVE_PRODUCT = "ironbridge"

PV .= "+git"

# By default the recipe builds branch IRONBRIDGE_GIT_BRANCH of the repository this layer is
# checked out in (this recipe is yocto/meta-ironbridge/recipes-ironbridge/ironbridge/ in it), at
# its newest commit.
# For a release build set IRONBRIDGE_GIT_REPO (host/path), IRONBRIDGE_GIT_PROTOCOL (https, ssh),
# IRONBRIDGE_GIT_BRANCH and SRCREV_ironbridge (a commit id) in local.conf or the kas file.
IRONBRIDGE_GIT_REPO ??= "${@os.path.normpath(d.getVar('THISDIR') + '/../../../..')}"
IRONBRIDGE_GIT_PROTOCOL ??= "file"
IRONBRIDGE_GIT_BRANCH ??= "main"
SRC_URI = "git://${IRONBRIDGE_GIT_REPO};protocol=${IRONBRIDGE_GIT_PROTOCOL};branch=${IRONBRIDGE_GIT_BRANCH};name=ironbridge \
           file://ironbridge.toml \
           "
# nooelint: oelint.vars.autorev - default: the layer's own checkout; release builds set a commit
SRCREV_ironbridge ??= "${AUTOREV}"
SRCREV_FORMAT = "ironbridge"

# Every crate of Cargo.lock (yocto/scripts/gen-crates-inc.py keeps this in step; CI checks it).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd

# The workspace's rust-version (root Cargo.toml); yocto/scripts/check.sh checks they match.
IRONBRIDGE_MIN_RUST = "1.89"

# Refuse to build with an older Rust than the workspace needs, with a message that says what to
# do, instead of failing deep inside cargo. RUSTVERSION selects rust-native, cargo-native and
# libstd-rs (OE-core's tcmode-default.inc, or a layer such as meta-lts-mixins overriding it).
# nooelint: oelint.task.noanonpython - the check must run at parse time to skip the recipe
python __anonymous() {
    import re

    def version_tuple(text):
        return tuple(int(n) for n in re.findall(r"\d+", text)[:3])

    need = d.getVar("IRONBRIDGE_MIN_RUST")
    have = (d.getVar("RUSTVERSION") or "").rstrip("%")
    if not have or version_tuple(have) < version_tuple(need):
        raise bb.parse.SkipRecipe(
            "ironbridge needs Rust >= %s (rust-version in its Cargo.toml) but this build selects "
            "RUSTVERSION = '%s'. Build with Yocto Project 6.0 'wrynose' (Rust 1.94) or newer, or add "
            "a layer that provides a newer Rust and sets RUSTVERSION (e.g. meta-lts-mixins' Rust "
            "branch for your release)." % (need, have or "unset"))
}

# Only the daemon: the workspace's other members are libraries and test harnesses.
CARGO_BUILD_FLAGS += "--package ironbridge --bin ironbridge"
# The workspace's release profile strips symbols; here OE strips into ironbridge-dbg itself, and
# its already-stripped QA check is an error. Cargo's environment overrides the manifest's profile.
export CARGO_PROFILE_RELEASE_STRIP = "false"

# The service account, as systemd/ironbridge.sysusers declares it (installed below too): useradd
# creates it at rootfs time so do_install can give it /etc/ironbridge and the package owns it.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --user-group --home-dir ${localstatedir}/lib/ironbridge --no-create-home \
                       --shell ${base_sbindir}/nologin --comment 'Ironbridge edge gateway' ironbridge"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/ironbridge.service ${D}${systemd_system_unitdir}/ironbridge.service

    # The same sysusers.d and tmpfiles.d files as the Debian package (systemd/): the account, and
    # /etc/ironbridge (secrets; rewritten by the web UI) for that account alone.
    install -D -m 0644 ${S}/systemd/ironbridge.sysusers ${D}${nonarch_libdir}/sysusers.d/ironbridge.conf
    install -D -m 0644 ${S}/systemd/ironbridge.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/ironbridge.conf
    install -d -m 0750 -o ironbridge -g ironbridge ${D}${sysconfdir}/ironbridge
    install -m 0640 -o ironbridge -g ironbridge ${UNPACKDIR}/ironbridge.toml ${D}${sysconfdir}/ironbridge/ironbridge.toml

    # StateDirectory=ironbridge: the image mounts the data partition here; systemd gives it to the
    # service account at start.
    install -d -m 0750 -o ironbridge -g ironbridge ${D}${localstatedir}/lib/ironbridge

    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/README.md ${D}${docdir}/${BPN}/README.md
}

SYSTEMD_SERVICE:${PN} = "ironbridge.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

FILES:${PN} += "${localstatedir}/lib/ironbridge ${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d"
CONFFILES:${PN} = "${sysconfdir}/ironbridge/ironbridge.toml"

# rustls-native-certs reads the system CA bundle for the Kafka TLS uplink.
RDEPENDS:${PN} = "ca-certificates"
