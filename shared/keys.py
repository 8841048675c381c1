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


def worker_info(worker: str) -> str:
    """A live worker's status for /health (model, batch in use), renewed with its presence."""
    return f"qvl:worker:{worker}"


def active_sessions() -> str:
    """Set of queued or running session ids, watched by the gateways' reaper."""
    return f"{PREFIX}:sessions:active"


def live_workers() -> str:
    """Sorted set: worker name scored by the time its presence expires."""
    return f"{PREFIX}:workers"


def session_tokens(session_id: str) -> str:
    """List of the token ids generated so far, written in the same script as the events.

    A worker that takes over a session whose worker died prefills the prompt and these
    tokens, and replays them through its output parser, so it continues from the next index.
    """
    return f"{PREFIX}:session:{session_id}:tokens"


def session_media(session_id: str) -> str:
    """Hash: field ``n`` holds the base64 text of the request's ``n``-th inline image or video.

    Written by the gateway before it enqueues the job; it stays readable for every attempt
    at the session (a worker that takes over needs it again) and goes when the session ends.
    """
    return f"{PREFIX}:session:{session_id}:media"


def owned_session(owner: str, session_id: str) -> str:
    """The id a session is stored under: the client's id inside its owner's namespace.

    Two API keys may use the same session id without seeing or touching each other's
    session. Session ids cannot contain '/', so no two owners' ids can collide; without
    API keys every caller is the same anonymous owner and the ids are the clients' own.
    """
    return f"{owner}/{session_id}" if owner else session_id


def client_session_id(stored_id: str) -> str:
    """The id the client chose (or was given) for a stored session."""
    return stored_id.rpartition("/")[2]


def session_keys(session_id: str) -> list[str]:
    """The keys that together make up one session, in the order the scripts expect."""
    return [
        session_meta(session_id),
        session_events(session_id),
        session_cancel(session_id),
        session_lease(session_id),
        session_attached(session_id),
        active_sessions(),
        session_tokens(session_id),
        session_media(session_id),
    ]
