"""Errors of the wire contract.

SchemaError
 └── DecodeError   a record's bytes are not a valid message (poison)
"""

from __future__ import annotations


class SchemaError(Exception):
    """Base of every error raised by `schemas`."""


class DecodeError(SchemaError):
    """The bytes of a record do not decode to the message its topic carries."""
