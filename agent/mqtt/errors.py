"""Errors of the MQTT reporting package."""

from __future__ import annotations


class MqttError(Exception):
    """Base of every MQTT reporting error."""


class ConnectFailed(MqttError):
    """The broker could not be reached or refused the connection."""


class ConnectionLost(MqttError):
    """The connection dropped; in-flight publishes were not acknowledged."""


class PublishRejected(MqttError):
    """The broker answered a publish with a failure reason code (e.g. not authorised)."""


class PayloadInvalid(MqttError):
    """A payload does not match its JSON Schema."""


class CommandRejected(MqttError):
    """A command action refused the request; the message is sent back as the reason."""
