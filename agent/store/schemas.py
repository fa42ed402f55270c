"""The custody store's own table definitions, in creation order.

Packages above the store own their tables' definitions; the application gathers every
package's list (`agent.schemas.ALL_SCHEMAS`) and passes it to `Database`. Nothing here
imports from those packages, so the store stays at the bottom of the import graph.
"""

from __future__ import annotations

from agent.store import assignments, evidence, faults, ledger, outbox, recorder_history

STORE_SCHEMAS: tuple[str, ...] = (
    ledger.SCHEMA,
    evidence.SCHEMA,
    faults.SCHEMA,
    outbox.SCHEMA,
    assignments.SCHEMA,
    recorder_history.SCHEMA,
)
