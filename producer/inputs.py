"""Request bodies in: JSON, job specs (the content type is checked by `jobstream.http_errors`).

Bodies are parsed here rather than by FastAPI so that every way a body can be wrong gets
its own status and a sentence naming the field: 400 for JSON that does not parse, 415 for
another content type, 413 over a limit, 422 for a field that is wrong. What a job must
satisfy beyond its fields' types (numbers, payload and record sizes) is checked by
`producer.job_checks`. A batch is validated in one pass with a `TypeAdapter`; an invalid
item is reported by index and does not sink the others.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from jobstream.http_errors import (
    FieldError,
    InvalidInput,
    InvalidJson,
    ItemError,
    TooLarge,
    describe_errors,
    parse_model,
)
from producer.job_checks import Limits, check_job, may_hold_nonfinite
from schemas import JobSpec

_SPECS: TypeAdapter[list[JobSpec]] = TypeAdapter(list[JobSpec])


def parse_job(body: bytes, limits: Limits) -> JobSpec:
    """One job spec from a `POST /jobs` body; raises an `ApiError` saying what is wrong."""
    spec = parse_model(JobSpec, body, "invalid job")
    check_job(spec, limits, nonfinite=may_hold_nonfinite(body))
    return spec


def parse_batch(body: bytes, max_batch: int, limits: Limits) -> list[JobSpec | ItemError]:
    """The items of a `POST /jobs/batch` body, in order: a spec, or why the item was refused.

    The envelope (`{"jobs": [...]}`, 1..max_batch items) must be right as a whole; items
    are judged one by one.
    """
    try:
        doc = from_json(body)
    except ValueError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid("body", 'must be a JSON object like {"jobs": [...]}')
    for name in doc:
        if name != "jobs":
            raise _invalid(str(name), "is not a known field")
    if "jobs" not in doc:
        raise _invalid("jobs", "is required")
    jobs = doc["jobs"]
    if not isinstance(jobs, list):
        raise _invalid("jobs", "must be a JSON array of jobs")
    if not jobs:
        raise _invalid("jobs", "must hold at least one job")
    if len(jobs) > max_batch:
        raise TooLarge(
            f"a batch holds at most {max_batch} jobs (max_batch); this one has {len(jobs)}",
            limit=max_batch,
        )
    items: list[JobSpec | ItemError] = []
    try:
        items.extend(_SPECS.validate_python(jobs))
    except ValidationError as exc:
        items = _judge_each(jobs, exc)
    nonfinite = may_hold_nonfinite(body)
    for i, item in enumerate(items):
        if isinstance(item, JobSpec):
            try:
                check_job(item, limits, nonfinite=nonfinite)
            except (InvalidInput, TooLarge) as exc:
                items[i] = ItemError.of(exc)
    return items


def _judge_each(jobs: list[Any], exc: ValidationError) -> list[JobSpec | ItemError]:
    """Split one failed list validation into per-item errors; validate the rest again."""
    by_index: dict[int, list[Any]] = {}
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        index = loc[0] if loc and isinstance(loc[0], int) else 0
        by_index.setdefault(index, []).append({**err, "loc": loc[1:]})
    good = [i for i in range(len(jobs)) if i not in by_index]
    specs = iter(_SPECS.validate_python([jobs[i] for i in good]))
    out: list[JobSpec | ItemError] = []
    for i in range(len(jobs)):
        if i in by_index:
            detail, errors = describe_errors(by_index[i], "invalid job")
            out.append(ItemError(422, detail, errors))
        else:
            out.append(next(specs))
    return out


def _invalid(name: str, message: str) -> InvalidInput:
    return InvalidInput(f"invalid batch: field '{name}' {message}", [FieldError(name, message)])
