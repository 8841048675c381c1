from __future__ import annotations

from shared import keys


def test_session_keys_are_distinct_and_share_the_prefix() -> None:
    names = keys.session_keys("s1")
    assert len(set(names)) == len(names) == 8
    assert all(name.startswith(f"{keys.PREFIX}:") for name in names)
    assert names == [
        keys.session_meta("s1"),
        keys.session_events("s1"),
        keys.session_cancel("s1"),
        keys.session_lease("s1"),
        keys.session_attached("s1"),
        keys.active_sessions(),
        keys.session_tokens("s1"),
        keys.session_media("s1"),
    ]


def test_sessions_do_not_share_keys() -> None:
    assert not set(keys.session_keys("a")) & set(keys.session_keys("b")) - {keys.active_sessions()}
