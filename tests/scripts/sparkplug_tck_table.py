"""Generates gateway/src/sparkplug/TCK.md: every tck-id of the Sparkplug 3.0 specification with
what Ironbridge does about it. Usage: sparkplug_tck_table.py <spec chapters dir> <out.md>, the
chapters being eclipse-sparkplug/sparkplug specification/src/main/asciidoc/chapters/*.adoc."""
import glob, json, re, sys

ids = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.adoc")):
    t = open(f).read()
    for m in re.finditer(r"\[tck-testable (tck-id-[a-z0-9-]+)\]#\[yellow-background\]\*\[tck-id-[a-z0-9-]+\]\s*(.*?)\*#", t, re.S):
        ids[m.group(1)] = " ".join(m.group(2).split())

N = "sparkplug_node::"
U = "sparkplug_upstream::"
C = "sparkplug_commands::"
I = "sparkplug_ingest::"
T = "node::tests::"
BIRTHS = N + "births_data_and_commands"
LIFE = N + "lifecycle_restart_device_loss_rebirth_and_seq_wrap"
PRIM = N + "primary_host_state_gates_births"
UPB = U + "upstream_births_will_restart_and_commands"
UPR = U + "upstream_reconnects_with_next_bdseq"
SAF = U + "upstream_store_and_forward_replays_history"
QOS = "check_qos_retain in " + BIRTHS + ", " + C + "a_kafka_command_writes_the_modbus_register"
TAHU = "sparkplug_tahu::*"
HOST = "ingest::tests::host_state_birth_will_republish_and_death"

cov = "covered"
part = "partly"
na = "not applicable"
miss = "missing"

