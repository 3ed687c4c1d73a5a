#!/usr/bin/env python3
"""Writes the seed corpus of the `mqtt_connection` fuzz target: realistic client conversations
in the target's input format (see fuzz_targets/mqtt_connection.rs, which reads it).

    python3 gateway/broker/fuzz/seeds/mqtt_connection.py [corpus dir]

Input format. Every read past the end gives 0; "pick(POOL)" is one byte, taken mod the pool's
length; "string(POOL)" is one byte: below 0xF0 a pick, else a blob (length byte, then that many
bytes, as lossy UTF-8); "id" is one byte: below 0xF0 a pick(IDS), else two more bytes (u16 BE);
"payload" is one byte: from 0xF0 a blob, 0xE0-0xEF 1025 bytes, 0xD0-0xDF 1024 bytes, else a
pick(PAYLOADS).

    connection: flags (bit 0 MQTT 5, bit 1 auto-acknowledge, bit 2 half close at the end,
                bit 3 raw CONNECT: a blob instead of the fields below, bit 4 start once the
                connection before has written its steps, not once it has ended)
                client_id: string(CLIENT_IDS)
                cflags (bit 0 clean start, bits 1-2 credentials 0 none / 1 fuzz:fuzz /
                        2 fuzz:wrong / 3 password only, bit 3 will, bit 4 no problem
                        information, bit 5 request response information, bit 6 authentication
                        method, bit 7 a user property)
                keep_alive: pick(KEEP_ALIVES)
                MQTT 5: pick(EXPIRIES) pick(RECEIVE_MAXIMUMS) pick(MAX_PACKETS)
                        pick([0, 2]) (topic alias maximum) [user property: string(TOPICS)]
                will: string(TOPICS) payload wflags (bits 0-1 QoS, bit 2 retain, bit 3 payload
                      format 1, MQTT 5: bit 4 message expiry, bit 5 response topic)
                      MQTT 5: pick(WILL_DELAYS) [pick(MESSAGE_EXPIRIES)] [string(TOPICS)]
                then steps until NEXT or the end (at most 3 connections, 64 steps each)
    step: kind byte mod 16, then
       0, 15 PUBLISH  pflags (bits 0-1 QoS, bit 2 retain, bit 3 dup, MQTT 5: bits 4-6 topic
                      alias + 1 (0 none), bit 7 empty topic with the alias)
                      string(TOPICS) id payload
                      MQTT 5: props (bit 0 payload format 1, bit 1 message expiry
                      [pick(MESSAGE_EXPIRIES)], bit 2 response topic [string(TOPICS)], bit 3
                      correlation data, bit 4 user property [string(TOPICS)], bit 5 subscription
                      identifier, bit 6 content type)
       1-4   PUBACK, PUBREC, PUBREL, PUBCOMP: id pick(ACK_REASONS)
       5     SUBSCRIBE  id count (1 + n mod 3) then per filter: string(FILTERS) options (QoS mod 3,
                        MQTT 5: bit 2 no local, bit 3 retain as published, bits 4-5 retain
                        handling mod 3); MQTT 5: pick(SUBSCRIPTION_IDS)
       6     UNSUBSCRIBE  id count (1 + n mod 3) then string(FILTERS) each
       7     PINGREQ
       8     DISCONNECT  pick(DISCONNECT_REASONS) dflags (bit 0 session expiry [pick(EXPIRIES)],
                         bit 1 reason string, bit 2 user property [string(TOPICS)])
       9     pause pick(PAUSES_MS)
       10    raw bytes: blob
       11    cut: a byte n, a kind byte (not 9-14), that step's fields: its bytes cut to n mod len
       12    repeat the last bytes sent 1 + (n mod 16) times: n
       13    odd packet: n mod 7: AUTH, CONNACK, SUBACK, UNSUBACK, PINGRESP, a second CONNECT
             (CONNECT fields as above, from client_id on), PUBACK with properties [id]
       14    NEXT connection
"""

import hashlib
import os
import sys

# The pools of fuzz_targets/mqtt_connection.rs, in the same order.
CLIENT_IDS = ["c1", "c2", "", "fuzz", "c1/with/levels", "ü-ñ"]
TOPICS = ["sensors/1/temp", "sensors/2/temp", "plant/a", "a/b/c", "a", "/", "a//b", "secret/x",
          "$fuzz/x", "$SYS/uptime", "spBv1.0/g/NCMD/n", "spBv1.0/g/NDATA/n", "spBv1.0/STATE/h", "",
          "a/+", "a/#", "#", "+", "a\0b", "$share/g/x", "é/ü", "x" * 65]
