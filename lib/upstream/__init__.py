"""The upstream: the client that talks to the router (connection, one attempt, the retry
loop), the relays that pass its server-sent events and large JSON answers on to the caller,
and the redaction of the server's token from everything the upstream says.

It may import `lib.settings`, `lib.errors` and Starlette; never the access layer, schemas
or routes (a relay counts tokens through the `Meter` it is handed).
"""

from lib.upstream.bodies import MAX_RESPONSE_BYTES, parse_json
from lib.upstream.call import UpstreamCall, UpstreamReply
from lib.upstream.chat_relay import Meter, relay_chat_events, relay_generate_events
from lib.upstream.client import UpstreamClient
from lib.upstream.event_stream import (
    DONE_EVENT,
    STREAM_HEADERS,
    EventStreamResponse,
    format_error_event,
    format_event,
)
from lib.upstream.large_json import json_response
from lib.upstream.redaction import Redactor
from lib.upstream.responses_relay import TERMINAL_EVENTS, relay_response_events
from lib.upstream.stream import MAX_EVENT_BYTES, UpstreamStream

__all__ = [
    "DONE_EVENT",
    "MAX_EVENT_BYTES",
    "MAX_RESPONSE_BYTES",
    "STREAM_HEADERS",
    "TERMINAL_EVENTS",
    "EventStreamResponse",
    "Meter",
    "Redactor",
    "UpstreamCall",
    "UpstreamClient",
    "UpstreamReply",
    "UpstreamStream",
    "format_error_event",
    "format_event",
    "json_response",
    "parse_json",
    "relay_chat_events",
    "relay_generate_events",
    "relay_response_events",
]