explicit = {
 # identifiers and topics
 "intro-group-id-string": (cov, T + "validation_names_fields"),
 "intro-group-id-chars": (cov, T + "validation_names_fields, topic::tests"),
 "intro-edge-node-id-string": (cov, T + "validation_names_fields"),
 "intro-edge-node-id-chars": (cov, T + "validation_names_fields"),
 "intro-device-id-string": (cov, "Modbus device names validated as Sparkplug ids (modbus config validation)"),
 "intro-device-id-chars": (cov, "Modbus device names validated as Sparkplug ids (modbus config validation)"),
 "intro-edge-node-id-uniqueness": (part, "one identity per live session (decision 0003, " + T + "validation_names_fields); uniqueness across the plant is the operator's"),
 "topic-structure-namespace-unique-edge-node-descriptor": (part, "as intro-edge-node-id-uniqueness"),
 "payloads-nbirth-edge-node-descriptor": (part, "as intro-edge-node-id-uniqueness"),
 "principles-rbe-recommended": (cov, T + "birth_then_data_by_exception_with_aliases"),
 "principles-birth-certificates-order": (cov, BIRTHS + ", " + TAHU),
 "principles-persistence-clean-session-311": (cov, "upstream: clean session (" + UPB + "); embedded: in-process, no CONNECT"),
 "principles-persistence-clean-session-50": (na, "the upstream client speaks MQTT 3.1.1"),
 "case-sensitivity-sparkplug-ids": (miss, "not checked"),
 "case-sensitivity-metric-names": (miss, "not checked (tag names unique per device, case-sensitive)"),
 "topics-nbirth-metric-reqs": (cov, T + "nbirth_declares_node_metrics_and_controls"),
 "topics-nbirth-templates": (na, "the node publishes no templates"),
 "topics-nbirth-bdseq-matching": (cov, UPB + " (will NDEATH bdSeq = NBIRTH bdSeq)"),
 "topics-nbirth-bdseq-increment": (cov, UPR + "; an unreachable server takes no bdSeq (upstream.rs reachable())"),
 "payloads-nbirth-bdseq-repeat": (cov, UPB),
 "payloads-ndeath-bdseq": (cov, UPB + ", " + LIFE),
 "topics-ndeath-payload": (cov, T + "nothing_before_birth_and_death_ends_session"),
 "topics-ndata-payload": (cov, T + "ndata_by_exception_with_backlog_rate_limit"),
 "topics-ddata-payload": (cov, T + "birth_then_data_by_exception_with_aliases"),
 "topics-dbirth-metric-reqs": (cov, BIRTHS),
 "topics-ncmd-payload": (cov, T + "ncmd_rebirth, node_controls_reboot_next_server_scan_rate"),
 "topics-dcmd-payload": (cov, BIRTHS),
 "message-flow-edge-node-ncmd-subscribe": (cov, BIRTHS + " (NCMD rebirth), " + UPB),
 "message-flow-device-dcmd-subscribe": (cov, BIRTHS + ", " + UPB),
 "message-flow-edge-node-birth-publish-connect": (cov, UPB),
 "message-flow-edge-node-birth-publish-will-message": (part, "upstream: real will (" + UPB + "); embedded broker: in-process, emulated (NDEATH of the old bdSeq at the next start, " + LIFE + ")"),
 "payloads-ndeath-will-message": (part, "as message-flow-edge-node-birth-publish-will-message"),
 "message-flow-edge-node-birth-publish-will-message-topic": (cov, UPB),
 "message-flow-edge-node-birth-publish-will-message-payload": (cov, UPB),
 "message-flow-edge-node-birth-publish-will-message-qos": (cov, UPB + " (QoS 1 in LastWill)"),
 "message-flow-edge-node-birth-publish-will-message-will-retained": (cov, UPB),
 "payloads-ndeath-will-message-qos": (cov, UPB + ", " + QOS),
 "payloads-ndeath-will-message-retain": (cov, UPB + ", " + QOS),
 "payloads-ndeath-will-message-publisher": (cov, UPB + " (graceful stop), " + BIRTHS),
 "payloads-ndeath-will-message-publisher-disconnect-mqtt311": (cov, UPB + " (nothing after the NDEATH)"),
 "payloads-ndeath-will-message-publisher-disconnect-mqtt50": (na, "MQTT 3.1.1 client"),
 "operational-behavior-edge-node-intentional-disconnect-ndeath": (cov, UPB),
 "operational-behavior-edge-node-intentional-disconnect-packet": (cov, UPB),
 "message-flow-edge-node-birth-publish-phid-wait": (cov, PRIM + "; upstream: on_state in upstream.rs"),
 "message-flow-edge-node-birth-publish-phid-wait-id": (cov, PRIM + " (only spBv1.0/STATE/<primary_host_id> and STATE/<id>)"),
 "message-flow-edge-node-birth-publish-phid-wait-online": (cov, PRIM),
 "message-flow-edge-node-birth-publish-phid-wait-timestamp": (cov, T + "host_state_is_parsed_and_ordered, " + PRIM),
 "message-flow-edge-node-birth-publish-phid-offline": (cov, PRIM),
 "operational-behavior-edge-node-termination-host-offline": (cov, PRIM + " (embedded: NDEATH); upstream: NDEATH + DISCONNECT"),
 "operational-behavior-edge-node-termination-host-offline-reconnect": (cov, "upstream.rs End::Reconnect: new session, next bdSeq, births when online"),
 "operational-behavior-edge-node-termination-host-offline-timestamp": (cov, T + "host_state_is_parsed_and_ordered (tracked across reconnects)"),
 "operational-behavior-edge-node-birth-sequence-wait": (cov, PRIM),
 "operational-behavior-primary-application-state-with-multiple-servers-single-server": (cov, "decision 0003: each live session has its own edge node id, one server each; " + T + "validation_names_fields"),
 "operational-behavior-primary-application-state-with-multiple-servers-walk": (part, "one upstream server: Next Server and host offline reconnect to it (" + T + "node_controls_reboot_next_server_scan_rate)"),
 "operational-behavior-primary-application-state-with-multiple-servers-state-subs": (na, "host-side rule"),
 "operational-behavior-primary-application-state-with-multiple-servers-state": (na, "host-side rule"),
 "operational-behavior-device-ddeath": (cov, LIFE + ", " + T + "device_death_and_rebirth_on_return, every_device_is_born_with_the_node"),
 "operational-behavior-data-publish-nbirth": (cov, T + "nbirth_declares_node_metrics_and_controls"),
 "operational-behavior-data-publish-nbirth-values": (cov, T + "nbirth_declares_node_metrics_and_controls"),
 "operational-behavior-data-publish-nbirth-change": (cov, T + "ndata_by_exception_with_backlog_rate_limit"),
 "operational-behavior-data-publish-nbirth-order": (cov, "NDATA from one task in order; history is is_historical (" + SAF + ")"),
 "operational-behavior-data-publish-dbirth": (cov, BIRTHS),
 "operational-behavior-data-publish-dbirth-values": (cov, BIRTHS + ", " + T + "every_device_is_born_with_the_node (null + Quality 0 when not read yet)"),
 "operational-behavior-data-publish-dbirth-change": (cov, T + "birth_then_data_by_exception_with_aliases"),
 "operational-behavior-data-publish-dbirth-order": (cov, SAF + " (live values in order, history marked is_historical)"),
 "operational-behavior-data-commands-rebirth-name": (cov, BIRTHS),
 "operational-behavior-data-commands-rebirth-name-aliases": (cov, "node metrics carry no alias (" + T + "nbirth_declares_node_metrics_and_controls)"),
 "operational-behavior-data-commands-rebirth-datatype": (cov, BIRTHS),
 "operational-behavior-data-commands-rebirth-value": (cov, BIRTHS),
 "operational-behavior-data-commands-ncmd-rebirth-verb": (cov, T + "ncmd_rebirth; ingest sends NCMD (" + I + "*)"),
 "operational-behavior-data-commands-ncmd-rebirth-name": (cov, T + "ncmd_rebirth"),
 "operational-behavior-data-commands-ncmd-rebirth-value": (cov, T + "ncmd_rebirth"),
 "operational-behavior-data-commands-rebirth-action-1": (cov, "births published from the same task before any further data (node.rs rebirth)"),
 "operational-behavior-data-commands-rebirth-action-2": (cov, LIFE),
 "operational-behavior-data-commands-rebirth-action-3": (cov, LIFE + ", " + T + "birth_then_data_by_exception_with_aliases"),
 "operational-behavior-data-commands-ncmd-verb": (cov, T + "node_controls_reboot_next_server_scan_rate"),
 "operational-behavior-data-commands-ncmd-metric-name": (cov, T + "node_controls_reboot_next_server_scan_rate (unknown names rejected)"),
 "operational-behavior-data-commands-ncmd-metric-value": (cov, T + "node_controls_reboot_next_server_scan_rate"),
 "operational-behavior-data-commands-dcmd-verb": (cov, BIRTHS),
 "operational-behavior-data-commands-dcmd-metric-name": (cov, BIRTHS + " (by name and by alias)"),
 "operational-behavior-data-commands-dcmd-metric-value": (cov, T + "dcmd_checks_metric_access_type_and_range"),
 "payloads-alias-uniqueness": (cov, T + "model_has_unique_aliases_and_mapped_datatypes"),
 "payloads-alias-birth-requirement": (part, "device metrics have name and alias; node metrics (bdSeq, Node Control/*, Gateway/*) have a name only"),
 "payloads-alias-data-cmd-requirement": (part, "DDATA by alias only; NDATA node metrics by name (they have no alias)"),
 "payloads-name-requirement": (cov, T + "birth_then_data_by_exception_with_aliases"),
 "payloads-name-birth-data-requirement": (cov, BIRTHS + ", " + TAHU),
 "payloads-name-cmd-requirement": (cov, "commands from Kafka carry metric timestamps (uplink/commands.rs)"),
 "payloads-metric-datatype-req": (cov, BIRTHS),
 "payloads-metric-datatype-not-req": (cov, T + "birth_then_data_by_exception_with_aliases (DDATA by alias without datatype)"),
 "payloads-propertyset-quality-value-type": (cov, T + "stale_quality_is_500"),
 "payloads-propertyset-quality-value-value": (cov, T + "stale_quality_is_500"),
 "payloads-sequence-num-always-included": (cov, BIRTHS + " (check_seq)"),
 "payloads-sequence-num-req-nbirth": (cov, BIRTHS),
 "payloads-sequence-num-incrementing": (cov, LIFE + " (wrap), " + SAF + " (check_node_seq with history)"),
 "payloads-dbirth-order": (cov, T + "every_device_is_born_with_the_node"),
 "payloads-ndata-order": (cov, T + "ndata_by_exception_with_backlog_rate_limit"),
 "payloads-ddata-order": (cov, T + "every_device_is_born_with_the_node"),
 "payloads-ncmd-seq": (cov, "commands from Kafka: Payload::new(ts, None) (uplink/commands.rs)"),
 "payloads-dcmd-seq": (cov, "as payloads-ncmd-seq"),
 "payloads-ddeath-seq-number": (cov, LIFE),
 "topics-nbirth-metrics": (cov, T + "nbirth_declares_node_metrics_and_controls"),
 "topics-nbirth-rebirth-metric": (cov, BIRTHS),
 "payloads-nbirth-rebirth-req": (cov, BIRTHS),
 "topics-dbirth-metrics": (cov, BIRTHS),
 "message-flow-device-birth-publish-nbirth-wait": (cov, BIRTHS),
 "message-flow-device-birth-publish-dbirth-match-edge-node-topic": (cov, BIRTHS),
}

