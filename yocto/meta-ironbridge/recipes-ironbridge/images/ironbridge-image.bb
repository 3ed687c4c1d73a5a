# nooelint: oelint.var.suggestedvar.BUGTRACKER, oelint.var.suggestedvar.CVE_PRODUCT - an image: no tracker, no CVE product of its own
SUMMARY = "Ironbridge gateway image"
DESCRIPTION = "A minimal systemd image that runs the Ironbridge daemon as a service, with the \
               system CA certificates and a separate ext4 data partition (label \
               ironbridge-data) for the daemon's disk buffer and state at /var/lib/ironbridge."
SECTION = "images"
LICENSE = "MIT"

inherit core-image features_check

# The daemon runs as a systemd service (Type=notify, system account ironbridge).
REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_INSTALL = "packagegroup-core-boot packagegroup-ironbridge ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_LINGUAS = ""

# Partition layout: root file system plus the data partition, mounted by label through the fstab
# entry wic writes (files/wic/*.wks).
IMAGE_FSTYPES:append:qemuarm64 = " wic"
WKS_FILE:qemuarm64 = "ironbridge-qemuarm64.wks"
WKS_FILE:rpi = "ironbridge-rpi.wks"

# runqemu: the wic disk has no kernel; runqemu passes it and boots the first partition.
QB_DEFAULT_FSTYPE:qemuarm64 = "wic"
QB_FSINFO:qemuarm64 = "wic:no-kernel-in-fs"
QB_KERNEL_ROOT:qemuarm64 = "/dev/vda1"
