"""Mounting recorder storage read-only for the unprivileged agent.

`mounter` is what the agent calls; `helper` is the small root service that does the
mounting (see docs/mounting.md).
"""
