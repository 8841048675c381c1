"""Every Redis key the service uses, in one place.

RQ keeps its own keys (``rq:*``); everything here lives under ``qvl:``.
"""

from __future__ import annotations

PREFIX = "qvl"


def session_meta(session_id: str) -> str:
    """Hash: status, job id, finish reason, usage, error, owner, timestamps."""
    return f"{PREFIX}:session:{session_id}"


def session_events(session_id: str) -> str:
    """Stream of the session's output events; entry ``0-(n+1)`` is event ``n``."""
    return f"{PREFIX}:session:{session_id}:events"


def session_cancel(session_id: str) -> str:
    """Flag the worker's engine reads at every decoding step, with the step's writes."""
    return f"{PREFIX}:session:{session_id}:cancel"


def session_lease(session_id: str) -> str:
    """Expiring key a live worker keeps renewing while it generates for the session."""
    return f"{PREFIX}:session:{session_id}:lease"


def session_attached(session_id: str) -> str:
    """Expiring key the gateways renew while at least one client follows the session."""
    return f"{PREFIX}:session:{session_id}:attached"


def active_sessions() -> str:
    """Set of queued or running session ids, watched by the gateways' reaper."""
    return f"{PREFIX}:sessions:active"


def live_workers() -> str:
    """Sorted set: worker name scored by the time its presence expires."""
    return f"{PREFIX}:workers"


def job_inline_media(job_id: str) -> str:
    """Hash: field ``n`` holds the base64 text of a job's ``n``-th inline image or video.

    Written by the gateway before it enqueues the job, deleted by the worker once it has
    read it (or by a cancel while queued); it expires with the session otherwise.
    """
    return f"{PREFIX}:job:{job_id}:media"


def session_keys(session_id: str) -> list[str]:
    """The keys that together make up one session, in the order the scripts expect."""
    return [
        session_meta(session_id),
        session_events(session_id),
        session_cancel(session_id),
        session_lease(session_id),
        session_attached(session_id),
        active_sessions(),
    ]
