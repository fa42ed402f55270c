"""The evidence lifecycle after offload: access register and approved exports, case tags,
fixity audits. Each step is a custody-ledger entry written before the step takes effect."""
