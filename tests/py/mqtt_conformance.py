#!/usr/bin/env python3
"""MQTT 3.1.1 / 5.0 broker conformance scenarios, observed by independent clients (paho-mqtt 2.x, and raw
sockets where paho cannot express a packet or hides a reason code).

    /var/cache/ironbridge/venv/bin/python tests/py/mqtt_conformance.py --port P [--host H]
        [--username U --password W] --scenario NAME
    ... --list

Runs ONE scenario against the broker and prints ONE JSON object on stdout:

    {"scenario": NAME, "observed": {...}}

`observed` holds what the clients saw: messages (topic relative to the scenario's private prefix, payload,
QoS, retain flag, MQTT 5 properties), reason codes of CONNACK / SUBACK / UNSUBACK / PUBACK / DISCONNECT,
Session Present, and whether the broker closed the connection. Everything in it is deterministic (no times,
no client ids, no broker-chosen numbers: a remaining Message Expiry is reported against a bound, e.g.
"<= 58"); keys starting with "_" are informational (a broker-chosen limit) and not meant to be compared.
On an internal error it prints {"scenario": NAME, "error": "..."} and exits 1.

Each scenario uses its own random client ids and topic prefix, so scenarios can run in parallel against
one broker, and every wait has a timeout: a scenario finishes in under 10 s whatever the broker does.
Negative checks ("X is not delivered") publish a marker after X on a topic the same subscriber gets,
wait for the marker and then GRACE seconds more; where a spec timer is the behaviour under test (session
expiry, will delay, message expiry), sleeping past the timer is the test.

The comment on each scenario names the normative statement(s) it checks (MQTT 5.0 OASIS Standard,
7 March 2019; MQTT 3.1.1 OASIS Standard, 29 October 2014 for the v311_* ones).
"""

import argparse
import json
import secrets
import socket
import struct
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 3.0  # longest wait for something that should happen (loopback: it takes milliseconds)
GRACE = 0.3  # after a marker arrived, how long to keep listening for what should not arrive
CLOSE_WAIT = 1.5  # raw client: how long to wait for the broker to close after an offending packet
BUDGET = 9.0  # a scenario's whole time budget (waits are cut to it)

# ---------------------------------------------------------------------------------------------------------
# Context: unique names, time budget, clean-up
# ---------------------------------------------------------------------------------------------------------


class Ctx:
    def __init__(self, args, scenario):
        self.host = args.host
        self.port = args.port
        self.username = args.username
        self.password = args.password
        self.scenario = scenario
        self.token = secrets.token_hex(5)
        self.prefix = f"cf/{self.token}/{scenario}"
        self.dollar = f"$cf{self.token}"
        self.deadline = time.monotonic() + BUDGET
        self.clients = []

    def t(self, suffix):
        """A topic under the scenario's private prefix."""
        return f"{self.prefix}/{suffix}"

    def rel(self, topic):
        """A topic as reported: the private prefix replaced by nothing, `$cf<token>` by `$X`."""
        if topic.startswith(self.prefix + "/"):
            return topic[len(self.prefix) + 1:]
        if topic.startswith(self.dollar):
            topic = "$X" + topic[len(self.dollar):]
        return topic.replace(self.token, "<token>")

    def cid(self, role):
        """A client id: at most 23 characters (MQTT 3.1.1 [MQTT-3.1.3-5]), no `+ # $ /`."""
        return f"{role[:12]}-{self.token}"

    def budget(self, t):
        return max(0.05, min(t, self.deadline - time.monotonic()))

    def close_all(self):
        for c in reversed(self.clients):
            try:
                c.abandon()
            except Exception:  # noqa: BLE001 - best effort clean-up
                pass


def payload_repr(b):
    b = bytes(b)
    if len(b) > 64:
        return f"<{len(b)} bytes>"
    try:
        s = b.decode("utf-8")
        if all(ch.isprintable() for ch in s):
            return s
    except UnicodeDecodeError:
        pass
    return "hex:" + b.hex()


def props_dict(props):
    """A paho Properties object as {CompressedName: value}."""
    d = {}
    if props is None:
        return d
    for name in props.names:
        c = name.replace(" ", "")
        if hasattr(props, c):
            d[c] = getattr(props, c)
    return d


class Msg:
    """One received PUBLISH."""

    def __init__(self, ctx, topic, payload, qos, retain, props, mid=None):
        self.topic = ctx.rel(topic)
        self.payload = bytes(payload)
        self.qos = qos
        self.retain = 1 if retain else 0
        self.mid = mid
        self.expiry = None
        self.props = {}
        for k, v in props_dict(props).items():
            if k == "MessageExpiryInterval":
                self.expiry = v
            elif k == "PayloadFormatIndicator":
                self.props["payload_format_indicator"] = v
            elif k == "ContentType":
                self.props["content_type"] = v
            elif k == "ResponseTopic":
                self.props["response_topic"] = ctx.rel(v)
            elif k == "CorrelationData":
                self.props["correlation_data"] = bytes(v).hex()
            elif k == "SubscriptionIdentifier":
                self.props["subscription_identifiers"] = sorted(v)
            elif k == "UserProperty":
                self.props["user_properties"] = [list(p) for p in v]
            elif k == "TopicAlias":
                self.props["topic_alias"] = v
            else:
                self.props[k] = v if isinstance(v, (int, str)) else repr(v)

    @property
    def text(self):
        return payload_repr(self.payload)

    def obs(self, expiry_max=None):
        d = {"topic": self.topic, "payload": self.text, "qos": self.qos, "retain": self.retain}
        d.update(self.props)
        if self.expiry is not None:
            if expiry_max is None:
                d["message_expiry"] = "present"
            elif self.expiry <= expiry_max:
                d["message_expiry"] = f"<= {expiry_max}"
            else:
                d["message_expiry"] = f"> {expiry_max}"
        return d


def obs_list(msgs, sort=False, **kw):
    out = [m.obs(**kw) for m in msgs]
    if sort:
        out.sort(key=lambda d: json.dumps(d, sort_keys=True))
    return out


def ack_code(rc):
    """A PUBACK/PUBREC reason code as compared: 0x10 (No matching subscribers) is reported as 0x00; a Server
    MAY use either when nobody subscribed (MQTT 5.0 section 3.4.2.1)."""
    return 0 if rc == 0x10 else rc


def must_level(events):
    """outcome() events without DISCONNECT packets: where a violation must close the connection (section
    4.13.1) but the DISCONNECT before it (and its Reason Code) is only a SHOULD, only what is required is
    compared; the exact events are kept under an informational "_" key."""
    return [e for e in events if not e.startswith("DISCONNECT")]


def pprops(ptype, **kw):
    p = Properties(ptype)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


# ---------------------------------------------------------------------------------------------------------
# paho client with its own network thread (no automatic reconnect) and every event recorded
# ---------------------------------------------------------------------------------------------------------


