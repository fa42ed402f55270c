"""The recorder serial protocol, host side (docs/protocol.md).

- ``messages``: every message declared once (fields, type id, reply, retry policy),
  ``ErrorCode``, ``LogKind``, ``FirmwareResult``; ``fields``: the wire field kinds.
- ``codec``: framing (COBS + CRC-32 + request ids), ``FrameDecoder`` (sans-I/O).
- ``connection``: ``ClientConnection``, the host's protocol state machine (sans-I/O).
- ``client``: ``RecorderClient``, its asyncio shell over a serial port (``transport``).
- ``fwpackage``: signed firmware packages (codec and trust checks).
- ``errors``: ``BridgeError`` and its subclasses.

The device side (``hw_sim.endpoint``) belongs to the simulators, not to this package.
"""
