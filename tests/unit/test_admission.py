"""Stream admission: the limits per gateway and per key, and places given back once."""

from __future__ import annotations

import pytest

from api.admission import StreamAdmission
from api.auth import ANONYMOUS, owner_of
from api.errors import KeyStreamsFull, StreamsFull

ALICE = owner_of("key-a")
BOB = owner_of("key-b")


def test_past_the_gateway_limit_a_new_stream_is_refused_with_503() -> None:
    admission = StreamAdmission(max_streams=2, max_streams_per_key=0)
    admission.admit(ALICE)
    admission.admit(BOB)
    with pytest.raises(StreamsFull) as refused:
        admission.admit(BOB)
    assert refused.value.status_code == 503
    assert refused.value.headers is not None and int(refused.value.headers["Retry-After"]) > 0
    assert admission.open == 2


def test_past_its_own_limit_a_key_is_refused_with_429_and_others_are_not() -> None:
    admission = StreamAdmission(max_streams=100, max_streams_per_key=2)
    admission.admit(ALICE)
    admission.admit(ALICE)
    with pytest.raises(KeyStreamsFull) as refused:
        admission.admit(ALICE)
    assert refused.value.status_code == 429
    assert refused.value.headers is not None and int(refused.value.headers["Retry-After"]) > 0
    admission.admit(BOB)
    assert admission.open == 3


def test_the_anonymous_caller_has_no_per_key_limit() -> None:
    admission = StreamAdmission(max_streams=100, max_streams_per_key=1)
    for _ in range(5):
        admission.admit(ANONYMOUS)
    assert admission.open == 5


def test_a_place_is_given_back_once_however_often_it_is_released() -> None:
    admission = StreamAdmission(max_streams=1, max_streams_per_key=1)
    with admission.admit(ALICE) as slot:
        slot.release()
    assert admission.open == 0
    admission.admit(ALICE)  # both limits have room again
    with pytest.raises(StreamsFull):
        admission.admit(BOB)
