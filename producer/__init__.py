"""The producer API: submit jobs to Kafka, look up their state (`create_app`)."""

from __future__ import annotations

from producer.app import create_app

__all__ = ["create_app"]