FILTERS = ["#", "+", "sensors/#", "sensors/+/temp", "plant/+", "a/b/c", "secret/#", "$fuzz/#",
           "$SYS/#", "+/#", "$share/g/sensors/#", "$share/g/#", "$share/fuzz/#", "$share//x",
           "$share/g", "$share/g+/x", "$share", "a/#/b", "a+", "", "a\0", "sensors/1/temp", "/#",
           "x" * 65]
IDS = [1, 2, 3, 4, 5, 6, 7, 8, 100, 0x7fff, 0xffff, 0]
PAYLOADS = [b"", b"21.5", b"\xff\xfe not UTF-8", b'{"v":1}']
KEEP_ALIVES = [0, 1, 2, 5, 60, 65535]
EXPIRIES = [0, 1, 5, 10, 100, 0xFFFFFFFF]
RECEIVE_MAXIMUMS = [None, 1, 2, 100]
MAX_PACKETS = [None, 16, 32, 64, 128, 4096]
WILL_DELAYS = [0, 1, 5, 100]
MESSAGE_EXPIRIES = [0, 1, 10]
ACK_REASONS = [0x00, 0x10, 0x80, 0x87, 0x92]
DISCONNECT_REASONS = [0x00, 0x04, 0x80, 0x81, 0x8E]
PAUSES_MS = [1, 10, 100, 1000, 3000, 8000, 20000]
SUBSCRIPTION_IDS = [None, 1, 7, 268435455]

(PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, PAUSE,
 RAW, CUT, REPEAT, ODD, NEXT) = range(15)


def pick(pool, value):
    return bytes([pool.index(value)])


def string(pool, value):
    if value in pool:
        return pick(pool, value)
    raw = value.encode()
    return bytes([0xF0, len(raw)]) + raw


def pid(i):
    return pick(IDS, i) if i in IDS else bytes([0xF0]) + i.to_bytes(2, "big")


def payload(p):
    if p in PAYLOADS:
        return pick(PAYLOADS, p)
    return bytes([0xF0, len(p)]) + p


def connection(v5=False, auto_ack=True, half_close=False, client_id="c1", clean=True,
               creds=0, will=None, keep_alive=60, expiry=0, receive_max=None, max_packet=None,
               alias_max=0, problem_info=True, overlap=False):
    """`will`: (topic, payload, qos, retain, delay)."""
    b = bytes([v5 | auto_ack << 1 | half_close << 2 | overlap << 4])
    return b + connect_fields(v5, client_id, clean, creds, will, keep_alive, expiry,
                              receive_max, max_packet, alias_max, problem_info)


def connect_fields(v5, client_id="c1", clean=True, creds=0, will=None, keep_alive=60, expiry=0,
                   receive_max=None, max_packet=None, alias_max=0, problem_info=True):
    cflags = clean | creds << 1 | (will is not None) << 3 | (not problem_info) << 4
    b = string(CLIENT_IDS, client_id) + bytes([cflags]) + pick(KEEP_ALIVES, keep_alive)
    if v5:
        b += (pick(EXPIRIES, expiry) + pick(RECEIVE_MAXIMUMS, receive_max)
              + pick(MAX_PACKETS, max_packet) + pick([0, 2], alias_max))
    if will is not None:
        topic, pl, qos, retain, delay = will
        b += string(TOPICS, topic) + payload(pl) + bytes([qos | retain << 2])
        if v5:
            b += pick(WILL_DELAYS, delay)
    return b


def publish(topic, qos=0, i=1, pl=b"21.5", retain=False, dup=False, alias=None, empty=False,
            v5=False, props=0, extra=b""):
    """`alias`: the topic alias value (0-6); `props`/`extra`: MQTT 5 property flags and their
    fields, in order."""
    f = qos | retain << 2 | dup << 3
    if alias is not None:
        f |= (alias + 1) << 4 | empty << 7
    b = bytes([PUBLISH, f]) + string(TOPICS, topic) + pid(i) + payload(pl)
    if v5:
        b += bytes([props]) + extra
    return b


def resp(kind, i, reason=0):
    return bytes([kind]) + pid(i) + pick(ACK_REASONS, reason)


def subscribe(i, filters, v5=False, sub_id=None):
    """`filters`: (filter, qos, no_local, retain_as_published, retain_handling)."""
    b = bytes([SUBSCRIBE]) + pid(i) + bytes([len(filters) - 1])
    for f, qos, nl, rap, rh in filters:
        b += string(FILTERS, f) + bytes([qos | nl << 2 | rap << 3 | rh << 4])
    if v5:
        b += pick(SUBSCRIPTION_IDS, sub_id)
    return b


