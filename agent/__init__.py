"""dock-agent: the docking-station agent for body-worn recorders."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dock-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
