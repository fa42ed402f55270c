"""The Prometheus endpoint: text format, values from the views, loopback only."""

import asyncio
import socket
from typing import Any

from agent.metrics import MetricsServer, collect, render

RECORDERS: list[dict[str, Any]] = [
    {"bay": "1", "serial": "BWC00001", "battery": {"percent": 96},
     "readiness": {"verdict": "READY"}, "offload": {"bytes_done": 10, "bytes_total": 40}},
    {"bay": "2", "key": "USB-XYZ", "serial": None, "battery": None,
     "readiness": {"verdict": "NOT_READY"}},
]
STATS = {"connected": True, "outbox_depth": 3, "outbox_oldest_age_s": 1.5, "published": 7,
         "acked": 4, "dropped": 0}


def test_render_and_collect() -> None:
    text = render(collect(RECORDERS, STATS, {"store_free_bytes": 123, "cpu_temp_c": 48.5}))
    lines = text.splitlines()
    assert "# TYPE dock_recorders_docked gauge" in lines
    assert "dock_recorders_docked 2" in lines
    assert 'dock_recorder_battery_percent{bay="1",serial="BWC00001"} 96' in lines
    assert 'dock_recorder_ready{bay="2",serial="USB-XYZ"} 0' in lines
    assert 'dock_recorder_offload_bytes_total{bay="1",serial="BWC00001"} 40' in lines
    assert "dock_outbox_oldest_age_seconds 1.5" in lines
    assert "# TYPE dock_mqtt_acked_total counter" in lines
    assert "dock_cpu_temperature_celsius 48.5" in lines
    # No reporter (MQTT disabled): no MQTT metrics rather than misleading zeros.
    assert "dock_mqtt_connected" not in render(collect([], None, {}))


def test_label_values_are_escaped() -> None:
    text = render([("m", "gauge", "h", [("m", {"bay": 'a"b\\c\nd'}, 1.0)])])
    assert 'm{bay="a\\"b\\\\c\\nd"} 1' in text


async def test_served_on_loopback_only() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = MetricsServer(port, lambda: collect(RECORDERS, STATS, {}))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(6000):  # up to 60 s on a loaded machine
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.01)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        response = (await reader.read()).decode()
        assert response.startswith("HTTP/1.1 200 OK")
        assert "dock_recorders_docked 2" in response
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 404")
        assert _listening_addresses(port) == ["127.0.0.1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _listening_addresses(port: int) -> list[str]:
    """IPv4 addresses with a listening socket on `port`, from /proc/net/tcp."""
    found = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found
