"""The dock's command topics: read each live command, answer it on its reply route.

Retained commands are refused unread (a retained message comes again with every
(re)subscribe, so acting on it would repeat it); messages outside the command prefix are
ignored. Each command is answered in its own task, so a slow one blocks no other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agent.mqtt.command_processor import CommandProcessor, reply_route
from agent.mqtt.errors import MqttError
from agent.mqtt.topics import Topics
from agent.mqtt.transport import Message, Transport

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], None]


async def read_commands(transport: Transport, topics: Topics, processor: CommandProcessor,
                        spawn: Spawn) -> None:
    """Until the connection closes (raises ConnectionLost)."""
    while True:
        msg = await transport.next_message()
        if not msg.topic.startswith(topics.command_prefix):
            log.warning("ignoring message on unexpected topic %r", msg.topic[:200])
            continue
        if msg.retain:
            log.warning("ignoring retained command on %r (%d bytes): commands are carried"
                        " out only when sent live, not retained", msg.topic[:200],
                        len(msg.payload))
            continue
        spawn(answer(transport, topics, processor, msg))


async def answer(transport: Transport, topics: Topics, processor: CommandProcessor,
                 msg: Message) -> None:
    name = msg.topic[len(topics.command_prefix):]
    route = reply_route(topics, name, msg.response_topic, msg.correlation_data)
    try:
        reply = await processor.handle(name, msg.payload, refuse=route.problem)
    except Exception:
        log.exception("command on %r not answered", msg.topic[:200])
        return
    try:
        await transport.publish(route.topic, reply, correlation_data=route.correlation_data)
    except (MqttError, ValueError) as exc:
        log.warning("reply to the command on %r not sent: %s", msg.topic[:200], exc)
