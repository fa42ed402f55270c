"""Every table definition of the agent's database, gathered from the packages that own them.

`Database(path, ALL_SCHEMAS)` creates them all (each is `CREATE ... IF NOT EXISTS`). This
module sits beside the application, above every package it names: the store below never
imports them, it is handed this list.
"""

from __future__ import annotations

from agent.firmware import store as firmware_store
from agent.lifecycle import audit as lifecycle_audit
from agent.lifecycle import register as lifecycle_register
from agent.lifecycle import tags as lifecycle_tags
from agent.mqtt import command_processor as mqtt_commands
from agent.offload import pending as offload_pending
from agent.store.schemas import STORE_SCHEMAS
from agent.upload import queue as upload_queue

ALL_SCHEMAS: tuple[str, ...] = (
    *STORE_SCHEMAS,
    offload_pending.SCHEMA,
    mqtt_commands.SCHEMA,
    upload_queue.SCHEMA,
    lifecycle_register.SCHEMA,
    lifecycle_tags.SCHEMA,
    lifecycle_audit.SCHEMA,
    firmware_store.SCHEMA,
)
