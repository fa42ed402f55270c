"""MQTT reporting: transport, durable outbox drain, retained state, commands, fleet view."""

from agent.mqtt import command_processor as _commands
from agent.store import outbox as _outbox

# Every table the reporter needs, for `Database(path, [..., *SCHEMAS])`.
SCHEMAS: tuple[str, ...] = (_outbox.SCHEMA, _commands.SCHEMA)
