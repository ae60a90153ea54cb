"""HL7 v2 messages -> FHIR R4 resources.

The pipeline calls, per delivered file and per message:

- `split_messages(data)`: file bytes -> message texts (framing, batches, separators, charsets);
  `split_file_messages(handle)` the same for a file read in blocks;
- `parse_message(text)`: text -> `Message` with segment/field/component access;
- `message_to_resources(text, hospital=..., terminology=..., overrides=...)`: text -> FHIR dicts;
- `message_type(text)`: ``ADT^A01`` for summaries;
- `check_overrides(overrides)`: a hospital's ``hl7v2:`` conf block checked (ValueError) without a message.

Everything that cannot be parsed or mapped raises `transforms.errors.RecordError`, and nothing else.
"""

from transforms.hl7v2.parse import Field, Message, Repetition, Segment, parse_message, unescape
from transforms.hl7v2.split import split_file_messages, split_messages
from transforms.hl7v2.to_fhir import SUPPORTED_MESSAGE_CODES, check_overrides, message_to_resources, message_type

__all__ = [
    "split_messages", "split_file_messages", "parse_message", "message_to_resources", "message_type",
    "Message", "Segment", "Field", "Repetition", "unescape", "SUPPORTED_MESSAGE_CODES", "check_overrides",
]
