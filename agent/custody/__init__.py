"""Custody made portable: ledger bundles and the stand-alone verifier (`dock-verify`)."""
