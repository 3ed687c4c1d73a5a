"""Renders the campaign's JSON reports (tests/tests/campaign.rs) as docs/campaign/REPORT.md."""
import datetime
import glob
import json
import os
import platform
import sys

src, dst = sys.argv[1], sys.argv[2]
reports = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(src, "*.json")))]
out = [
    "# Proof campaign report",
    "",
    f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
    f"{platform.machine()}, {os.cpu_count()} cores, by `bash tests/campaign/run.sh "
    f"{reports[0]['mode'] if reports else 'full'}`.",
    "",
    "| campaign | trials | acknowledged | delivered | lost | duplicates | reordered per key | "
    "Modbus records | Modbus reordered | time |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for r in reports:
    out.append(
        f"| {r['name']} ({r['mode']}) | {r['trials']} | {r['acknowledged']} | {r['delivered']} | "
        f"**{r['lost']}** | {r['duplicates']} | **{r['reordered']}** | {r['modbus_records']} | "
        f"{r['modbus_reordered']} | {r['elapsed_s']:.0f} s |"
    )
out += [
    "",
    "lost = acknowledged (PUBACK received) but not in Kafka; duplicates = extra identical copies "
    "carrying the same `gateway_id` + `buffer_offset` headers (droppable by consumers); "
    "reordered = a record after a later one of the same key (MQTT topic / Modbus tag).",
    "",
]
for r in reports:
    out += [f"## {r['name']}", "", "| trial | what | uplink | acknowledged | detail |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        out.append(
            f"| {row['trial']} | {row['what']} | {row['uplink']} | {row['acknowledged']} | {row['detail']} |"
        )
    out.append("")
os.makedirs(os.path.dirname(dst), exist_ok=True)
open(dst, "w").write("\n".join(out))
print(f"wrote {dst} from {len(reports)} reports")
