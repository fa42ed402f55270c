"""Every table definition of the agent's database, in creation order.

`Database(path, ALL_SCHEMAS)` creates them all (each is `CREATE ... IF NOT EXISTS`).
"""

from __future__ import annotations

from agent.lifecycle import audit as lifecycle_audit
from agent.lifecycle import register as lifecycle_register
from agent.lifecycle import tags as lifecycle_tags
from agent.mqtt import commands as mqtt_commands
from agent.offload import pending as offload_pending
from agent.store import assignments, evidence, faults, ledger, outbox, recorder_history
from agent.upload import queue as upload_queue

ALL_SCHEMAS: list[str] = [
    ledger.SCHEMA,
    evidence.SCHEMA,
    faults.SCHEMA,
    outbox.SCHEMA,
    assignments.SCHEMA,
    offload_pending.SCHEMA,
    mqtt_commands.SCHEMA,
    recorder_history.SCHEMA,
    upload_queue.SCHEMA,
    lifecycle_register.SCHEMA,
    lifecycle_tags.SCHEMA,
    lifecycle_audit.SCHEMA,
]
