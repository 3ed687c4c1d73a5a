# nooelint: oelint.var.suggestedvar.BUGTRACKER - the project has no public bug tracker yet
SUMMARY = "Ironbridge gateway runtime"
DESCRIPTION = "The Ironbridge daemon and what it needs on the box: the system CA bundle for \
               the Kafka TLS uplink and e2fsck for the buffer's ext4 data partition."
SECTION = "net"
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = "\
    ca-certificates \
    e2fsprogs-e2fsck \
    ironbridge \
"