def unsubscribe(i, filters):
    b = bytes([UNSUBSCRIBE]) + pid(i) + bytes([len(filters) - 1])
    for f in filters:
        b += string(FILTERS, f)
    return b


def disconnect(reason=0, expiry=None, reason_string=False, user_property=None):
    f = (expiry is not None) | reason_string << 1 | (user_property is not None) << 2
    b = bytes([DISCONNECT]) + pick(DISCONNECT_REASONS, reason) + bytes([f])
    if expiry is not None:
        b += pick(EXPIRIES, expiry)
    if user_property is not None:
        b += string(TOPICS, user_property)
    return b


def pause(ms):
    return bytes([PAUSE]) + pick(PAUSES_MS, ms)


def raw(data):
    return bytes([RAW, len(data)]) + data


PING = bytes([PINGREQ])
NEXT_CONNECTION = bytes([NEXT])


def seeds():
    s = {}
    # 3.1.1: subscribe, publish at each QoS (delivered back), QoS 2 completed, ping, unsubscribe.
    s["v311-pubsub"] = (
        connection() + subscribe(1, [("sensors/#", 2, 0, 0, 0)]) + pause(10)
        + publish("sensors/1/temp", 0) + publish("sensors/1/temp", 1, 2)
        + publish("sensors/2/temp", 2, 3) + pause(10) + resp(PUBREL, 3) + PING
        + unsubscribe(4, ["sensors/#"]) + disconnect())
    # MQTT 5 the same, with properties and a shared subscription.
    s["v5-pubsub-shared"] = (
        connection(v5=True) + subscribe(1, [("$share/g/sensors/#", 1, 0, 0, 0),
                                            ("plant/+", 2, 0, 1, 1)], v5=True, sub_id=7)
        + pause(10) + publish("sensors/1/temp", 1, 1, v5=True, props=0b1000011, extra=pick(MESSAGE_EXPIRIES, 10))
        + publish("plant/a", 2, 2, retain=True, v5=True, props=0b1100, extra=string(TOPICS, "a/b/c"))
        + pause(10) + resp(PUBREL, 2) + unsubscribe(3, ["$share/g/sensors/#", "plant/+"])
        + disconnect())
    # Topic aliases: set, use, unknown, out of range.
    s["v5-aliases"] = (
        connection(v5=True) + subscribe(1, [("#", 1, 1, 0, 0)], v5=True) + pause(10)
        + publish("sensors/1/temp", 1, 1, alias=1, v5=True)
        + publish("sensors/1/temp", 1, 2, alias=1, empty=True, v5=True)
        + publish("plant/a", 0, alias=4, v5=True) + publish("plant/a", 0, alias=4, empty=True, v5=True)
        + publish("a", 0, alias=2, empty=True, v5=True) + pause(10)
        + publish("a", 0, alias=5, v5=True))
    # QoS 2 exchange with a resend before PUBREL, then acknowledgements for unknown ids.
    s["v5-qos2-unknown-ids"] = (
        connection(v5=True, auto_ack=False) + publish("plant/a", 2, 5, v5=True)
        + publish("plant/a", 2, 5, dup=True, v5=True) + pause(10) + resp(PUBREL, 5)
        + resp(PUBREL, 6) + resp(PUBREC, 7) + resp(PUBACK, 8) + resp(PUBCOMP, 100, 0x92)
        + resp(PUBREC, 1, 0x80) + PING + disconnect(0, reason_string=True, user_property="a"))
    s["v311-qos2-unknown-ids"] = (
        connection(auto_ack=False) + publish("plant/a", 2, 5) + publish("plant/a", 2, 5, dup=True)
        + pause(10) + resp(PUBREL, 5) + resp(PUBREL, 6) + resp(PUBREC, 7) + resp(PUBACK, 8)
        + resp(PUBCOMP, 100) + disconnect())
    # A kept session: deliveries left unacknowledged, resumed (resent with DUP), acknowledged.
    s["v5-session-resume"] = (
        connection(v5=True, auto_ack=False, client_id="c2", expiry=10)
        + subscribe(1, [("sensors/#", 2, 0, 0, 0)], v5=True) + pause(10)
        + publish("sensors/1/temp", 1, 1, v5=True) + publish("sensors/2/temp", 2, 2, v5=True)
        + pause(10) + resp(PUBREL, 2) + disconnect(0, expiry=5) + NEXT_CONNECTION
        + connection(v5=True, client_id="c2", clean=False, expiry=10) + pause(100)
        + publish("sensors/1/temp", 1, 3, v5=True) + pause(10) + disconnect(0, expiry=0))
    s["v311-session-resume"] = (
        connection(auto_ack=False, client_id="c2", clean=False)
        + subscribe(1, [("sensors/+/temp", 1, 0, 0, 0)]) + pause(10)
        + publish("sensors/1/temp", 1, 1) + pause(10) + disconnect() + NEXT_CONNECTION
        + connection(client_id="c2", clean=False) + pause(100) + disconnect() + NEXT_CONNECTION
        + connection(client_id="c2", clean=True) + disconnect())
    # Wills: lost connection (no DISCONNECT), DISCONNECT with will, delayed will.
    s["v311-will-on-loss"] = (
        connection(half_close=True, will=("plant/a", b"gone", 1, True, 0))
        + subscribe(1, [("plant/#", 1, 0, 0, 0)]) + pause(10) + NEXT_CONNECTION
        + connection(client_id="c2") + subscribe(1, [("plant/+", 1, 0, 0, 0)]) + pause(10)
        + disconnect())
    s["v5-will-delay-and-disconnect-with-will"] = (
        connection(v5=True, half_close=True, expiry=10, will=("sensors/2/temp", b"x", 2, False, 5))
        + pause(10) + disconnect(4) + NEXT_CONNECTION
        + connection(v5=True, client_id="c2", will=("a", b"", 0, True, 1))
        + subscribe(1, [("#", 0, 0, 0, 2)], v5=True) + pause(8000))
    # Protocol errors at DISCONNECT and in PUBLISH.
    s["v5-disconnect-expiry-after-zero"] = (
        connection(v5=True) + disconnect(0, expiry=100, reason_string=True))
    s["v5-publish-errors"] = (
        connection(v5=True) + publish("sensors/1/temp", 0, v5=True, props=0b100000)
        + NEXT_CONNECTION + connection(v5=True)
        + publish("plant/a", 0, pl=b"\xff\xfe not UTF-8", v5=True, props=1)
        + publish("plant/a", 1, 3, pl=b"\xff\xfe not UTF-8", v5=True, props=1)
        + NEXT_CONNECTION + connection(v5=True) + publish("a", 1, 1, pl=b"p" * 10, v5=True)
        + bytes([PUBLISH, 1]) + string(TOPICS, "a") + pid(2) + bytes([0xE0]) + bytes([0]))
    # Topics the rules or the syntax refuse.
    s["v311-invalid-topics"] = (
        connection() + subscribe(1, [("#", 1, 0, 0, 0), ("$SYS/#", 0, 0, 0, 0), ("secret/#", 0, 0, 0, 0)])
        + subscribe(2, [("a/#/b", 0, 0, 0, 0), ("$share//x", 0, 0, 0, 0), ("a+", 1, 0, 0, 0)])
        + pause(10) + publish("secret/x", 1, 1) + NEXT_CONNECTION + connection()
        + publish("a/+", 0) + NEXT_CONNECTION + connection() + publish("$SYS/uptime", 1, 4))
    s["v5-invalid-topics"] = (
        connection(v5=True) + subscribe(1, [("$share/g", 0, 0, 0, 0), ("$share/g/#", 1, 0, 0, 0)], v5=True)
        + subscribe(2, [("$fuzz/#", 1, 0, 0, 0), ("secret/#", 0, 0, 0, 0)], v5=True)
        + pause(10) + publish("secret/x", 1, 1, v5=True) + publish("spBv1.0/g/NCMD/n", 2, 2, v5=True)
        + publish("$fuzz/x", 1, 3, v5=True) + pause(10) + publish("a\0b", 0, v5=True)
        + NEXT_CONNECTION + connection(v5=True, creds=1) + subscribe(1, [("#", 0, 0, 0, 0)], v5=True)
        + subscribe(2, [("$share/g/#", 1, 1, 0, 0)], v5=True))
    # Receive maximum: more unacknowledged QoS 1 publishes than 4.
    rm = publish("plant/a", 1, 1, v5=True)
    s["v5-receive-maximum"] = connection(v5=True) + rm + bytes([REPEAT, 7])
    s["v311-unacked-burst"] = connection() + publish("plant/a", 1, 1) + bytes([REPEAT, 9]) + PING
    # The client's own limits: receive maximum 1, maximum packet size 64.
    s["v5-client-limits"] = (
        connection(v5=True, auto_ack=False, receive_max=1, max_packet=64)
        + subscribe(1, [("sensors/#", 1, 0, 0, 0)], v5=True) + pause(10)
        + publish("sensors/1/temp", 1, 1, v5=True) + publish("sensors/2/temp", 1, 2, v5=True)
        + publish("sensors/1/temp", 0, pl=b"p" * 100, v5=True) + pause(10) + resp(PUBACK, 1)
        + pause(10) + disconnect())
    # Retained messages, retain handling, and a clean-up by empty retained payload.
    s["v5-retained"] = (
        connection(v5=True) + publish("plant/a", 1, 1, pl=b"21.5", retain=True, v5=True)
        + pause(10) + subscribe(2, [("plant/#", 1, 0, 1, 0)], v5=True) + pause(10)
        + subscribe(3, [("plant/#", 1, 0, 1, 1)], v5=True) + pause(10)
        + publish("plant/a", 0, pl=b"", retain=True, v5=True) + disconnect())
    # Keep-alive: silence past 1.5 x keep-alive.
    s["v311-keep-alive"] = connection(keep_alive=1) + subscribe(1, [("a", 0, 0, 0, 0)]) + pause(3000)
    s["v5-keep-alive-zero"] = connection(v5=True, keep_alive=0, half_close=False) + pause(20000) + PING
    # Logins: the account, a wrong password, a password alone, an authentication method.
    s["logins"] = (
        connection(v5=True, creds=1) + PING + disconnect() + NEXT_CONNECTION
        + connection(v5=True, creds=2) + NEXT_CONNECTION + connection(creds=3))
    s["v5-auth-method"] = bytes([1]) + string(CLIENT_IDS, "c1") + bytes([0x41]) + pick(KEEP_ALIVES, 60) + bytes(4)
    # Garbage: a raw CONNECT, garbage after CONNECT, a cut packet, server-only packets.
    s["raw-connect"] = bytes([8, 14]) + b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    s["garbage-after-connect"] = connection() + raw(b"\x30\xff\xff\xff\xff\x01") + PING
    s["cut-subscribe"] = (
        connection(v5=True) + bytes([CUT, 9]) + subscribe(1, [("sensors/#", 1, 0, 0, 0)], v5=True)
        + PING)
    s["server-packets"] = connection(v5=True) + bytes([ODD, 0]) + NEXT_CONNECTION + connection() + bytes([ODD, 2])
    s["second-connect"] = connection() + bytes([ODD, 5]) + connect_fields(False, "c2")
    s["empty-client-id"] = (
        connection(v5=True, client_id="") + PING + disconnect() + NEXT_CONNECTION
        + connection(client_id="", clean=False) + NEXT_CONNECTION + connection(client_id=""))
    s["same-id-resume-then-clean"] = (
        connection(v5=True, client_id="fuzz", expiry=100, auto_ack=False)
        + subscribe(1, [("plant/+", 2, 0, 0, 0)], v5=True) + pause(10)
        + publish("plant/a", 2, 1, v5=True) + pause(10) + resp(PUBREC, 1) + NEXT_CONNECTION
        + connection(v5=True, client_id="fuzz", clean=False, expiry=1) + pause(100)
        + resp(PUBCOMP, 1) + PING + NEXT_CONNECTION
        + connection(client_id="fuzz", clean=True) + disconnect())
    # Takeovers: the same client id connects while the first connection is still open.
    s["v5-takeover"] = (
        connection(v5=True, auto_ack=False, client_id="c2", expiry=10, will=("plant/a", b"w", 1, False, 1))
        + subscribe(1, [("sensors/#", 1, 0, 0, 0)], v5=True) + pause(10)
        + publish("sensors/1/temp", 1, 1, v5=True) + NEXT_CONNECTION
        + connection(v5=True, client_id="c2", clean=False, expiry=10, overlap=True) + pause(100)
        + publish("sensors/2/temp", 2, 2, v5=True) + pause(10) + resp(PUBREL, 2) + NEXT_CONNECTION
        + connection(client_id="c2", clean=True, overlap=True) + PING + disconnect())
    s["v311-takeover-and-other-client"] = (
        connection(client_id="c1", clean=False) + subscribe(1, [("plant/+", 2, 0, 0, 0)])
        + NEXT_CONNECTION + connection(client_id="c2", overlap=True) + pause(10)
        + publish("plant/a", 2, 7) + pause(10) + resp(PUBREL, 7) + NEXT_CONNECTION
        + connection(client_id="c1", clean=False, overlap=True) + PING + pause(10) + disconnect())
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "mqtt_connection")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"{len(seeds())} seeds in {out}")


if __name__ == "__main__":
    main()
