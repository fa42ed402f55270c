"""Building and connecting a paho client (blocking: runs in a worker thread).

TCP connect, TLS handshake and reading certificate and password files all happen here,
off the event loop. Callbacks are attached from a `PahoCallbacks`; paho's own network
thread is never started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.inputfiles import MAX_SECRET_BYTES, InputFileError, read_input_file
from agent.mqtt.errors import ConnectFailed
from agent.settings import MqttSettings

CONNECT_TIMEOUT_S = 10.0


class PahoCallbacks(Protocol):
    """paho's callback API version 2, as the transport implements it."""

    def on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode,
                   props: Properties | None) -> None: ...

    def on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode,
                      props: Properties | None) -> None: ...

    def on_publish(self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode,
                   props: Properties | None) -> None: ...

    def on_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                     rcs: list[ReasonCode], props: Properties | None) -> None: ...

    def on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None: ...

    def on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None: ...

    def on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None: ...


def connect_client(settings: MqttSettings, client_id: str, callbacks: PahoCallbacks, *,
                   session_expiry_s: int, will: tuple[str, bytes, int, bool] | None
                   ) -> paho.Client:
    """A connected paho client (CONNECT sent; CONNACK is awaited by the caller)."""
    s = settings
    v5 = s.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else session_expiry_s == 0,
        reconnect_on_failure=False,
    )
    client.on_connect = callbacks.on_connect
    client.on_disconnect = callbacks.on_disconnect
    client.on_publish = callbacks.on_publish
    client.on_subscribe = callbacks.on_subscribe
    client.on_message = callbacks.on_message
    client.on_socket_close = callbacks.on_socket_close
    client.on_socket_register_write = callbacks.on_register_write
    client.on_socket_unregister_write = callbacks.on_register_write
    # the publish window is kept by the transport (see publish_window.py)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    if s.tls:
        client.tls_set(
            ca_certs=str(s.ca_file) if s.ca_file else None,
            certfile=str(s.cert_file) if s.cert_file else None,
            keyfile=str(s.key_file) if s.key_file else None,
        )
    if s.username is not None:
        password = read_password(s.password_file) if s.password_file else None
        client.username_pw_set(s.username, password)
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    client.connect_timeout = CONNECT_TIMEOUT_S
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry_s
        client.connect(s.host, s.port, keepalive=s.keepalive_s,
                       clean_start=session_expiry_s == 0, properties=props)
    else:
        client.connect(s.host, s.port, keepalive=s.keepalive_s)
    return client


def read_password(path: Path) -> str:
    # a private regular file (never a FIFO or a device): checked again at every connect
    try:
        data = read_input_file(path, "MQTT password file", max_bytes=MAX_SECRET_BYTES,
                               secret=True)
        return data.decode("utf-8").strip()
    except (InputFileError, UnicodeDecodeError) as exc:
        raise ConnectFailed(str(exc)) from None
