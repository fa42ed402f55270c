"""Topic names. Everything lives under `<prefix>/<dock_id>/`; state and events never share."""

from __future__ import annotations

from dataclasses import dataclass


class TopicError(ValueError):
    """A dock id, serial or command name cannot be used as a topic level."""


def check_level(value: str, what: str) -> str:
    if not value or any(c in value for c in "/+#\0") or len(value) > 128:
        raise TopicError(f"{what} {value!r} is not a valid MQTT topic level")
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    dock_id: str

    def __post_init__(self) -> None:
        check_level(self.dock_id, "dock id")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.dock_id}"

    @property
    def status(self) -> str:  # retained: online / offline (Will)
        return f"{self.base}/status"

    @property
    def health(self) -> str:  # retained: latest dock health
        return f"{self.base}/health"

    @property
    def checkpoint(self) -> str:  # retained: newest signed ledger checkpoint
        return f"{self.base}/checkpoint"

    def recorder_state(self, serial: str) -> str:  # retained: birth / death
        return f"{self.base}/recorder/{check_level(serial, 'serial')}/state"

    def recorder_progress(self, serial: str) -> str:  # not retained, throttled
        return f"{self.base}/recorder/{check_level(serial, 'serial')}/progress"

    def event(self, stream: str) -> str:  # not retained, from the outbox
        return f"{self.base}/events/{check_level(stream, 'stream')}"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/cmd/+"

    @property
    def command_prefix(self) -> str:
        return f"{self.base}/cmd/"

    def reply(self, name: str) -> str:
        return f"{self.base}/reply/{check_level(name, 'command')}"

    @property
    def reply_prefix(self) -> str:
        return f"{self.base}/reply/"


def fleet_filters(prefix: str) -> list[str]:
    """What the fleet view subscribes to, across all docks."""
    return [
        f"{prefix}/+/status",
        f"{prefix}/+/health",
        f"{prefix}/+/recorder/+/state",
        f"{prefix}/+/recorder/+/progress",
        f"{prefix}/+/events/+",
        f"{prefix}/+/checkpoint",
        f"{prefix}/+/reply/resend",  # answers to the gap-repair requests the view sends
    ]
