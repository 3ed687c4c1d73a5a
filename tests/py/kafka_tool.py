#!/usr/bin/env python3
"""Independent Kafka client (confluent-kafka / librdkafka) for the Ironbridge e2e tests.

Run it with the venv made by tests/scripts/setup-python.sh:
    /var/cache/ironbridge/venv/bin/python tests/py/kafka_tool.py SUBCOMMAND ...

Subcommands
  create-topic --bootstrap B --topic T [--partitions N]
      Creates T (CreateTopics, replication factor 1). Prints {"created": T, "partitions": N}.
      Exits 0 if the topic already exists with the requested partition count.
  consume --bootstrap B --topic T [--expect N] [--timeout S] [--from-offset O] [--fetch-max-bytes N]
      Reads every partition of T from the beginning (or from offset O in each partition). Without --expect it stops when all partitions
      reached their end; with --expect it stops after N records. A request is not given up before
      the timeout (socket.timeout.ms >= --timeout). --fetch-max-bytes bounds each Fetch request (and
      polls with a 100 ms fetch wait): for reading large topics back from tansu, which otherwise answers
      the first Fetch with every partition's records at once (see tests/TANSU.md). Prints one JSON line
      per record:
        {"topic", "partition", "offset", "timestamp", "timestamp_type",
         "key": utf8 str | base64 str | null, "key_b64": bool,
         "value": base64 str | null,
         "headers": {name: utf8 str or base64 str},  "headers_b64": [names whose value is base64],
         "headers_raw": [[name, base64 value or null], ...]   (exact, keeps order and duplicates)}
      Exits 3 (after printing what it got) if fewer than N records arrived, or without --expect not every
      partition's end was reached, before the timeout; stderr then says how far each partition got.
  offsets --bootstrap B --topic T
      Prints one JSON line per partition: {"partition", "low", "high"} (ListOffsets earliest/latest).
  produce --bootstrap B --topic T --count N --size S [--compression C] [--acks A] [--key K]
          [--header NAME=VALUE]... [--partition P] [--linger-ms MS]
      Produces N records whose value is the record index in decimal, zero-padded to 10 digits and then
      padded with 'x' to S bytes. Prints {"count", "bytes", "elapsed_s", "records_per_s", "mb_per_s"}.
      Exits 4 if any record failed. --value TEXT: every value is TEXT instead (e.g. a JSON command).
  mock-cluster [--brokers N]
      Starts librdkafka's built-in mock Kafka cluster (test.mock.num.brokers=N, default 3) on 127.0.0.1 in
      this process, prints {"bootstrap": "host:port,..."} and serves until stdin is closed. Topics are
      auto-created (4 partitions) on first use; idempotent produce is checked as by Apache Kafka
      (sequence numbers per producer id and partition).
  partition --partitions N KEY...
      Where Kafka's Java client (default partitioner) puts each keyed record: toPositive(murmur2(key)) % N,
      with murmur2 implemented here, independently of the gateway, and checked against the test vectors of
      Apache Kafka's UtilsTest.testMurmur2 first (exit 5 if they fail). Keys are taken as UTF-8.
      Prints {"partitions": N, "keys": {key: partition}}.

Errors go to stderr as text; the exit code is non-zero.
"""

import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def b64(data):
    return base64.b64encode(data).decode("ascii")


def text_or_b64(data):
    """Returns (str, is_base64)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return b64(data), True


def common_conf(args):
    return {
        "bootstrap.servers": args.bootstrap,
        # Keep librdkafka on the addresses we give it; it only ever talks to 127.0.0.1 here.
        "broker.address.family": "v4",
        "log_level": 3,
    }


# Apache Kafka clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def murmur2(data):
    """org.apache.kafka.common.utils.Utils.murmur2: 32-bit MurmurHash2, seed 0x9747b28c, as a Java int."""
    mask = 0xFFFFFFFF
    m = 0x5BD1E995
    r = 24
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(length // 4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & mask
        k ^= k >> r  # Java's >>> on an int
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length & ~3
    rest = length % 4
    # Java's switch falls through: case 3, then 2, then 1.
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key, partitions):
    """The Java client's default partitioner for a keyed record: Utils.toPositive(murmur2(key)) % n."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def cmd_partition(args):
    for data, want in MURMUR2_VECTORS:
        got = murmur2(data)
        if got != want:
            print(f"partition: murmur2({data!r}) = {got}, Kafka's test vector says {want}", file=sys.stderr)
            return 5
    if args.partitions < 1:
        print("partition: --partitions must be at least 1", file=sys.stderr)
        return 2
    keys = {k: java_partition(k.encode("utf-8"), args.partitions) for k in args.keys}
    print(json.dumps({"partitions": args.partitions, "keys": keys}), flush=True)
    return 0


