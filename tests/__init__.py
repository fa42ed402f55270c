"""The test suite (a package, so test helpers have one import name: tests.<area>.<module>)."""
