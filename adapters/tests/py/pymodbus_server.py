"""An independent Modbus server (pymodbus) for the adapters' interoperability tests.

Usage: pymodbus_server.py tcp PORT | rtu SERIAL_PATH BAUD
Prints "READY" on stdout once it serves. The register contents are built here with Python's
struct module, independently of the Rust codec; adapters/tests/pymodbus.rs checks the values
our client decodes from them. Unit 1 (and, on RTU, unit 2) exist; other units get no reply
(RTU) or exception 4 (TCP). Addresses not defined below answer exception 2.
"""

import asyncio
import logging
import struct
import sys

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def regs(fmt: str, value, order: str = "ABCD") -> list[int]:
    """Registers of a value packed big-endian (bytes A B C D ...), rearranged by order."""
    raw = struct.pack(">" + fmt, value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def string_regs(text: str, length: int) -> list[int]:
    raw = text.encode().ljust(length + (length % 2), b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def holding_unit1() -> list[int]:
    hr = [0] * 64
    hr[0:2] = regs("f", 123.456, "ABCD")
    hr[2:4] = regs("f", -1.5, "CDAB")
    hr[4:6] = regs("I", 0x12345678, "DCBA")
    hr[6:10] = regs("d", -273.15, "BADC")
    hr[10:11] = regs("h", -2)
    hr[11:17] = string_regs("PYMODBUS", 12)
    hr[17] = 0x8005
    hr[18:22] = regs("q", -123456789012, "ABCD")
    hr[22:24] = regs("i", -1000, "CDAB")
    hr[24:28] = regs("Q", 2**63 + 5, "DCBA")
    return hr


def device(unit: int) -> SimDevice:
    if unit == 1:
        hr = holding_unit1()
        ir = regs("I", 4_000_000_000) + [1234]
        co = [True, False, True, True, False, False, True, True, True, False] + [False] * 22
        di = [False, True, False, False, True, True, False, True]
    else:
        hr = [0x0202] * 8
        ir = [7] * 8
        co = [True] * 8
        di = [True] * 8
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=co, datatype=DataType.BITS)],
            [SimData(0, values=di, datatype=DataType.BITS)],
            [SimData(0, values=hr, datatype=DataType.REGISTERS)],
            [SimData(0, values=ir, datatype=DataType.REGISTERS)],
        ),
    )


def silence_other_units(sending: bool, data: bytes) -> bytes:
    if sending and data[:1] not in (b"\x01", b"\x02"):
        return b""
    return data


async def main() -> None:
    # The expected "unknown unit" errors are logged with tracebacks otherwise.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    kind = sys.argv[1]
    if kind == "tcp":
        server = ModbusTcpServer([device(1)], address=("127.0.0.1", int(sys.argv[2])))
    elif kind == "rtu":
        server = ModbusSerialServer(
            [device(1), device(2)],
            port=sys.argv[2],
            baudrate=int(sys.argv[3]),
            # A unit that is not simulated stays silent, as on a real line (pymodbus itself
            # would answer exception 4 for it).
            trace_packet=silence_other_units,
        )
    else:
        raise SystemExit(f"unknown transport {kind!r}")
    await server.serve_forever(background=True)
    print("READY", flush=True)
    await server.serving


if __name__ == "__main__":
    asyncio.run(main())