def cmd_create_topic(args):
    admin = AdminClient(common_conf(args))
    futures = admin.create_topics(
        [NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)],
        operation_timeout=args.timeout,
        request_timeout=args.timeout,
    )
    try:
        futures[args.topic].result(timeout=args.timeout)
    except KafkaException as e:
        err = e.args[0]
        if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            print(f"create-topic {args.topic}: {err}", file=sys.stderr)
            return 2
        md = admin.list_topics(args.topic, timeout=args.timeout)
        have = len(md.topics[args.topic].partitions)
        if have != args.partitions:
            print(f"create-topic {args.topic}: exists with {have} partitions, wanted {args.partitions}",
                  file=sys.stderr)
            return 2
    print(json.dumps({"created": args.topic, "partitions": args.partitions}), flush=True)
    return 0


def record_json(msg):
    ts_type, ts = msg.timestamp()
    key = msg.key()
    if key is None:
        key_s, key_b64 = None, False
    else:
        key_s, key_b64 = text_or_b64(key)
    headers, headers_b64, headers_raw = {}, [], []
    for name, value in msg.headers() or []:
        headers_raw.append([name, None if value is None else b64(value)])
        if value is None:
            headers[name] = None
            continue
        s, is_b64 = text_or_b64(value)
        headers[name] = s
        if is_b64:
            headers_b64.append(name)
    value = msg.value()
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": ts,
        "timestamp_type": ts_type,
        "key": key_s,
        "key_b64": key_b64,
        "value": None if value is None else b64(value),
        "headers": headers,
        "headers_b64": headers_b64,
        "headers_raw": headers_raw,
    }


def cmd_consume(args):
    conf = common_conf(args)
    conf.update({
        "group.id": f"ironbridge-e2e-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "check.crcs": True,
        # librdkafka abandons a request after socket.timeout.ms (default 60 s), reconnects and sends
        # the same Fetch again; a broker that needs longer for it then never gets anywhere (and keeps
        # working on the abandoned requests). Within our own deadline (up to librdkafka's maximum,
        # 300 s), wait for the answer.
        "socket.timeout.ms": min(300_000, max(60_000, int(args.timeout * 1000))),
    })
    if args.fetch_max_bytes is not None:
        conf.update({
            "fetch.max.bytes": args.fetch_max_bytes,
            "max.partition.fetch.bytes": args.fetch_max_bytes,
            # librdkafka insists on fetch.max.bytes >= message.max.bytes.
            "message.max.bytes": min(args.fetch_max_bytes, 1_000_000),
            # tansu waits up to half of what is left of fetch.wait.max.ms even after it found data.
            "fetch.wait.max.ms": 100,
        })
    consumer = Consumer(conf)
    deadline = time.monotonic() + args.timeout
    try:
        # Metadata first: the topic must exist and we need its partitions.
        partitions = None
        while partitions is None:
            md = consumer.list_topics(args.topic, timeout=max(0.1, deadline - time.monotonic()))
            t = md.topics.get(args.topic)
            if t is not None and t.error is None and t.partitions:
                partitions = sorted(t.partitions)
            elif time.monotonic() >= deadline:
                err = t.error if t is not None else "no metadata"
                print(f"consume {args.topic}: topic not available: {err}", file=sys.stderr)
                return 2
            else:
                time.sleep(0.1)
        start = -2 if args.from_offset is None else args.from_offset  # -2 = beginning
        consumer.assign([TopicPartition(args.topic, p, start) for p in partitions])
        got = 0
        at_eof = set()
        # partition -> [records, last offset], for the timeout message.
        progress = {p: [0, None] for p in partitions}
        while True:
            if args.expect is not None and got >= args.expect:
                return 0
            if args.expect is None and at_eof == set(partitions):
                return 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if args.expect is not None:
                    print(f"consume {args.topic}: timeout after {args.timeout}s with {got} of "
                          f"{args.expect} records", file=sys.stderr)
                    return 3
                print(f"consume {args.topic}: timeout after {args.timeout}s before reaching the end "
                      f"of partitions {sorted(set(partitions) - at_eof)}; records and last offset "
                      f"per partition: {progress}", file=sys.stderr)
                return 3
            msg = consumer.poll(min(remaining, 0.5))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition())
                    continue
                if err.fatal() or not err.retriable():
                    print(f"consume {args.topic}: {err}", file=sys.stderr)
                    return 2
                continue
            at_eof.discard(msg.partition())
            print(json.dumps(record_json(msg)))
            got += 1
            progress[msg.partition()][0] += 1
            progress[msg.partition()][1] = msg.offset()
    finally:
        consumer.close()


