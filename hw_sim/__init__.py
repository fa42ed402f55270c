"""Hardware simulator: virtual recorders on ptys, a virtual dock, and `dock-sim`.

spec (RecorderSpec, FootageSpec, Faults) -> recorder (VirtualRecorder: firmware on a pty,
storage on disk) -> dock (VirtualDock: bays + announcement socket) -> cli (dock-sim).
footage: deterministic content and `expected_files`; faultfs/fusemount: file-layer faults.
See docs/simulator.md.
"""