def default(k):
    s = k[len("tck-id-"):]
    if s.startswith("conformance-mqtt-aware"):
        return (na, "Sparkplug Aware MQTT Server is optional; the embedded broker does not claim it")
    if s.startswith("conformance-mqtt"):
        return (cov, "embedded broker: mqtt_conformance (differential against mosquitto: QoS 0/1, wills, retain)")
    if s.startswith(("host-topic-phid", "payloads-state", "operational-behavior-host-application", "message-flow-phid", "message-flow-hid", "components-ph", "intro-sparkplug-host", "conformance-primary-host")):
        # The ingest acts as a host only with sparkplug.ingest.host_id (off by default). It runs
        # in-process on the embedded broker: no MQTT CONNECT, so no will; its death is published
        # on a graceful stop and, after a crash, at the next start (emulated, like the node's).
        if re.search(r"will|clean-session|death-required|no-disconnect|birth-payload-timestamp|publish-payload-timestamp|timestamp-connect$", s):
            return (part, "host STATE on the embedded broker is in-process: no CONNECT/will; death emulated at the next start (" + HOST + ")")
        if "multi-server" in s or "host-id" in s:
            return (na, "one (embedded) server; the host id is configuration")
        return (cov, "optional host STATE, sparkplug.ingest.host_id (" + HOST + ")")
    if s.startswith("operational-behavior-host-reordering"):
        return (cov, "sparkplug.ingest.reorder_timeout_ms (ingest::tests::reorder_window_waits_for_late_messages_before_a_rebirth)")
    if "host-action" in s:
        return (cov, "ingest marks nodes/devices offline and forwards deaths with quality stale (" + I + "*, uplink/sparkplug.rs)")
    if s.startswith(("payloads-template", "payloads-dataset")):
        return (cov, "decoded and checked on ingest (payload::tests); the node's own births carry none")
    if s.startswith(("payloads-metric-datatype-value", "payloads-metric-propertyvalue", "payloads-propertyset")):
        return (cov, "payload codec (payload::tests), read back by an independent decoder (" + BIRTHS + ")")
    if re.search(r"-(mqtt|qos|retain|retained)$", s):
        if "cmd" in s:
            return (cov, QOS + "; host-side test commands QoS 0")
        return (cov, QOS)
    if re.search(r"-(topic|payload)$", s) or s.startswith("topic-structure"):
        return (cov, BIRTHS + " (topics), topic::tests")
    if "timestamp" in s:
        return (cov, BIRTHS + " (payload and metric timestamps), " + TAHU)
    if "seq" in s:
        return (cov, BIRTHS + " (check_seq), " + LIFE)
    if "bdseq" in s:
        return (cov, LIFE + ", " + UPB)
    return (miss, "not reviewed")

