from __future__ import annotations

import pytest

from shared.settings import Settings


def test_defaults_match_the_original_server(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    for name in ("PORT", "MODEL_REPO_ID", "MAX_TOKENS", "TEMPERATURE", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.port == 3000
    assert settings.model_repo_id == "Qwen/Qwen3-VL-2B-Thinking"
    assert settings.max_tokens == 256 and settings.temperature == 0.7
    assert settings.max_video_frames == 16
    assert settings.sessions_ttl_seconds == 600
    assert settings.cancel_after_disconnect_seconds == 3600
    assert settings.redis_url == "redis://localhost:6379/0"


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / ".env").write_text("PORT=4000\nMAX_TOKENS=9\n")
    monkeypatch.chdir(directory)
    monkeypatch.setenv("PORT", "5000")
    monkeypatch.delenv("MAX_TOKENS", raising=False)
    settings = Settings()
    assert settings.port == 5000
    assert settings.max_tokens == 9


def test_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", " a, b ,,c")
    monkeypatch.setenv("SERVED_MODEL_NAME", "")
    settings = Settings()
    assert settings.api_keys == ["a", "b", "c"]
    assert settings.model_name == settings.model_repo_id


def test_media_limits_have_defaults_and_read_host_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("ALLOWED_MEDIA_HOSTS", "media.internal, 10.0.0.0/8 ,127.0.0.1")
    settings = Settings()
    assert settings.allowed_media_hosts == ["media.internal", "10.0.0.0/8", "127.0.0.1"]
    assert settings.max_request_body_bytes == 32 * 1024 * 1024
    assert settings.max_image_bytes == 20 * 1024 * 1024 and settings.max_video_bytes == 100 * 1024 * 1024
    assert settings.max_media_items == 16 and settings.max_image_pixels == 40_000_000
    assert settings.max_video_seconds == 600 and settings.media_fetch_timeout_seconds == 15
