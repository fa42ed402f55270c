"""The configuration errors: one issue per problem, all issues in one exception."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ConfigError(Exception):
    """Base of configuration errors."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file (or in a file it refers to)."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigInvalid(ConfigError):
    """The configuration has one or more problems; `issues` lists all of them."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))
