#!/usr/bin/env python3
"""Counts the records of a topic with confluent-kafka (librdkafka), for the gateway bench.

    /var/cache/ironbridge/venv/bin/python tests/benches/kafka_count.py \
        --bootstrap 127.0.0.1:PORT --topic T --expect N [--timeout S]

Reads every partition from the beginning until N records arrived (or the timeout passed) and
prints one JSON line: {"records", "distinct_ids", "value_bytes", "elapsed_s"}, where
distinct_ids counts distinct (gateway_id, buffer_offset) header pairs (records without them
count as distinct). Exits 3 if fewer than N records arrived.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "broker.address.family": "v4",
        "group.id": f"ironbridge-bench-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "log_level": 3,
    })
    consumer.subscribe([args.topic])
    start = time.monotonic()
    deadline = start + args.timeout
    records = 0
    value_bytes = 0
    ids = set()
    anonymous = 0
    try:
        while records < args.expect and time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=10000, timeout=0.5)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or not err.retriable():
                        print(f"count {args.topic}: {err}", file=sys.stderr)
                        return 2
                    continue
                records += 1
                v = m.value()
                value_bytes += len(v) if v is not None else 0
                gw = off = None
                for name, hv in m.headers() or []:
                    if name == "gateway_id":
                        gw = hv
                    elif name == "buffer_offset":
                        off = hv
                if off is None:
                    anonymous += 1
                else:
                    ids.add((gw, off))
    finally:
        consumer.close()
    print(json.dumps({
        "records": records,
        "distinct_ids": len(ids) + anonymous,
        "value_bytes": value_bytes,
        "elapsed_s": round(time.monotonic() - start, 3),
    }), flush=True)
    return 0 if records >= args.expect else 3


if __name__ == "__main__":
    sys.exit(main())