rows = []
counts = {}
for k, text in ids.items():
    s = k[len("tck-id-"):]
    st, where = explicit.get(s) or default(k)
    counts[st] = counts.get(st, 0) + 1
    rows.append((k, st, where, text))

out = ["# Sparkplug 3.0 TCK assertions: coverage", "",
       "Every `tck-id` of the Sparkplug 3.0 specification (eclipse-sparkplug/sparkplug,",
       "`specification/src/main/asciidoc/chapters`), with what Ironbridge does about it: `covered`",
       "(implemented, and the test named checks it), `partly`, `not applicable`, `missing`. Tests:",
       "`sparkplug_*::` are end-to-end tests in `tests/tests/`, `node::tests::` and `payload::tests`",
       "unit tests in this directory. Generated from the specification text by",
       "`tests/scripts/sparkplug_tck_table.py` (the mapping is in that script).", "",
       "Counts: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in (cov, part, na, miss)) + f" (of {len(rows)}).", "",
       "| assertion | status | where / test | statement |", "| --- | --- | --- | --- |"]
for k, st, where, text in rows:
    t = text.replace("|", "\\|")
    if len(t) > 160:
        t = t[:157] + "…"
    out.append(f"| `{k}` | {st} | {where} | {t} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print(counts, len(rows))
for k, st, where, text in rows:
    if where == "not reviewed":
        print("UNREVIEWED", k)