class Paho:
    def __init__(self, ctx, role, v5=True, manual_ack=False, clean_session=True, client_id=None):
        self.ctx = ctx
        self.v5 = v5
        self.cid = ctx.cid(role) if client_id is None else client_id
        kw = {}
        if not v5:
            kw["clean_session"] = clean_session
        self.c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.cid,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=manual_ack,
            reconnect_on_failure=False,
            **kw,
        )
        if ctx.username is not None:
            self.c.username_pw_set(ctx.username, ctx.password)
        self.cv = threading.Condition()
        self.connack = None
        self.subacks = {}
        self.unsubacks = {}
        self.pubacks = {}
        self.messages = []
        self.disconnected = None
        self.started = False
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        ctx.clients.append(self)

    # callbacks (network thread)
    def _on_connect(self, _c, _u, flags, rc, props):
        with self.cv:
            self.connack = {"reason_code": rc.value, "session_present": 1 if flags.session_present else 0,
                            "props": props_dict(props)}
            self.cv.notify_all()

    def _on_subscribe(self, _c, _u, mid, rcs, _props):
        with self.cv:
            self.subacks[mid] = [rc.value for rc in rcs]
            self.cv.notify_all()

    def _on_unsubscribe(self, _c, _u, mid, rcs, _props):
        with self.cv:
            self.unsubacks[mid] = [rc.value for rc in rcs]
            self.cv.notify_all()

    def _on_publish(self, _c, _u, mid, rc, _props):
        with self.cv:
            self.pubacks[mid] = rc.value
            self.cv.notify_all()

    def _on_message(self, _c, _u, m):
        msg = Msg(self.ctx, m.topic, m.payload, m.qos, m.retain, getattr(m, "properties", None), m.mid)
        with self.cv:
            self.messages.append(msg)
            self.cv.notify_all()

    def _on_disconnect(self, _c, _u, flags, rc, _props):
        with self.cv:
            self.disconnected = {"disconnect_packet": bool(flags.is_disconnect_packet_from_server),
                                 "reason_code": rc.value if flags.is_disconnect_packet_from_server else None}
            self.cv.notify_all()

    def _wait(self, pred, timeout=WAIT):
        end = time.monotonic() + self.ctx.budget(timeout)
        with self.cv:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
            return True

    # actions (main thread)
    def connect(self, clean_start=True, keepalive=30, props=None, will=None):
        """CONNECT and wait for CONNACK: {"reason_code", "session_present"} (plus "closed" when refused)."""
        if will is not None:
            self.c.will_set(will["topic"], will["payload"], will.get("qos", 1), will.get("retain", False),
                            will.get("props"))
        try:
            if self.v5:
                self.c.connect(self.ctx.host, self.ctx.port, keepalive, clean_start=clean_start,
                               properties=props)
            else:
                self.c.connect(self.ctx.host, self.ctx.port, keepalive)
        except OSError as e:
            return {"error": f"connect: {type(e).__name__}"}
        self.c.loop_start()
        self.started = True
        if not self._wait(lambda: self.connack is not None or self.disconnected is not None):
            return {"connack": None}
        if self.connack is None:
            return {"connack": None, "closed": True}
        return {"reason_code": self.connack["reason_code"], "session_present": self.connack["session_present"]}

    def subscribe(self, topic, qos=1, no_local=False, rap=False, rh=0, sub_id=None, raw_topic=False):
        """SUBSCRIBE one filter (under the prefix unless raw_topic) and wait for the SUBACK reason codes."""
        t = topic if raw_topic else self.ctx.t(topic)
        if self.v5:
            props = pprops(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
            opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap, retainHandling=rh)
            rc, mid = self.c.subscribe(t, options=opts, properties=props)
        else:
            rc, mid = self.c.subscribe(t, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        self._wait(lambda: mid in self.subacks)
        return self.subacks.get(mid)

    def unsubscribe(self, topics):
        rc, mid = self.c.unsubscribe([self.ctx.t(t) for t in topics])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        if not self._wait(lambda: mid in self.unsubacks):
            return None
        return self.unsubacks[mid]

    def publish(self, topic, payload, qos=1, retain=False, props=None, raw_topic=False):
        """PUBLISH and wait for its acknowledgement: the PUBACK/PUBREC reason code (QoS 0: 0 once written);
        None if none came."""
        t = topic if raw_topic else self.ctx.t(topic)
        info = self.c.publish(t, payload, qos=qos, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        if not self._wait(lambda: info.mid in self.pubacks):
            return None
        return ack_code(self.pubacks[info.mid])

    def wait_count(self, n, timeout=WAIT):
        self._wait(lambda: len(self.messages) >= n, timeout)
        return list(self.messages)

    def wait_payload(self, text, timeout=WAIT):
        return self._wait(lambda: any(m.text == text for m in self.messages), timeout)

    def wait_disconnect(self, timeout=WAIT):
        self._wait(lambda: self.disconnected is not None, timeout)
        return self.disconnected

    def ack(self, msgs):
        for m in msgs:
            self.c.ack(m.mid, m.qos)

    def disconnect(self, reason=None):
        """A normal DISCONNECT (MQTT 5: with `reason` if given), then the network thread ends."""
        if self.started:
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason) if reason is not None else None
            self.c.disconnect(reasoncode=rc)
            self._wait(lambda: self.disconnected is not None, 2.0)
            self.c.loop_stop()
            self.started = False

    def kill(self):
        """Drops the TCP connection without DISCONNECT (an abnormal disconnection for the broker)."""
        if self.started:
            self.c.loop_stop()
            self.started = False
        s = self.c.socket()
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def abandon(self):
        if self.started:
            try:
                self.c.disconnect()
            except Exception:  # noqa: BLE001
                pass
            self.c.loop_stop()
            self.started = False


# ---------------------------------------------------------------------------------------------------------
# raw MQTT over a socket, for what paho cannot send or does not show
# ---------------------------------------------------------------------------------------------------------

# property id -> wire type (MQTT 5.0 section 2.2.2.2)
PROP_TYPES = {1: "byte", 2: "u32", 3: "str", 8: "str", 9: "bin", 11: "vbi", 17: "u32", 21: "str", 22: "bin",
              23: "byte", 24: "u32", 25: "byte", 33: "u16", 34: "u16", 35: "u16", 38: "pair", 39: "u32"}
TOPIC_ALIAS = 35
PAYLOAD_FORMAT = 1
PTYPE = {1: PacketTypes.CONNECT, 2: PacketTypes.CONNACK, 3: PacketTypes.PUBLISH, 4: PacketTypes.PUBACK,
         5: PacketTypes.PUBREC, 6: PacketTypes.PUBREL, 7: PacketTypes.PUBCOMP, 9: PacketTypes.SUBACK,
         11: PacketTypes.UNSUBACK, 14: PacketTypes.DISCONNECT}
NAMES = {2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 9: "SUBACK",
         11: "UNSUBACK", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}


def vbi(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def enc_str(s):
    b = s if isinstance(s, (bytes, bytearray)) else s.encode("utf-8")
    return struct.pack("!H", len(b)) + bytes(b)


def enc_props(pairs):
    """[(id, value)] -> Properties (length-prefixed), encoded by hand so that invalid values (Topic Alias 0)
    can be sent."""
    body = bytearray()
    for pid, v in pairs:
        body += vbi(pid)
        t = PROP_TYPES[pid]
        if t == "byte":
            body.append(v)
        elif t == "u16":
            body += struct.pack("!H", v)
        elif t == "u32":
            body += struct.pack("!I", v)
        elif t == "vbi":
            body += vbi(v)
        elif t == "str" or t == "bin":
            body += enc_str(v)
        elif t == "pair":
            body += enc_str(v[0]) + enc_str(v[1])
    return vbi(len(body)) + bytes(body)


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + vbi(len(body)) + bytes(body)


PINGREQ = b"\xc0\x00"


class Pkt:
    def __init__(self, ptype, flags, body):
        self.type = ptype
        self.flags = flags
        self.body = bytes(body)


class Raw:
    def __init__(self, ctx, v5=True):
        self.ctx = ctx
        self.v5 = v5
        self.sock = socket.create_connection((ctx.host, ctx.port), timeout=WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        self.pending = []  # packets read while waiting for something else
        ctx.clients.append(self)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def _parse(self):
        if len(self.buf) < 2:
            return None
        mult, rl, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            rl += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise ValueError("malformed remaining length from the broker")
        if len(self.buf) < i + rl:
            return None
        p = Pkt(self.buf[0] >> 4, self.buf[0] & 0x0F, self.buf[i:i + rl])
        del self.buf[:i + rl]
        return p

    def read(self, timeout=WAIT):
        """The next packet, or None on timeout or when the broker closed (then self.closed)."""
        end = time.monotonic() + self.ctx.budget(timeout)
        while True:
            p = self._parse()
            if p is not None:
                return p
            if self.closed:
                return None
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError:
                self.closed = True
                return None
            if not data:
                self.closed = True
                return None
            self.buf += data

    def expect(self, ptype, timeout=WAIT):
        """Reads until a packet of `ptype`; others are kept in self.pending."""
        end = time.monotonic() + timeout
        while True:
            p = self.read(max(0.0, end - time.monotonic()))
            if p is None:
                return None
            if p.type == ptype:
                return p
            self.pending.append(p)

    def props(self, ptype, buf):
        """Decodes a Properties field: (dict, consumed bytes)."""
        p = Properties(PTYPE[ptype])
        p, n = p.unpack(bytes(buf))
        return props_dict(p), n

    def describe(self, p):
        """A packet as a short deterministic string, e.g. "DISCONNECT 0x90"."""
        name = NAMES.get(p.type, f"type{p.type}")
        b = p.body
        if p.type == 2:
            return f"CONNACK 0x{b[1]:02x} session_present={b[0] & 1}"
        if p.type in (4, 5, 7):
            rc = ack_code(b[2] if self.v5 and len(b) > 2 else 0)
            return f"{name} 0x{rc:02x}"
        if p.type == 9:
            rest = b[2:]
            if self.v5:
                _, n = self.props(9, rest)
                rest = rest[n:]
            return "SUBACK [" + ", ".join(f"0x{c:02x}" for c in rest) + "]"
        if p.type == 11:
            rest = b[2:]
            if not self.v5:
                return "UNSUBACK"
            _, n = self.props(11, rest)
            return "UNSUBACK [" + ", ".join(f"0x{c:02x}" for c in rest[n:]) + "]"
        if p.type == 14:
            return f"DISCONNECT 0x{(b[0] if b else 0):02x}"
        if p.type == 3:
            m = self.publish_msg(p)
            return f"PUBLISH {m.topic} {m.text}"
        return name

    def publish_msg(self, p):
        b = p.body
        (tl,) = struct.unpack("!H", b[:2])
        topic = b[2:2 + tl].decode("utf-8", "replace")
        i = 2 + tl
        qos = (p.flags >> 1) & 3
        mid = None
        if qos:
            (mid,) = struct.unpack("!H", b[i:i + 2])
            i += 2
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props, n = props.unpack(b[i:])
            i += n
        return Msg(self.ctx, topic, b[i:], qos, p.flags & 1, props, mid)

    def connect(self, client_id=None, clean=True, keepalive=30, props=(), will=None, username=None,
                password=None, credentials=True):
        """Sends CONNECT; returns the CONNACK (dict: reason_code, session_present, props) or None."""
        cid = self.ctx.cid("raw") if client_id is None else client_id
        if credentials:
            username = self.ctx.username if username is None else username
            password = self.ctx.password if password is None else password
        flags = 0x02 if clean else 0
        if will:
            flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        if username is not None:
            flags |= 0x80
        if password is not None:
            flags |= 0x40
        vh = enc_str("MQTT") + bytes([5 if self.v5 else 4, flags]) + struct.pack("!H", keepalive)
        if self.v5:
            vh += enc_props(list(props))
        pl = enc_str(cid)
        if will:
            if self.v5:
                pl += enc_props(will.get("props", []))
            pl += enc_str(will["topic"]) + enc_str(will["payload"])
        if username is not None:
            pl += enc_str(username)
        if password is not None:
            pl += enc_str(password)
        self.send(packet(1, 0, vh + pl))
        p = self.expect(2)
        if p is None:
            return None
        d = {"reason_code": p.body[1], "session_present": p.body[0] & 1, "props": {}}
        if self.v5 and len(p.body) > 2:
            d["props"], _ = self.props(2, p.body[2:])
        return d

    def publish_packet(self, topic, payload, qos=0, retain=False, dup=False, pid=1, props=()):
        t = topic if isinstance(topic, (bytes, bytearray)) else topic.encode("utf-8")
        body = enc_str(t)
        if qos:
            body += struct.pack("!H", pid)
        if self.v5:
            body += enc_props(list(props))
        body += payload if isinstance(payload, (bytes, bytearray)) else payload.encode("utf-8")
        flags = (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
        return packet(3, flags, body)

    def subscribe_packet(self, filters, pid=1):
        body = struct.pack("!H", pid)
        if self.v5:
            body += enc_props([])
        for f, opts in filters:
            body += enc_str(f) + bytes([opts])
        return packet(8, 2, body)

    def outcome(self, close_wait=CLOSE_WAIT):
        """What the broker did after an offending packet: the packets it sent, then "closed" if it closed the
        connection within close_wait, else "open" once a PINGREQ got its PINGRESP."""
        events = []
        end = time.monotonic() + close_wait
        while True:
            p = self.read(max(0.0, end - time.monotonic()))
            if p is None:
                break
            events.append(self.describe(p))
        if self.closed:
            return events + ["closed"]
        self.send(PINGREQ)
        end = time.monotonic() + WAIT
        while True:
            p = self.read(max(0.0, end - time.monotonic()))
            if p is None:
                return events + (["closed"] if self.closed else ["no PINGRESP"])
            if p.type == 13:
                return events + ["open"]
            events.append(self.describe(p))

    def abandon(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------------
# helpers shared by the scenarios
# ---------------------------------------------------------------------------------------------------------


def sess(seconds):
    return pprops(PacketTypes.CONNECT, SessionExpiryInterval=seconds)


def connected(ctx, role, topic=None, qos=1, v5=True, **kw):
    """A connected paho client, subscribed to `topic` (under the prefix) if given."""
    c = Paho(ctx, role, v5=v5)
    ack = c.connect(**kw)
    if ack.get("reason_code") != 0:
        raise RuntimeError(f"{role}: CONNECT refused: {ack}")
    if topic is not None:
        sa = c.subscribe(topic, qos=qos)
        if sa is None or sa[0] >= 0x80:
            raise RuntimeError(f"{role}: SUBSCRIBE {topic} failed: {sa}")
    return c


def settle(pub, topic, marker, subscribers, qos=1):
    """Publishes `marker` to `topic` and waits until every subscriber has it, then GRACE more: what should
    not arrive had its chance to arrive before (same topic: ordered [MQTT-4.6.0-5]) or meanwhile."""
    pub.publish(topic, marker, qos=qos)
    for s in subscribers:
        s.wait_payload(marker)
    time.sleep(GRACE)


def wait_until(ctx, pred, timeout=WAIT):
    """Polls `pred` (for conditions over several clients)."""
    end = time.monotonic() + ctx.budget(timeout)
    while not pred():
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
    return True


SCENARIOS = {}


def scenario(name):
    def deco(f):
        SCENARIOS[name] = f
        return f

    return deco


# ---------------------------------------------------------------------------------------------------------
# MQTT 5.0 scenarios
# ---------------------------------------------------------------------------------------------------------


@scenario("connect_session_present_and_expiry")
def s_session_present(ctx):
    # [MQTT-3.2.2-2] Clean Start 1 -> Session Present 0. [MQTT-3.2.2-3] Clean Start 0 and a stored session ->
    # Session Present 1. [MQTT-3.1.2-23] Session Expiry Interval > 0: the session (its subscriptions) outlives
    # the network connection. [MQTT-3.1.2-4] Clean Start 1 discards the existing session.
    o = {}
    a = Paho(ctx, "a")
    o["connack_first"] = a.connect(clean_start=True, props=sess(60))
    o["suback"] = a.subscribe("t", qos=1)
    a.disconnect()
    a2 = Paho(ctx, "a")
    o["connack_resume"] = a2.connect(clean_start=False, props=sess(60))
    pub = connected(ctx, "pub")
    pub.publish("t", "after-resume")
    o["received_after_resume"] = obs_list(a2.wait_count(1))
    a2.disconnect()
    a3 = Paho(ctx, "a")
    o["connack_clean_start"] = a3.connect(clean_start=True, props=sess(60))
    w = connected(ctx, "w", "t")
    settle(pub, "t", "after-clean-start", [w])
    o["received_after_clean_start"] = obs_list(a3.messages)
    a3.disconnect()
    return o


@scenario("session_expiry_ends_session")
def s_session_expiry(ctx):
    # [MQTT-3.1.2-23] the session is kept only for Session Expiry Interval seconds after the connection
    # closed; afterwards [MQTT-3.2.2-3] does not apply: Session Present 0 and no subscription.
    o = {}
    a = Paho(ctx, "a")
    o["connack_first"] = a.connect(clean_start=True, props=sess(1))
    o["suback"] = a.subscribe("t", qos=1)
    a.disconnect()
    time.sleep(2.5)  # the timer under test
    a2 = Paho(ctx, "a")
    o["connack_after_expiry"] = a2.connect(clean_start=False, props=sess(1))
    pub = connected(ctx, "pub")
    w = connected(ctx, "w", "t")
    settle(pub, "t", "after-expiry", [w])
    o["received_after_expiry"] = obs_list(a2.messages)
    a2.disconnect()
    return o


@scenario("offline_queueing_persistent_session")
def s_offline_queueing(ctx):
    # [MQTT-3.1.2-23] + section 4.1: QoS 1 messages matching the subscriptions of a disconnected session are
    # stored and delivered on resumption; [MQTT-4.6.0-5] (ordered topic) in order.
    o = {}
    a = Paho(ctx, "a")
    o["connack_first"] = a.connect(clean_start=True, props=sess(60))
    o["suback"] = a.subscribe("q", qos=1)
    a.disconnect()
    pub = connected(ctx, "pub")
    o["pubacks"] = [pub.publish("q", f"m{i}") for i in range(3)]
    a2 = Paho(ctx, "a")
    o["connack_resume"] = a2.connect(clean_start=False, props=sess(60))
    a2.wait_count(3)
    settle(pub, "q", "marker", [a2])
    o["received"] = obs_list(a2.messages)
    a2.disconnect()
    return o


def will_props(**kw):
    return pprops(PacketTypes.WILLMESSAGE, **kw)


@scenario("will_on_abnormal_disconnect")
def s_will_abnormal(ctx):
    # [MQTT-3.1.2-8] the Will Message MUST be published after the Network Connection is subsequently closed
    # (without DISCONNECT 0x00); its properties go with it ([MQTT-3.3.2-17] user properties, content type).
    o = {}
    w = connected(ctx, "w", "will")
    a = Paho(ctx, "a")
    o["connack"] = a.connect(will={"topic": ctx.t("will"), "payload": b"gone", "qos": 1,
                                   "props": will_props(ContentType="text/plain", UserProperty=[("k", "v")])})
    a.kill()
    o["received"] = obs_list(w.wait_count(1))
    return o


@scenario("will_not_sent_on_normal_disconnect")
def s_will_normal(ctx):
    # [MQTT-3.1.2-10] / [MQTT-3.14.4-3]: on DISCONNECT with Reason Code 0x00 the Server discards the Will
    # Message without publishing it.
    o = {}
    w = connected(ctx, "w", "will")
    a = Paho(ctx, "a")
    o["connack"] = a.connect(will={"topic": ctx.t("will"), "payload": b"must-not-arrive", "qos": 1})
    a.disconnect(reason=0)
    pub = connected(ctx, "pub")
    settle(pub, "will", "marker", [w])
    time.sleep(GRACE)  # the will would come from another connection's close: give it a little longer
    o["received"] = obs_list(w.messages)
    return o


@scenario("will_delay_interval")
def s_will_delay(ctx):
    # [MQTT-3.1.3-9] if a new Network Connection to the session is made before the Will Delay Interval has
    # passed, the Server MUST NOT send the Will Message. Section 3.1.3.2.2: otherwise it is sent when the
    # delay has passed (or the session ended), not before.
    o = {}
    w = connected(ctx, "w", "will")
    a = Paho(ctx, "a")
    o["connack"] = a.connect(props=sess(60), will={"topic": ctx.t("will"), "payload": b"cancelled", "qos": 1,
                                                   "props": will_props(WillDelayInterval=2)})
    t0 = time.monotonic()
    a.kill()
    time.sleep(0.5)
    a2 = Paho(ctx, "a")
    o["connack_reconnect"] = a2.connect(clean_start=False, props=sess(60))
    time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))  # past the 2 s delay: the timer under test
    pub = connected(ctx, "pub")
    settle(pub, "will", "marker", [w])
    o["received_after_reconnect"] = obs_list(w.messages)
    a2.disconnect()
    # Second part: not cancelled, so it arrives, and not before its 1 s delay.
    n = len(w.messages)
    b = Paho(ctx, "b")
    b.connect(props=sess(60), will={"topic": ctx.t("will"), "payload": b"delayed", "qos": 1,
                                    "props": will_props(WillDelayInterval=1)})
    t1 = time.monotonic()
    b.kill()
    got = w.wait_payload("delayed", 4.0)
    elapsed = time.monotonic() - t1
    o["delayed_will_received"] = obs_list(w.messages[n:])
    o["delayed_will_not_before_delay"] = bool(got and elapsed >= 0.9)
    return o


@scenario("disconnect_with_will_message")
def s_disconnect_with_will(ctx):
    # Section 3.14.2.1: DISCONNECT Reason Code 0x04 "Disconnect with Will Message": the Client wishes to
    # disconnect but requires that the Server also publishes its Will Message.
    o = {}
    w = connected(ctx, "w", "will")
    a = Paho(ctx, "a")
    o["connack"] = a.connect(will={"topic": ctx.t("will"), "payload": b"bye", "qos": 1})
    a.disconnect(reason=4)
    o["received"] = obs_list(w.wait_count(1))
    return o


@scenario("retained_basic")
def s_retained_basic(ctx):
    # [MQTT-3.3.1-5] a retained message is stored and replaces the previous one; [MQTT-3.3.1-9] Retain
    # Handling 0: sent on subscribe, with RETAIN 1 (section 3.3.1.3); [MQTT-3.3.1-12] Retain As Published 0:
    # live deliveries carry RETAIN 0.
    o = {}
    pub = connected(ctx, "pub")
    o["puback"] = pub.publish("r", "r1", retain=True)
    s = connected(ctx, "s", "r")
    s.wait_count(1)
    pub.publish("r", "r2", retain=True)
    s.wait_count(2)
    pub.publish("r", "live")
    s.wait_count(3)
    o["subscriber"] = obs_list(s.messages)
    s2 = connected(ctx, "s2", "r")
    s2.wait_count(1)
    settle(pub, "r", "marker", [s, s2])
    o["later_subscriber"] = obs_list(s2.messages)
    return o


@scenario("retained_clear_with_empty_payload")
def s_retained_clear(ctx):
    # [MQTT-3.3.1-6] a retained PUBLISH with zero-byte payload is delivered normally but removes the retained
    # message; [MQTT-3.3.1-7] it is not stored: later subscribers get no retained message.
    o = {}
    pub = connected(ctx, "pub")
    pub.publish("r", "x", retain=True)
    live = connected(ctx, "live", "r")
    live.wait_count(1)
    o["puback_empty"] = pub.publish("r", b"", retain=True)
    live.wait_count(2)
    later = connected(ctx, "later", "r")
    settle(pub, "r", "marker", [live, later])
    o["live_subscriber"] = obs_list(live.messages)
    o["later_subscriber"] = obs_list(later.messages)
    return o


@scenario("retain_handling_0_1_2")
def s_retain_handling(ctx):
    # [MQTT-3.3.1-9] RH 0: retained messages sent on every SUBSCRIBE; [MQTT-3.3.1-10] RH 1: only if the
    # subscription did not exist; [MQTT-3.3.1-11] RH 2: never.
    o = {}
    pub = connected(ctx, "pub")
    pub.publish("rh", "R", retain=True)
    s0, s1, s2 = (connected(ctx, r) for r in ("rh0", "rh1", "rh2"))
    o["subacks"] = [s0.subscribe("rh", rh=0)]
    s0.wait_count(1)
    o["subacks"].append(s0.subscribe("rh", rh=0))
    s0.wait_count(2)
    o["subacks"].append(s1.subscribe("rh", rh=1))
    s1.wait_count(1)
    o["subacks"].append(s1.subscribe("rh", rh=1))
    o["subacks"].append(s2.subscribe("rh", rh=2))
    settle(pub, "rh", "M", [s0, s1, s2])
    o["rh0_subscribed_twice"] = obs_list(s0.messages)
    o["rh1_subscribed_twice"] = obs_list(s1.messages)
    o["rh2"] = obs_list(s2.messages)
    return o


@scenario("retain_as_published")
def s_retain_as_published(ctx):
    # [MQTT-3.3.1-12] RAP 0: RETAIN 0 on forwarded messages; [MQTT-3.3.1-13] RAP 1: RETAIN as published.
    # Section 3.3.1.3: messages sent because of a new subscription have RETAIN 1 in both cases.
    o = {}
    pub = connected(ctx, "pub")
    pub.publish("rap", "R", retain=True)
    a = connected(ctx, "rap1")
    b = connected(ctx, "rap0")
    o["subacks"] = [a.subscribe("rap", rap=True), b.subscribe("rap", rap=False)]
    a.wait_count(1)
    b.wait_count(1)
    pub.publish("rap", "L", retain=True)
    pub.publish("rap", "N", retain=False)
    a.wait_count(3)
    b.wait_count(3)
    settle(pub, "rap", "marker", [a, b])
    o["rap1"] = obs_list(a.messages)
    o["rap0"] = obs_list(b.messages)
    return o


@scenario("no_local")
def s_no_local(ctx):
    # [MQTT-3.8.3-3] No Local 1: Application Messages MUST NOT be forwarded to a connection with a ClientID
    # equal to the ClientID of the publishing connection. (No Local 0: they are.)
    o = {}
    c = connected(ctx, "nl1")
    e = connected(ctx, "nl0")
    o["subacks"] = [c.subscribe("nl", no_local=True), e.subscribe("nl", no_local=False)]
    o["pubacks"] = [c.publish("nl", "from-nl1"), e.publish("nl", "from-nl0")]
    pub = connected(ctx, "pub")
    e.wait_count(2)
    settle(pub, "nl", "marker", [c, e])
    o["no_local_1"] = obs_list(c.messages, sort=True)
    o["no_local_0"] = obs_list(e.messages, sort=True)
    return o


@scenario("subscription_identifiers")
def s_subscription_ids(ctx):
    # [MQTT-3.3.4-3] the Subscription Identifiers of the matching subscriptions are sent with the message;
    # [MQTT-3.3.4-4] one copy: all of them (any order); [MQTT-3.3.4-5] one copy per subscription: each with
    # its own. A subscription without identifier adds none. Compared: the union per message and whether the
    # copies are consistent with 3.3.4-4/-5 (number of copies is informational: both are allowed).
    o = {}
    s = connected(ctx, "s")
    o["subacks"] = [s.subscribe("si/#", sub_id=1), s.subscribe("si/+", sub_id=2), s.subscribe("si/x/y")]
    pub = connected(ctx, "pub")
    cases = [("si/a", "p1", [1, 2]), ("si/x/y", "p2", [1]), ("si/b/c", "p3", [1])]
    for topic, payload, _ in cases:
        pub.publish(topic, payload)
    settle(pub, "si/z", "marker", [s])
    o["deliveries"] = {}
    for topic, payload, expected in cases + [("si/z", "marker", [1, 2])]:
        copies = [m.props.get("subscription_identifiers", []) for m in s.messages if m.text == payload]
        union = sorted({i for c in copies for i in c})
        if len(copies) == 1:
            ok = copies[0] == expected
        else:
            ok = union == expected and all(len(c) <= 1 for c in copies)
        o["deliveries"][payload] = {"ids": union, "consistent": ok, "_copies": len(copies)}
    return o


@scenario("shared_subscription_round_robin")
def s_shared(ctx):
    # Section 4.8.2: each message matching a Shared Subscription is sent to exactly one of its members
    # (how they are chosen is up to the Server); a non-shared subscription to the same topic is unaffected.
    o = {}
    group = f"$share/g{ctx.token}/{ctx.t('sh')}"
    m1 = connected(ctx, "m1")
    m2 = connected(ctx, "m2")
    o["subacks"] = [m1.subscribe(group, raw_topic=True), m2.subscribe(group, raw_topic=True)]
    plain = connected(ctx, "plain", "sh")
    pub = connected(ctx, "pub")
    sent = [f"s{i}" for i in range(10)]
    o["pubacks"] = sorted({pub.publish("sh", p) for p in sent}, key=str)
    plain.wait_count(10)
    wait_until(ctx, lambda: len(m1.messages) + len(m2.messages) >= 10)
    time.sleep(GRACE)
    got = [m.text for m in m1.messages + m2.messages]
    o["shared_total"] = len(got)
    o["shared_duplicates"] = len(got) - len(set(got))
    o["shared_missing"] = sorted(set(sent) - set(got))
    o["_per_member"] = sorted([len(m1.messages), len(m2.messages)])
    o["plain_subscriber_total"] = len(plain.messages)
    return o


@scenario("topic_alias_client_to_server")
def s_topic_alias(ctx):
    # Section 3.3.2.3.4: a PUBLISH with Topic Name and Topic Alias sets the mapping; a later PUBLISH with a
    # zero-length Topic Name and that alias means the same topic. Subscribers see the full topic
    # ([MQTT-3.3.2-10]: no alias towards a client that did not allow any).
    o = {}
    s = connected(ctx, "s", "ta")
    r = Raw(ctx)
    ack = r.connect()
    maximum = ack["props"].get("TopicAliasMaximum", 0) if ack else 0
    o["connack"] = ack["reason_code"] if ack else None
    o["_server_topic_alias_maximum"] = maximum
    o["server_accepts_aliases"] = maximum >= 1
    if maximum >= 1:
        r.send(r.publish_packet(ctx.t("ta"), "one", qos=1, pid=1, props=[(TOPIC_ALIAS, 1)]))
        p1 = r.expect(4)
        r.send(r.publish_packet("", "two", qos=1, pid=2, props=[(TOPIC_ALIAS, 1)]))
        p2 = r.expect(4)
        o["pubacks"] = [r.describe(p) if p else None for p in (p1, p2)]
        s.wait_count(2)
    pub = connected(ctx, "pub")
    settle(pub, "ta", "marker", [s])
    o["received"] = obs_list(s.messages)
    return o


@scenario("topic_alias_invalid")
def s_topic_alias_invalid(ctx):
    # [MQTT-3.3.2-8] Topic Alias 0 and [MQTT-3.3.2-9] an alias above the Server's Topic Alias Maximum are
    # not allowed; section 3.3.2.3.4: the receiver treats either as a Protocol Error: DISCONNECT 0x94 (Topic
    # Alias invalid) and close (section 4.13).
    o = {}
    s = connected(ctx, "s", "tai")
    r0 = Raw(ctx)
    ack = r0.connect(client_id=ctx.cid("r0"))
    maximum = ack["props"].get("TopicAliasMaximum", 0) if ack else 0
    r0.send(r0.publish_packet(ctx.t("tai"), "alias-0", qos=1, pid=1, props=[(TOPIC_ALIAS, 0)]))
    o["alias_0"] = r0.outcome()
    if maximum < 65535:
        r1 = Raw(ctx)
        r1.connect(client_id=ctx.cid("r1"))
        r1.send(r1.publish_packet(ctx.t("tai"), "alias-over-max", qos=1, pid=1,
                                  props=[(TOPIC_ALIAS, maximum + 1)]))
        o["alias_above_maximum"] = r1.outcome()
    pub = connected(ctx, "pub")
    settle(pub, "tai", "marker", [s])
    o["received"] = obs_list(s.messages)
    return o


@scenario("message_expiry")
def s_message_expiry(ctx):
    # [MQTT-3.3.2-5] a message whose Message Expiry Interval passed before onward delivery started is
    # deleted for that subscriber; [MQTT-3.3.2-6] a forwarded message carries the received interval minus the
    # time it waited in the Server.
    o = {}
    a = Paho(ctx, "a")
    a.connect(clean_start=True, props=sess(60))
    a.subscribe("me")
    a.disconnect()
    live = connected(ctx, "live", "me")
    pub = connected(ctx, "pub")
    pub.publish("me", "short", props=pprops(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish("me", "long", props=pprops(PacketTypes.PUBLISH, MessageExpiryInterval=60))
    live.wait_count(2)
    o["live"] = [m.obs(expiry_max=1 if m.text == "short" else 60) for m in live.messages]
    time.sleep(2.2)  # the timer under test: "short" expires while queued, "long" waits 2 s
    a2 = Paho(ctx, "a")
    o["connack_resume"] = a2.connect(clean_start=False, props=sess(60))
    a2.wait_count(1)
    settle(pub, "me", "marker", [a2])
    o["queued"] = obs_list(a2.messages, expiry_max=58)
    a2.disconnect()
    return o


@scenario("receive_maximum_flow_control")
def s_receive_maximum(ctx):
    # [MQTT-3.3.4-9] the Server MUST NOT send more than Receive Maximum QoS 1/2 PUBLISH packets for which it
    # has not received PUBACK/PUBCOMP (the rest waits until acknowledgements come).
    o = {}
    s = Paho(ctx, "s", manual_ack=True)
    o["connack"] = s.connect(props=pprops(PacketTypes.CONNECT, ReceiveMaximum=2))
    o["suback"] = s.subscribe("rm", qos=1)
    pub = connected(ctx, "pub")
    o["pubacks"] = [pub.publish("rm", f"m{i}") for i in range(5)]
    batches = []
    seen = 0
    for expect in (2, 4, 5):
        s.wait_count(expect)
        time.sleep(GRACE + 0.2)
        batch = s.messages[seen:]
        batches.append([m.text for m in batch])
        seen += len(batch)
        s.ack(batch)
        if seen >= 5:
            break
    o["unacked_batches"] = batches
    return o


@scenario("maximum_packet_size")
def s_maximum_packet_size(ctx):
    # [MQTT-3.1.2-24] the Server MUST NOT send packets exceeding the client's Maximum Packet Size;
    # [MQTT-3.1.2-25] it discards such a message (as if sent) and goes on with the next.
    o = {}
    s = Paho(ctx, "s")
    o["connack"] = s.connect(props=pprops(PacketTypes.CONNECT, MaximumPacketSize=200))
    o["suback"] = s.subscribe("mps", qos=1)
    pub = connected(ctx, "pub")
    o["pubacks"] = [pub.publish("mps", b"B" * 300), pub.publish("mps", "small")]
    s.wait_payload("small")
    time.sleep(GRACE)
    o["received"] = obs_list(s.messages)
    o["connection_kept"] = s.disconnected is None
    return o


@scenario("server_keep_alive")
def s_server_keep_alive(ctx):
    # [MQTT-3.2.2-21]/[MQTT-3.2.2-22]: a Server Keep Alive in CONNACK overrides the client's Keep Alive,
    # absent it the client's value applies. Which value a broker sends is its choice: recorded, a
    # difference is a finding.
    o = {}
    for ka in (0, 60, 65535):
        r = Raw(ctx)
        ack = r.connect(client_id=ctx.cid(f"ka{ka}"), keepalive=ka)
        o[f"keep_alive_{ka}"] = None if ack is None else ack["reason_code"]
        o[f"_server_keep_alive_{ka}"] = None if ack is None else ack["props"].get("ServerKeepAlive", "absent")
        r.send(packet(14, 0, b"\x00\x00"))
    return o


@scenario("assigned_client_identifier")
def s_assigned_client_id(ctx):
    # [MQTT-3.1.3-6]/[MQTT-3.1.3-7] a zero-length ClientID is accepted with Clean Start 1 and the Server
    # returns the Assigned Client Identifier in CONNACK ([MQTT-3.2.2-16]: a new, unique one).
    o = {}
    ids = []
    for i in range(2):
        r = Raw(ctx)
        ack = r.connect(client_id="", clean=True)
        ids.append(ack["props"].get("AssignedClientIdentifier") if ack else None)
        o[f"connack_{i}"] = None if ack is None else ack["reason_code"]
    o["assigned_client_identifier"] = ["present" if i else "absent" for i in ids]
    o["distinct"] = ids[0] != ids[1]
    return o


@scenario("request_response_properties")
def s_request_response(ctx):
    # [MQTT-3.3.2-15] Response Topic and [MQTT-3.3.2-16] Correlation Data are sent unaltered to subscribers.
    o = {}
    s = connected(ctx, "s", "req")
    pub = connected(ctx, "pub")
    pub.publish("req", "question", props=pprops(PacketTypes.PUBLISH, ResponseTopic=ctx.t("resp"),
                                                 CorrelationData=b"\x00\x01corr-\xff"))
    s.wait_count(1)
    o["received"] = obs_list(s.messages)
    return o


@scenario("user_properties_and_content_type")
def s_user_props(ctx):
    # [MQTT-3.3.2-17] all User Properties forwarded unaltered; [MQTT-3.3.2-18] in the same order (repeated
    # names allowed); [MQTT-3.3.2-20] Content Type forwarded unaltered.
    o = {}
    s = connected(ctx, "s", "up")
    pub = connected(ctx, "pub")
    pub.publish("up", '{"v":1}', props=pprops(PacketTypes.PUBLISH, ContentType="application/json; charset=utf-8",
                                               UserProperty=[("a", "1"), ("b", "x"), ("a", "2")]))
    s.wait_count(1)
    o["received"] = obs_list(s.messages)
    return o


@scenario("payload_format_indicator")
def s_payload_format(ctx):
    # [MQTT-3.3.2-4] the Payload Format Indicator is sent unaltered to subscribers. Section 3.3.2.3.2: a
    # receiver MAY check that a payload marked as UTF-8 is valid and if not answer PUBACK 0x99 (Payload format
    # invalid) or DISCONNECT 0x99: what happens with invalid UTF-8 is recorded.
    o = {}
    s = connected(ctx, "s", "pfi")
    pub = connected(ctx, "pub")
    o["puback_valid"] = pub.publish("pfi", "h\u00e9llo", props=pprops(PacketTypes.PUBLISH, PayloadFormatIndicator=1))
    s.wait_count(1)
    r = Raw(ctx)
    r.connect()
    r.send(r.publish_packet(ctx.t("pfi"), b"\xff\xfe\xfd", qos=1, pid=1, props=[(PAYLOAD_FORMAT, 1)]))
    events = r.outcome()
    settle(pub, "pfi", "marker", [s])
    delivered = any(m.text == "hex:fffefd" for m in s.messages)
    # Either accepted (PUBACK 0x00, delivered) or refused with 0x99 (PUBACK or DISCONNECT, not delivered).
    accepted = events[:1] == ["PUBACK 0x00"] and delivered
    refused = ("PUBACK 0x99" in events or "DISCONNECT 0x99" in events) and not delivered
    o["_invalid_utf8"] = events
    o["_invalid_utf8_delivered"] = delivered
    o["invalid_utf8_handled_consistently"] = accepted or refused
    o["received"] = obs_list([m for m in s.messages if m.text != "hex:fffefd"])
    return o


@scenario("qos_downgrade")
def s_qos_downgrade(ctx):
    # [MQTT-3.8.4-8] delivered QoS = min(published QoS, granted QoS).
    o = {}
    subs = [connected(ctx, f"s{q}", "qd", qos=q) for q in (0, 1, 2)]
    pub = connected(ctx, "pub")
    for q in (0, 1, 2):
        pub.publish("qd", f"q{q}", qos=q)
    for s in subs:
        s.wait_count(3)
    settle(pub, "qd", "marker", subs)
    for q, s in zip((0, 1, 2), subs):
        o[f"sub_qos{q}"] = obs_list([m for m in s.messages if m.text != "marker"], sort=True)
    return o


@scenario("qos2_exactly_once")
def s_qos2(ctx):
    # Section 4.3.3: QoS 2 delivers exactly once; [MQTT-4.3.3-10] until PUBREL the receiver answers a resent
    # PUBLISH (DUP 1, same Packet Identifier) with PUBREC and MUST NOT deliver it twice.
    o = {}
    s = connected(ctx, "s", "q2", qos=2)
    pub = connected(ctx, "pub")
    o["pubrecs"] = [pub.publish("q2", f"m{i}", qos=2) for i in range(3)]
    r = Raw(ctx)
    r.connect()
    pkt = r.publish_packet(ctx.t("q2"), "resent", qos=2, pid=7)
    r.send(pkt)
    ev = [r.expect(5)]
    r.send(r.publish_packet(ctx.t("q2"), "resent", qos=2, pid=7, dup=True))  # the retransmission
    ev.append(r.expect(5))
    r.send(packet(6, 2, struct.pack("!H", 7)))
    ev.append(r.expect(7))
    o["raw_handshake"] = [r.describe(p) if p else None for p in ev]
    settle(pub, "q2", "marker", [s], qos=2)
    o["received"] = obs_list(s.messages, sort=True)
    return o


@scenario("unsubscribe_reason_codes")
def s_unsubscribe(ctx):
    # [MQTT-3.11.3-1]/section 3.11.3: one UNSUBACK reason code per filter, 0x11 (No subscription existed) for
    # a filter that was not subscribed; [MQTT-3.10.4-2] after UNSUBACK no new messages for the removed one.
    o = {}
    s = connected(ctx, "s", "u")
    o["unsuback"] = s.unsubscribe(["u", "nothere"])
    w = connected(ctx, "w", "u")
    pub = connected(ctx, "pub")
    settle(pub, "u", "after", [w])
    o["received_after_unsubscribe"] = obs_list(s.messages)
    return o


@scenario("invalid_topic_filter_suback")
def s_invalid_filter(ctx):
    # [MQTT-4.7.1-1] '#' MUST be the last character of a Topic Filter. A SUBSCRIBE with `a/#/b` is answered
    # with SUBACK 0x8F (Topic Filter invalid) and the connection stays usable (the brief's expectation; a
    # Server may also treat it as a Protocol Error, section 4.13: then DISCONNECT and close).
    o = {}
    r = Raw(ctx)
    r.connect()
    r.send(r.subscribe_packet([(ctx.t("a/#/b"), 1)]))
    o["subscribe_a_hash_b"] = r.outcome()
    return o


def bad_publish(ctx, o, key, topic_bytes, payload="bad", qos=1, dup=False):
    r = Raw(ctx)
    r.connect(client_id=ctx.cid(key))
    r.send(r.publish_packet(topic_bytes, payload, qos=qos, pid=1, dup=dup))
    events = r.outcome()
    o[key] = must_level(events)
    o["_" + key] = events


@scenario("publish_wildcard_topic")
def s_publish_wildcard(ctx):
    # [MQTT-3.3.2-2] the Topic Name in a PUBLISH MUST NOT contain wildcard characters; the Server treats it as
    # malformed / DISCONNECT 0x90 (Topic Name invalid) and closes (section 4.13); nothing is delivered.
    o = {}
    s = connected(ctx, "s", "#")
    bad_publish(ctx, o, "plus", ctx.t("+"))
    bad_publish(ctx, o, "hash", ctx.t("w/#"))
    pub = connected(ctx, "pub")
    settle(pub, "ok", "marker", [s])
    o["received"] = obs_list(s.messages)
    return o


@scenario("publish_null_char_topic")
def s_publish_null(ctx):
    # [MQTT-1.5.4-2] a UTF-8 Encoded String MUST NOT include U+0000; a receiver getting one MUST close the
    # Network Connection (section 4.13, Malformed Packet). Nothing is delivered.
    o = {}
    s = connected(ctx, "s", "#")
    bad_publish(ctx, o, "null_in_topic", (ctx.t("a") + "\x00b").encode("utf-8"))
    pub = connected(ctx, "pub")
    settle(pub, "ok", "marker", [s])
    o["received"] = obs_list(s.messages)
    return o


@scenario("dup_on_qos0_malformed")
def s_dup_qos0(ctx):
    # [MQTT-3.3.1-2] the DUP flag MUST be 0 for QoS 0 messages: DUP 1 with QoS 0 is a Malformed Packet, the
    # connection is closed (section 4.13).
    o = {}
    s = connected(ctx, "s", "#")
    bad_publish(ctx, o, "dup_qos0", ctx.t("d"), qos=0, dup=True)
    pub = connected(ctx, "pub")
    settle(pub, "ok", "marker", [s])
    o["received"] = obs_list(s.messages)
    return o


@scenario("second_connect_protocol_error")
def s_second_connect(ctx):
    # [MQTT-3.1.0-2] the Server MUST process a second CONNECT as a Protocol Error and close the connection.
    o = {}
    r = Raw(ctx)
    ack = r.connect()
    o["connack"] = None if ack is None else ack["reason_code"]
    cid = ctx.cid("raw").encode()
    body = enc_str("MQTT") + bytes([5, 0x02 | (0xC0 if ctx.username is not None else 0)]) + \
        struct.pack("!H", 30) + enc_props([]) + enc_str(cid)
    if ctx.username is not None:
        body += enc_str(ctx.username) + enc_str(ctx.password or "")
    r.send(packet(1, 0, body))
    events = r.outcome()
    o["second_connect"] = must_level(events)
    o["_second_connect"] = events
    return o


@scenario("session_takeover")
def s_session_takeover(ctx):
    # [MQTT-3.1.4-3] a CONNECT with the ClientID of a connected client: the Server sends the existing client
    # DISCONNECT 0x8E (Session taken over) and closes its connection; the new connection works.
    o = {}
    a = Paho(ctx, "same")
    o["connack_first"] = a.connect()
    b = Paho(ctx, "same")
    o["connack_second"] = b.connect()
    o["first_disconnected"] = a.wait_disconnect()
    o["suback_second"] = b.subscribe("st")
    pub = connected(ctx, "pub")
    pub.publish("st", "to-second")
    b.wait_count(1)
    o["second_received"] = obs_list(b.messages)
    o["second_still_connected"] = b.disconnected is None
    return o


@scenario("bad_credentials")
def s_bad_credentials(ctx):
    # Section 3.2.2.2: CONNACK 0x86 (Bad User Name or Password); [MQTT-3.2.2-7] after a CONNACK >= 0x80 the
    # Server closes the connection. MQTT 3.1.1 ([MQTT-3.2.2-5]): return code 4, then close.
    if ctx.username is None:
        return {"skipped": "no credentials given (--username/--password)"}
    o = {}
    for v5, key in ((True, "v5"), (False, "v311")):
        r = Raw(ctx, v5=v5)
        ack = r.connect(client_id=ctx.cid(key), password=(ctx.password or "") + "-wrong")
        o[key] = [f"CONNACK 0x{ack['reason_code']:02x}" if ack else "no CONNACK"] + \
            (["closed"] if r.read(CLOSE_WAIT) is None and r.closed else ["open"])
    return o


@scenario("dollar_topics_not_matched_by_wildcard")
def s_dollar(ctx):
    # [MQTT-4.7.2-1] the Server MUST NOT match Topic Filters starting with a wildcard (# or +) with Topic Names
    # beginning with '$'. Whether clients may publish to or subscribe to `$...` at all is the Server's choice
    # (section 4.7.2: applications cannot use `$` topics for their own purposes): recorded under "_" keys;
    # compared is only that the broker is consistent: an accepted publish reaches the explicit `$` subscriber
    # (if that subscription was granted), a refused one reaches nobody.
    o = {}
    s_all = connected(ctx, "all")
    s_all.subscribe("#", raw_topic=True)
    s_plus = connected(ctx, "plus")
    s_plus.subscribe(f"+/bar{ctx.token}", raw_topic=True)
    s_dollar = connected(ctx, "dollar")
    suback = s_dollar.subscribe(f"{ctx.dollar}/#", raw_topic=True)
    pub = connected(ctx, "pub")
    puback = pub.publish(f"{ctx.dollar}/bar{ctx.token}", "dollar", raw_topic=True)
    granted = bool(suback) and suback[0] < 0x80
    accepted = puback is not None and puback < 0x80
    if granted and accepted:
        s_dollar.wait_count(1)
    pub.publish(f"m{ctx.token}/bar{ctx.token}", "marker", raw_topic=True)
    s_all.wait_payload("marker")
    s_plus.wait_payload("marker")
    time.sleep(GRACE)
    explicit = obs_list(s_dollar.messages)
    o["_suback_explicit"] = suback
    o["_puback_dollar"] = puback
    o["_explicit_subscriber"] = explicit
    # [MQTT-3.8.4-1] SUBACK and [MQTT-4.3.2-4] PUBACK are sent whatever the decision.
    o["acknowledged"] = suback is not None and puback is not None
    o["dollar_publish_handled_consistently"] = (len(explicit) == 1) if (granted and accepted) else (explicit == [])
    o["hash_subscriber_got_dollar"] = any(m.topic.startswith("$X") for m in s_all.messages)
    o["plus_subscriber"] = obs_list(s_plus.messages)
    return o


# ---------------------------------------------------------------------------------------------------------
# MQTT 3.1.1 scenarios
# ---------------------------------------------------------------------------------------------------------


def v3(ctx, role, topic=None, qos=1, clean_session=True):
    c = Paho(ctx, role, v5=False, clean_session=clean_session)
    ack = c.connect()
    if ack.get("reason_code") != 0:
        raise RuntimeError(f"{role}: CONNECT refused: {ack}")
    if topic is not None:
        sa = c.subscribe(topic, qos=qos)
        if sa is None or sa[0] >= 0x80:
            raise RuntimeError(f"{role}: SUBSCRIBE {topic} failed: {sa}")
    return c


@scenario("v311_retained")
def s311_retained(ctx):
    # 3.1.1 [MQTT-3.3.1-5] stored; [MQTT-3.3.1-8] RETAIN 1 when sent because of a new subscription;
    # [MQTT-3.3.1-9] RETAIN 0 on an established subscription; [MQTT-3.3.1-10]/[MQTT-3.3.1-11] a zero-byte
    # retained message removes the retained message and is not stored.
    o = {}
    pub = v3(ctx, "pub")
    pub.publish("r", "r1", retain=True)
    s = v3(ctx, "s", "r")
    s.wait_count(1)
    pub.publish("r", "r2", retain=True)
    s.wait_count(2)
    pub.publish("r", b"", retain=True)
    s.wait_count(3)
    later = v3(ctx, "later", "r")
    settle(pub, "r", "marker", [s, later])
    o["subscriber"] = obs_list(s.messages)
    o["later_subscriber"] = obs_list(later.messages)
    return o


@scenario("v311_will")
def s311_will(ctx):
    # 3.1.1 [MQTT-3.1.2-8] the Will Message is published when the connection closes without DISCONNECT;
    # [MQTT-3.14.4-3] on DISCONNECT it is discarded.
    o = {}
    w = v3(ctx, "w", "will")
    a = Paho(ctx, "a", v5=False)
    o["connack_a"] = a.connect(will={"topic": ctx.t("will"), "payload": b"a-gone", "qos": 1})
    a.kill()
    w.wait_payload("a-gone")
    b = Paho(ctx, "b", v5=False)
    o["connack_b"] = b.connect(will={"topic": ctx.t("will"), "payload": b"b-must-not-arrive", "qos": 1})
    b.disconnect()
    pub = v3(ctx, "pub")
    settle(pub, "will", "marker", [w])
    time.sleep(GRACE)
    o["received"] = obs_list(w.messages)
    return o


@scenario("v311_persistent_session_queueing")
def s311_persistent(ctx):
    # 3.1.1 [MQTT-3.1.2-4] CleanSession 0 resumes the session; [MQTT-3.1.2-5] QoS 1/2 messages for its
    # subscriptions are stored while disconnected; [MQTT-3.2.2-2] Session Present 1; [MQTT-3.2.2-1]
    # CleanSession 1 -> Session Present 0.
    o = {}
    a = Paho(ctx, "a", v5=False, clean_session=False)
    o["connack_first"] = a.connect()
    o["suback"] = a.subscribe("q", qos=1)
    a.disconnect()
    pub = v3(ctx, "pub")
    for i in range(3):
        pub.publish("q", f"m{i}")
    a2 = Paho(ctx, "a", v5=False, clean_session=False)
    o["connack_resume"] = a2.connect()
    a2.wait_count(3)
    settle(pub, "q", "marker", [a2])
    o["received"] = obs_list(a2.messages)
    a2.disconnect()
    a3 = Paho(ctx, "a", v5=False, clean_session=True)
    o["connack_clean"] = a3.connect()
    a3.disconnect()
    return o


@scenario("v311_qos_downgrade")
def s311_qos_downgrade(ctx):
    # 3.1.1 section 3.8.4: the QoS of a delivered message is the minimum of the published QoS and the granted
    # QoS (a QoS 2 publish reaches a QoS 1 subscription as QoS 1, QoS 0 stays 0).
    o = {}
    s0 = v3(ctx, "s0", "qd", qos=0)
    s1 = v3(ctx, "s1", "qd", qos=1)
    pub = v3(ctx, "pub")
    for q in (0, 1, 2):
        pub.publish("qd", f"q{q}", qos=q)
    s0.wait_count(3)
    s1.wait_count(3)
    settle(pub, "qd", "marker", [s0, s1])
    o["sub_qos0"] = obs_list([m for m in s0.messages if m.text != "marker"], sort=True)
    o["sub_qos1"] = obs_list([m for m in s1.messages if m.text != "marker"], sort=True)
    return o


@scenario("v311_invalid_filter_suback")
def s311_invalid_filter(ctx):
    # 3.1.1 [MQTT-4.7.1-2] '#' must be last; the Server answers SUBACK 0x80 (failure) or, as a protocol
    # violation, closes the connection ([MQTT-4.8.0-1]): recorded.
    o = {}
    r = Raw(ctx, v5=False)
    r.connect()
    r.send(r.subscribe_packet([(ctx.t("a/#/b"), 1)]))
    events = r.outcome()
    o["_subscribe_a_hash_b"] = events
    o["subscribe_a_hash_b"] = "rejected" if events in (["SUBACK [0x80]", "open"], ["closed"]) else "accepted"
    return o


@scenario("v311_session_takeover")
def s311_takeover(ctx):
    # 3.1.1 [MQTT-3.1.4-2] if the ClientId is already connected, the Server MUST disconnect the existing
    # client (no DISCONNECT packet exists towards clients in 3.1.1); the new connection works.
    o = {}
    a = Paho(ctx, "same", v5=False)
    o["connack_first"] = a.connect()
    b = Paho(ctx, "same", v5=False)
    o["connack_second"] = b.connect()
    o["first_disconnected"] = a.wait_disconnect()
    o["suback_second"] = b.subscribe("st")
    pub = v3(ctx, "pub")
    pub.publish("st", "to-second")
    b.wait_count(1)
    o["second_received"] = obs_list(b.messages)
    return o


@scenario("v311_keepalive_zero_accepted")
def s311_keepalive_zero(ctx):
    # 3.1.1 section 3.1.2.10: Keep Alive 0 turns the mechanism off; the Server accepts it and does not
    # disconnect an idle client for it.
    o = {}
    r = Raw(ctx, v5=False)
    ack = r.connect(keepalive=0)
    o["connack"] = None if ack is None else ack["reason_code"]
    o["after_idle"] = r.outcome(close_wait=1.5)
    return o


@scenario("v311_unsubscribe")
def s311_unsubscribe(ctx):
    # 3.1.1 [MQTT-3.10.4-4] UNSUBSCRIBE is answered with UNSUBACK, [MQTT-3.10.4-5] also when nothing was
    # subscribed; [MQTT-3.10.4-2] no new messages for the removed subscription afterwards.
    o = {}
    s = v3(ctx, "s", "u")
    o["unsuback_existing"] = s.unsubscribe(["u"])
    o["unsuback_missing"] = s.unsubscribe(["nothere"])
    w = v3(ctx, "w", "u")
    pub = v3(ctx, "pub")
    settle(pub, "u", "after", [w])
    o["received_after_unsubscribe"] = obs_list(s.messages)
    return o


# ---------------------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--scenario")
    p.add_argument("--list", action="store_true", help="print the scenario names, one a line")
    args = p.parse_args()
    if args.list:
        for name in SCENARIOS:
            print(name)
        return 0
    if args.scenario not in SCENARIOS or args.port is None:
        print(f"--port and --scenario (one of: {', '.join(SCENARIOS)}) are required", file=sys.stderr)
        return 2
    ctx = Ctx(args, args.scenario)
    try:
        observed = SCENARIOS[args.scenario](ctx)
        out = {"scenario": args.scenario, "observed": observed}
        code = 0
    except Exception as e:  # noqa: BLE001 - reported as the scenario's result
        out = {"scenario": args.scenario, "error": f"{type(e).__name__}: {e}"}
        code = 1
    finally:
        ctx.close_all()
    print(json.dumps(out, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
