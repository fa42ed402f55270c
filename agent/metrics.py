"""Optional Prometheus metrics on 127.0.0.1 (off unless `control.metrics_port` is set).

A deliberately tiny HTTP responder: GET /metrics only, loopback only, no footage or
personal data beyond recorder serials and bay labels. The values are read from the live
views (sessions, reporter, health) at scrape time; nothing is stored for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Sample = tuple[str, Mapping[str, str], float]
MetricFamily = tuple[str, str, str, list[Sample]]  # name, type, help, samples


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(families: Iterable[MetricFamily]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for sample_name, labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{sample_name}{{{label_text}}} {_fmt(value)}" if label_text
                         else f"{sample_name} {_fmt(value)}")
    return "\n".join(lines) + "\n"


def collect(
    recorders: list[dict[str, Any]], reporter_stats: Mapping[str, Any] | None,
    health: Mapping[str, Any],
) -> list[MetricFamily]:
    """Metric families from the dock's current views (pure)."""
    fams: list[MetricFamily] = []

    def gauge(name: str, help_text: str, samples: list[Sample]) -> None:
        fams.append((name, "gauge", help_text, samples))

    def counter(name: str, help_text: str, value: float) -> None:
        fams.append((name, "counter", help_text, [(name, {}, value)]))

    gauge("dock_recorders_docked", "Recorders currently docked.",
          [("dock_recorders_docked", {}, float(len(recorders)))])
    battery: list[Sample] = []
    ready: list[Sample] = []
    done: list[Sample] = []
    total: list[Sample] = []
    for r in recorders:
        labels = {"bay": str(r.get("bay")), "serial": str(r.get("serial") or r.get("key"))}
        percent = (r.get("battery") or {}).get("percent")
        if isinstance(percent, int | float):
            battery.append(("dock_recorder_battery_percent", labels, float(percent)))
        verdict = (r.get("readiness") or {}).get("verdict")
        ready.append(("dock_recorder_ready", labels, 1.0 if verdict == "READY" else 0.0))
        prog = r.get("offload") or {}
        if "bytes_total" in prog:
            done.append(("dock_recorder_offload_bytes_done", labels, float(prog["bytes_done"])))
            total.append(("dock_recorder_offload_bytes_total", labels, float(prog["bytes_total"])))
    gauge("dock_recorder_battery_percent", "Battery level of a docked recorder.", battery)
    gauge("dock_recorder_ready", "1 when the recorder is READY for a shift.", ready)
    gauge("dock_recorder_offload_bytes_done", "Bytes offloaded in the current docking.", done)
    gauge("dock_recorder_offload_bytes_total", "Bytes to offload in the current docking.", total)
    if reporter_stats is not None:
        gauge("dock_mqtt_connected", "1 while connected to the broker.",
              [("dock_mqtt_connected", {}, 1.0 if reporter_stats.get("connected") else 0.0)])
        gauge("dock_outbox_depth", "Events waiting for the broker.",
              [("dock_outbox_depth", {}, float(reporter_stats.get("outbox_depth") or 0))])
        age = reporter_stats.get("outbox_oldest_age_s")
        gauge("dock_outbox_oldest_age_seconds", "Age of the oldest unsent event.",
              [("dock_outbox_oldest_age_seconds", {}, float(age or 0.0))])
        counter("dock_mqtt_published_total", "Events handed to the broker.",
                float(reporter_stats.get("published") or 0))
        counter("dock_mqtt_acked_total", "Events acknowledged by the broker.",
                float(reporter_stats.get("acked") or 0))
        counter("dock_outbox_dropped_total", "Health samples dropped by the outbox bounds.",
                float(reporter_stats.get("dropped") or 0))
    for key, name, help_text in (
        ("store_free_bytes", "dock_store_free_bytes", "Free space on the evidence disk."),
        ("cpu_temp_c", "dock_cpu_temperature_celsius", "CPU temperature."),
        ("loop_lag_ms", "dock_event_loop_lag_ms", "Worst recent event-loop lag."),
    ):
        value = health.get(key)
        if isinstance(value, int | float):
            gauge(name, help_text, [(name, {}, float(value))])
    return fams


class MetricsServer:
    def __init__(self, port: int, families: Callable[[], list[MetricFamily]]) -> None:
        self.port = port
        self.families = families

    async def serve(self) -> None:
        server = await asyncio.start_server(self._client, host="127.0.0.1", port=self.port)
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            parts = request.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1] == b"/metrics":
                body = render(self.families()).encode()
                head = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body = b"only GET /metrics is served here\n"
                head = b"404 Not Found", b"text/plain; charset=utf-8"
            writer.write(b"HTTP/1.1 " + head[0] + b"\r\nContent-Type: " + head[1]
                         + b"\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
