"""dock-agent: the docking-station agent for body-worn recorders."""

# The one place the version is written (pyproject.toml reads it from here). A literal, not
# importlib.metadata: that lookup alone costs the process about 5 MB of memory.
__version__ = "0.1.0"
