"""Every table definition of the agent's database, in creation order.

`Database(path, ALL_SCHEMAS)` creates them all (each is `CREATE ... IF NOT EXISTS`).
"""

from __future__ import annotations

from agent.mqtt import commands as mqtt_commands
from agent.offload import journal as offload_journal
from agent.store import assignments, evidence, faults, ledger, outbox, recorder_history
from agent.upload import queue as upload_queue

ALL_SCHEMAS: list[str] = [
    ledger.SCHEMA,
    evidence.SCHEMA,
    faults.SCHEMA,
    outbox.SCHEMA,
    assignments.SCHEMA,
    offload_journal.SCHEMA,
    mqtt_commands.SCHEMA,
    recorder_history.SCHEMA,
    upload_queue.SCHEMA,
]