def cmd_offsets(args):
    conf = common_conf(args)
    conf.update({"group.id": f"ironbridge-e2e-{uuid.uuid4()}", "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        md = consumer.list_topics(args.topic, timeout=args.timeout)
        t = md.topics.get(args.topic)
        if t is None or t.error is not None or not t.partitions:
            print(f"offsets {args.topic}: topic not available: {t.error if t else 'no metadata'}",
                  file=sys.stderr)
            return 2
        for p in sorted(t.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(args.topic, p), timeout=args.timeout, cached=False)
            print(json.dumps({"partition": p, "low": low, "high": high}), flush=True)
        return 0
    finally:
        consumer.close()


def cmd_produce(args):
    conf = common_conf(args)
    conf.update({
        "acks": args.acks,
        "compression.type": args.compression,
        "linger.ms": args.linger_ms,
        "enable.idempotence": False,
        "message.timeout.ms": int(args.timeout * 1000),
    })
    headers = []
    for h in args.header:
        name, sep, value = h.partition("=")
        if not sep:
            print(f"produce: --header must be NAME=VALUE, got {h!r}", file=sys.stderr)
            return 2
        headers.append((name, value.encode("utf-8")))
    producer = Producer(conf)
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(str(err))

    extra = {}
    if args.partition is not None:
        extra["partition"] = args.partition
    if args.key is not None:
        extra["key"] = args.key.encode("utf-8")
    if headers:
        extra["headers"] = headers
    start = time.monotonic()
    for i in range(args.count):
        if args.value is not None:
            value = args.value.encode("utf-8")
        else:
            value = f"{i:010d}".encode("ascii")
        if args.value is None and len(value) < args.size:
            value += b"x" * (args.size - len(value))
        while True:
            try:
                producer.produce(args.topic, value=value, on_delivery=on_delivery, **extra)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(args.timeout)
    elapsed = time.monotonic() - start
    if left:
        failures.append(f"{left} records still in flight after {args.timeout}s")
    total = args.count * max(args.size, 10)
    print(json.dumps({
        "count": args.count,
        "bytes": total,
        "elapsed_s": round(elapsed, 6),
        "records_per_s": round(args.count / elapsed, 1) if elapsed > 0 else None,
        "mb_per_s": round(total / elapsed / 1e6, 3) if elapsed > 0 else None,
        "failed": len(failures),
    }), flush=True)
    if failures:
        print(f"produce {args.topic}: {len(failures)} failures, first: {failures[0]}", file=sys.stderr)
        return 4
    return 0


def cmd_mock_cluster(args):
    p = Producer({"test.mock.num.brokers": args.brokers, "log_level": 3})
    md = p.list_topics(timeout=10)
    brokers = sorted(md.brokers.values(), key=lambda b: b.id)
    print(json.dumps({"bootstrap": ",".join(f"{b.host}:{b.port}" for b in brokers)}), flush=True)
    # The cluster lives as long as this producer: until the parent closes our stdin.
    sys.stdin.read()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def base(name):
        s = sub.add_parser(name)
        s.add_argument("--bootstrap", required=True)
        s.add_argument("--topic", required=True)
        s.add_argument("--timeout", type=float, default=30.0)
        return s

    c = base("create-topic")
    c.add_argument("--partitions", type=int, default=1)
    c.set_defaults(func=cmd_create_topic)

    c = base("consume")
    c.add_argument("--expect", type=int)
    c.add_argument("--from-offset", type=int)
    c.add_argument("--fetch-max-bytes", type=int)
    c.set_defaults(func=cmd_consume)

    c = base("offsets")
    c.set_defaults(func=cmd_offsets)

    c = base("produce")
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    c.add_argument("--acks", default="all")
    c.add_argument("--key")
    c.add_argument("--header", action="append", default=[])
    c.add_argument("--partition", type=int)
    c.add_argument("--linger-ms", type=int, default=5)
    c.add_argument("--value", help="every record's value, as given (UTF-8) instead of the index")
    c.set_defaults(func=cmd_produce)

    c = sub.add_parser("mock-cluster")
    c.add_argument("--brokers", type=int, default=3)
    c.set_defaults(func=cmd_mock_cluster)

    c = sub.add_parser("partition")
    c.add_argument("--partitions", type=int, required=True)
    c.add_argument("keys", nargs="*")
    c.set_defaults(func=cmd_partition)

    args = p.parse_args()
    try:
        return args.func(args)
    except KafkaException as e:
        print(f"{args.cmd}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
