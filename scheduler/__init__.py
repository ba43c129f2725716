"""The delay scheduler: jobs that wait in Redis until they are due, then go to Kafka.

This room owns the Redis delay store (`DelayStore`: the due-time set, the claim in Lua
with its lease, cancellation) and the scheduler loop that fires due jobs to their priority
topics (`Scheduler`), which runs inside the API process (`JOBSTREAM_SCHEDULER=true`) and
as a process of its own (`jobstream scheduler`: `run_scheduler`). Storing a delayed job
at submit time is the API's side (`producer.delayed`); recurring schedules will live here.
"""

from __future__ import annotations

from scheduler.loop import Scheduler
from scheduler.run import run_scheduler
from scheduler.store import CANCELLED, CANCELLED_WHILE_CLAIMED, DelayStore

__all__ = ["CANCELLED", "CANCELLED_WHILE_CLAIMED", "DelayStore", "Scheduler", "run_scheduler"]
