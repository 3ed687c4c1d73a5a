"""Renders the campaign's JSON reports (tests/tests/campaign.rs) as docs/campaign/REPORT.md.

    python3 tests/campaign/report.py DIR docs/campaign/REPORT.md [NOTE]

DIR holds one JSON file per campaign test (kill9, outages, disk_full, torn_writes). NOTE (optional)
is written under the heading, e.g. what did not run.
"""
import collections
import datetime
import glob
import json
import os
import platform
import sys

src, dst = sys.argv[1], sys.argv[2]
note = sys.argv[3] if len(sys.argv) > 3 else ""
ORDER = {"kill9": 0, "outages": 1, "outages_short": 1.5, "disk_full": 2, "torn_writes": 3}
TITLES = {
    "kill9": "kill -9 under mixed load",
    "outages": "uplink outages under load",
    "outages_short": "uplink outages under load (short campaign)",
    "disk_full": "disk full during an outage",
    "torn_writes": "torn writes and flipped bytes between kill -9 restarts",
}
reports = [json.load(open(p)) for p in glob.glob(os.path.join(src, "*.json"))]
reports.sort(key=lambda r: (ORDER.get(r["name"], 99), r["name"]))


def command(r):
    mode = "" if r["mode"] == "full" else " short"
    seed = r.get("seed") or 0
    env = f"IRONBRIDGE_CAMPAIGN_SEED={seed} " if seed else ""
    return f"`{env}bash tests/campaign/run.sh{mode}`"


out = [
    "# Proof campaign report",
    "",
    f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
    f"{platform.machine()}, {os.cpu_count()} cores, from the JSON reports next to this file "
    f"(`tests/campaign/run.sh` writes them, `tests/campaign/report.py` renders them).",
    "",
]
if note:
    out += [note, ""]
out += [
    "| campaign | mode | trials | acknowledged | delivered | lost | duplicates | reordered per key | "
    "corrupt counted | Modbus records | Modbus duplicates | Modbus reordered | time | seed |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in reports:
    out.append(
        f"| {TITLES.get(r['name'], r['name'])} | {r['mode']} | {r['trials']} | {r['acknowledged']} | "
        f"{r['delivered']} | **{r['lost']}** | **{r['duplicates']}** | **{r['reordered']}** | "
        f"{r.get('corrupt_records', 0)} | {r['modbus_records']} | {r.get('modbus_duplicates', 0)} | "
        f"{r['modbus_reordered']} | "
        f"{r['elapsed_s']:.0f} s | {r.get('seed') or '-'} |"
    )
out += [
    "",
    "lost = acknowledged (PUBACK received) but not in Kafka (goal 0); duplicates = extra identical "
    "copies carrying the same `gateway_id` + `buffer_offset` headers (goal 0: the uplink is an "
    "idempotent producer and reads each partition's tail after a restart, see "
    "`gateway/src/uplink/README.md`); "
    "reordered = a record after a later one of the same key (MQTT topic / Modbus tag). In the "
    "disk-full campaign, lost under `drop_oldest` is what the policy dropped (it must equal the "
    "uplink's `buffer_missed` counter exactly; the buffer's `dropped_records` may exceed it by "
    "the uplink's in-flight batch, which was read before its segment was dropped and still "
    "delivered); in the torn-write campaign, lost is exactly the messages whose "
    "bytes the test destroyed (it fails if any other message is missing or a damaged one is "
    "delivered).",
    "",
]
for r in reports:
    out += [f"## {TITLES.get(r['name'], r['name'])} ({r['name']})", "", f"Replay: {command(r)}", ""]
    if r["name"].startswith("outages"):
        kinds = collections.OrderedDict()
        for row in r["rows"]:
            k = kinds.setdefault(row["uplink"], [0, 0, []])
            k[0] += 1
            k[1] += row["acknowledged"]
            k[2].append(row["what"].rsplit(" ", 2)[-2])
        out += ["| kind | outages | seconds | acknowledged meanwhile |", "|---|---|---|---|"]
        for kind, (n, acked, secs) in kinds.items():
            out.append(f"| {kind} | {n} | {', '.join(secs)} | {acked} |")
        out.append("")
    out += ["| trial | what | uplink | acknowledged | detail |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        out.append(
            f"| {row['trial']} | {row['what']} | {row['uplink']} | {row['acknowledged']} | {row['detail']} |"
        )
    out.append("")
names = {r["name"] for r in reports}
missing = [TITLES[n] for n in ORDER if n not in names and not (n == "outages_short" or
                                                                 (n == "outages" and "outages_short" in names))]
if missing:
    out += ["## Not in this run", ""] + [f"- {m}" for m in missing] + [""]
os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
open(dst, "w").write("\n".join(out))
print(f"wrote {dst} from {len(reports)} reports")
