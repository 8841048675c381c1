from __future__ import annotations

from shared import keys


def test_session_keys_are_distinct_and_share_the_prefix() -> None:
    names = keys.session_keys("s1")
    assert len(set(names)) == len(names) == 6
    assert all(name.startswith(f"{keys.PREFIX}:") for name in names)
    assert names[:5] == [
        keys.session_meta("s1"),
        keys.session_events("s1"),
        keys.session_cancel("s1"),
        keys.session_lease("s1"),
        keys.session_attached("s1"),
    ]
    assert names[5] == keys.active_sessions()


def test_sessions_do_not_share_keys() -> None:
    assert not set(keys.session_keys("a")) & set(keys.session_keys("b")) - {keys.active_sessions()}


def test_inline_media_of_a_job_has_its_own_key() -> None:
    assert keys.job_inline_media("j1") != keys.job_inline_media("j2")
    assert keys.job_inline_media("j1").startswith(f"{keys.PREFIX}:")
    assert keys.job_inline_media("j1") not in keys.session_keys("j1")
