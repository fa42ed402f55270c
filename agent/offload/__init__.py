"""The offload engine: recorder footage into the evidence store, bit-for-bit, with custody."""

from agent.offload.engine import Offloader
from agent.offload.errors import OffloadError
from agent.offload.pending import SCHEMA
from agent.offload.policy import DeadlinePolicy, Wiper
from agent.offload.summary import FileProblem, OffloadProgress, OffloadSummary, Outcome, StoredFile

__all__ = [
    "SCHEMA", "DeadlinePolicy", "FileProblem", "OffloadError", "OffloadProgress",
    "OffloadSummary", "Offloader", "Outcome", "StoredFile", "Wiper",
]
