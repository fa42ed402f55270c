"""Scenario files shipped with the simulator (see docs/simulator.md)."""
