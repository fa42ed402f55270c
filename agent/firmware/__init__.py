"""Recorder firmware on the dock: staged signed packages, per-model policy and updates.

    staging  (dockctl firmware add, central stage-firmware) -> firmware_packages + ledger
    policy   (config + central set-firmware-policy, pure decision rules)
    updater  (one docked recorder: begin -> chunks -> commit -> reboot; resumable)
    service  (the session's hook after a verified offload; status for dockctl and MQTT)

Everything here is below the docking session: the session calls `FirmwareService.after_offload`
once its footage is safe; nothing here reaches back into the session.
"""
