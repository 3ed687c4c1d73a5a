"""Baseline for the adapters' TCP benchmark: pymodbus's synchronous client doing the same
sequential reads as our client. Usage: pymodbus_client_bench.py PORT N COUNT
Prints: requests_per_second."""

import sys
import time

from pymodbus.client import ModbusTcpClient

port, n, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
client = ModbusTcpClient("127.0.0.1", port=port)
assert client.connect()
for _ in range(20):  # warm-up
    client.read_holding_registers(0, count=count, device_id=1)
start = time.perf_counter()
for _ in range(n):
    r = client.read_holding_registers(0, count=count, device_id=1)
    assert not r.isError() and len(r.registers) == count
elapsed = time.perf_counter() - start
client.close()
print(f"{n / elapsed:.0f}")
