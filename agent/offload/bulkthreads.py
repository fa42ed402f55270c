"""The offloader's bulk threads (copy, hash, write, read-back) run below the control path.

On a busy dock the event loop (sessions, the serial links, MQTT, the dock view) and the
database writer are the control path: a late callback there is a late `identified`, a late
progress message or a stalled plug. The bulk threads only move bytes, and a copy that gets
the CPU a few milliseconds later loses nothing (each waits on a recorder at USB speed, its
reads already queued). So every bulk thread moves itself to `BULK_POLICY` and lowers its
own priority by `BULK_NICE` (Linux: both act on a thread id, that thread alone; see the
constant for why it is 0); the loop and the database writer keep the process's policy.

With a nice value raised, the I/O priority would follow: with no explicit I/O class, Linux
derives a thread's best-effort I/O priority from its nice value ((nice + 20) / 5), which the
bfq scheduler honours; mq-deadline and none ignore levels.

Raising one's own nice value and moving from SCHED_OTHER to SCHED_BATCH need no
privilege; neither is ever undone (lowering a nice value would need it), so a thread that
inherited both from the thread that started it keeps them unchanged.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

# Added to the process's own nice value (capped at 19, the lowest). 0: measured with 25 bays,
# nice +10 did not lower the loop's lag, and where other programs keep the CPUs busy (a dock
# screen's browser) a lowered thread preempted while holding the GIL kept the loop waiting
# for it (median lag 80 ms against 32 ms); SCHED_BATCH alone has no such inversion.
BULK_NICE = 0
# SCHED_BATCH: the same share of the CPU as SCHED_OTHER at the same nice value, but a
# waking bulk thread never preempts the thread that is running (the event loop, say);
# it waits for the tick. (No privilege needed to move between the two.)
BULK_POLICY = os.SCHED_BATCH
_LOWEST = 19


def bulk_nice_target() -> int:
    """The nice value bulk threads run at: the process's own (its main thread's) plus
    `BULK_NICE`, at most the lowest priority there is."""
    return min(_LOWEST, os.getpriority(os.PRIO_PROCESS, os.getpid()) + BULK_NICE)


def thread_nice() -> int:
    """The calling thread's own nice value."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def thread_policy() -> int:
    """The calling thread's own scheduling policy (os.SCHED_*)."""
    return os.sched_getscheduler(threading.get_native_id())


def lower_priority() -> None:
    """Run the calling thread as a bulk thread (idempotent; a thread already at or below the
    bulk priority keeps it). Failure only costs latency, so it is logged, not raised."""
    tid = threading.get_native_id()
    try:
        if os.sched_getscheduler(tid) == os.SCHED_OTHER:
            os.sched_setscheduler(tid, BULK_POLICY, os.sched_param(0))
        target = bulk_nice_target()
        if thread_nice() < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:
        log.warning("cannot lower a bulk thread's priority: %s", exc)
