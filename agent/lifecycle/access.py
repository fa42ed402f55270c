"""Who may see or take footage: pure checks of an access request against the approver list.

Regulations (access §3-8, 004 §16-18): every view and export names who asks (requester),
who approved it (approver) and why (purpose). The approver must be on the list of the unit
whose footage it is (`[access] approvers`, unit number -> names; "*" covers every unit),
and nobody approves their own request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.lifecycle.errors import AccessRefused
from agent.lifecycle.fields import printable_text

MAX_FIELD = 200
ANY_UNIT = "*"


@dataclass(frozen=True)
class AccessRequest:
    requester: str
    approver: str
    purpose: str

    def as_dict(self) -> dict[str, str]:
        return {"requester": self.requester, "approver": self.approver,
                "purpose": self.purpose}


def _field(args: Mapping[str, object], name: str) -> str:
    value = args.get(name)
    if value is None or value == "":
        raise AccessRefused(f"{name} is required: every view and export names its {name}")
    return printable_text(value, name, limit=MAX_FIELD, error=AccessRefused)


def parse_request(args: Mapping[str, object]) -> AccessRequest:
    """The requester/approver/purpose of a request, or AccessRefused saying what is wrong."""
    req = AccessRequest(_field(args, "requester"), _field(args, "approver"),
                        _field(args, "purpose"))
    if req.requester == req.approver:
        raise AccessRefused("the approver must be someone other than the requester")
    return req


def check_approver(req: AccessRequest, units: Iterable[str],
                   approvers: Mapping[str, Sequence[str]]) -> None:
    """Refuse unless `req.approver` may approve access to footage of every unit in `units`."""
    for unit in sorted(set(units)):
        allowed = set(approvers.get(unit, ())) | set(approvers.get(ANY_UNIT, ()))
        if req.approver not in allowed:
            if not allowed:
                raise AccessRefused(f"no approver is configured for unit {unit!r}:"
                                    " access to its footage is refused")
            raise AccessRefused(f"{req.approver!r} is not an approver for unit {unit!r}")
