"""The gateway's reading of image and video parts: every form, and cheap refusals."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from api.errors import APIError, BadRequest, PayloadTooLarge
from api.media_parts import MediaLimits, base64_size
from api.protocol import ChatCompletionRequest, to_messages
from shared.jobs import GenerationJob, ImagePart, SamplingParams, TextPart, VideoPart

LIMITS = MediaLimits(max_items=4, max_image_bytes=1000, max_video_bytes=3000)
PIXELS = base64.b64encode(b"\x89PNG fake bytes").decode()


def convert(*parts: dict[str, Any], **fields: Any) -> tuple[list[Any], list[str]]:
    request = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": list(parts)}], **fields}
    )
    messages, inline = to_messages(request, LIMITS)
    return messages[0].content, inline


def refusal(*parts: dict[str, Any], **fields: Any) -> APIError:
    with pytest.raises(APIError) as raised:
        convert(*parts, **fields)
    return raised.value


def test_every_content_form_becomes_a_job_part() -> None:
    parts, inline = convert(
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXELS}"}},
        {"type": "input_image", "b64_json": PIXELS},
        {"type": "video_url", "video_url": {"url": "http://example.com/clip.mp4"}},
    )
    assert isinstance(parts[0], TextPart)
    assert parts[1] == ImagePart(url="https://example.com/a.png", param="messages[0].content[1]")
    assert parts[2] == ImagePart(inline=0, param="messages[0].content[2]")
    assert parts[3] == ImagePart(inline=1, param="messages[0].content[3]")
    assert parts[4] == VideoPart(url="http://example.com/clip.mp4", param="messages[0].content[4]")
    assert inline == [PIXELS, PIXELS]


def test_inline_videos_in_both_forms() -> None:
    parts, inline = convert(
        {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{PIXELS}"}},
        {"type": "input_video", "b64_json": PIXELS},
    )
    assert [type(part) for part in parts] == [VideoPart, VideoPart]
    assert [part.inline for part in parts] == [0, 1] and len(inline) == 2


def test_the_job_keeps_inline_bytes_out_and_round_trips_as_json() -> None:
    parts, _ = convert({"type": "input_image", "b64_json": PIXELS}, {"type": "text", "text": "hi"})
    job = GenerationJob(
        session_id="s",
        model="m",
        created=0,
        messages=[{"role": "user", "content": parts}],
        sampling=SamplingParams(max_new_tokens=1),
        inline_media_key="qvl:job:j:media",
    )
    payload = job.model_dump(mode="json")
    assert PIXELS not in str(payload)
    assert GenerationJob.model_validate(payload) == job
    assert job.media_parts() == [parts[0]]


def test_frame_budget_takes_the_smaller_of_part_and_request() -> None:
    video = {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}
    parts, _ = convert(
        video, {**video, "max_video_frames": 2}, {**video, "max_video_frames": 50}, max_video_frames=8
    )
    assert [part.max_frames for part in parts] == [8, 2, 8]
    parts, _ = convert(video)
    assert parts[0].max_frames is None


@pytest.mark.parametrize(
    ("part", "code"),
    [
        ({"type": "audio_url", "audio_url": {"url": "https://example.com/a.mp3"}}, "invalid_content_part"),
        ({"type": "image_url"}, "invalid_content_part"),
        ({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, "invalid_media_url"),
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "invalid_media_url"),
        ({"type": "image_url", "image_url": {"url": "https:///no-host"}}, "invalid_media_url"),
        ({"type": "image_url", "image_url": {"url": "http://example.com:99999/a.png"}}, "invalid_media_url"),
        (
            {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGVsbG8="}},
            "unsupported_media_type",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:video/mp4;base64,aGVsbG8="}},
            "unsupported_media_type",
        ),
        (
            {"type": "video_url", "video_url": {"url": "data:image/png;base64,aGVsbG8="}},
            "unsupported_media_type",
        ),
        ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "invalid_data_uri"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64"}}, "invalid_data_uri"),
        ({"type": "input_image", "b64_json": "abc"}, "invalid_base64"),
        ({"type": "input_image", "b64_json": ""}, "invalid_base64"),
        ({"type": "input_image", "b64_json": "https://example.com/a.png"}, "invalid_base64"),
        ({"type": "input_image", "b64_json": 42}, "invalid_base64"),
        ({"type": "input_video", "b64_json": PIXELS, "max_video_frames": 0}, "invalid_value"),
    ],
)
def test_bad_parts_are_400_naming_the_part(part: dict[str, Any], code: str) -> None:
    error = refusal({"type": "text", "text": "look"}, part)
    assert isinstance(error, BadRequest)
    assert error.param == "messages[0].content[1]" and error.code == code
    assert error.message.startswith("messages[0].content[1]: ")


def test_oversize_inline_media_is_413_naming_the_limit() -> None:
    big_image = base64.b64encode(bytes(1001)).decode()
    error = refusal({"type": "input_image", "b64_json": big_image})
    assert isinstance(error, PayloadTooLarge) and error.status_code == 413
    assert "MAX_IMAGE_BYTES" in error.message and error.param == "messages[0].content[0]"
    # The same bytes fit the video limit.
    convert({"type": "input_video", "b64_json": big_image})


def test_too_many_items_is_400_naming_the_limit() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    convert(*[image] * 4)
    error = refusal(*[image] * 5)
    assert error.code == "too_many_media_items" and "MAX_MEDIA_ITEMS" in error.message


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 100, 1001])
def test_base64_size_is_exact_without_decoding(size: int) -> None:
    encoded = base64.b64encode((bytes(range(256)) * 4)[:size]).decode()
    assert base64_size(encoded) == (size or None)
    # As the `base64` tool writes it: lines of 76 characters.
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    assert base64_size(wrapped) == (size or None)


def test_base64_size_refuses_impossible_lengths() -> None:
    assert base64_size("abcde") is None
    assert base64_size("") is None
