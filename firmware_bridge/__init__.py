"""The recorder serial protocol (docs/protocol.md).

- ``messages``: every message as a frozen dataclass, ``ErrorCode``, ``LogKind``.
- ``codec``: framing (COBS + CRC-32 + request ids), ``FrameDecoder`` (sans-I/O).
- ``client``: ``RecorderClient``, the host side over a serial port (asyncio + pyserial).
- ``device``: ``DeviceEndpoint`` (sans-I/O device side), ``DeviceServer`` / ``serve_fd``.
- ``errors``: ``BridgeError`` and its subclasses.
"""
