"""Media for the tests, made on the spot, and a local HTTP server to fetch them from."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import struct
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
from PIL import Image


def image_bytes(
    size: tuple[int, int] = (64, 48),
    mode: str = "RGB",
    fmt: str = "PNG",
    color: int | tuple[int, ...] = 128,
    exif_orientation: int | None = None,
) -> bytes:
    image = Image.new(mode, size, color)
    buffer = io.BytesIO()
    if exif_orientation is None:
        image.save(buffer, fmt)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(buffer, fmt, exif=exif)
    return buffer.getvalue()


def frame_shade(index: int, count: int) -> int:
    """The red level of frame ``index`` of a ramp clip: frames can be told apart by colour."""
    return round(index * 255 / max(1, count - 1))


def video_bytes(
    frames: int = 24,
    fps: int | Fraction = 8,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    container: str = "mp4",
    keyframe_interval: int | None = None,
) -> bytes:
    """A clip whose frame ``i`` is a flat red of ``frame_shade(i, frames)``."""
    width, height = size
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if keyframe_interval is not None:
            stream.codec_context.gop_size = keyframe_interval
        for index in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[..., 0] = frame_shade(index, frames)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def gif_bytes(frames: int = 10, frame_ms: int = 100, size: tuple[int, int] = (40, 30)) -> bytes:
    """An animated GIF: read by the GIF demuxer, its size from the GIF header."""
    images = [Image.new("RGB", size, (frame_shade(i, frames), 0, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def with_gif_canvas(gif: bytes, width: int, height: int) -> bytes:
    """The GIF with its logical screen and every frame declaring ``width`` x ``height``.

    A few hundred bytes whose frames, decoded, would take width * height * 4 bytes each.
    """
    data = bytearray(gif)
    data[6:10] = struct.pack("<HH", width, height)
    position = 13 + _color_table_size(data[10])
    while data[position] != 0x3B:  # trailer
        if data[position] == 0x2C:  # image descriptor
            data[position + 5 : position + 9] = struct.pack("<HH", width, height)
            position += 10 + _color_table_size(data[position + 9]) + 1  # + LZW code size
        else:  # extension: introducer and label
            position += 2
        while data[position]:  # data sub-blocks
            position += data[position] + 1
        position += 1
    return bytes(data)


def _color_table_size(packed: int) -> int:
    return 3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0


def hls_playlist(segment_url: str) -> bytes:
    """A media playlist naming one segment: FFmpeg's HLS demuxer would fetch the URL."""
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:10.0,\n{segment_url}\n#EXT-X-ENDLIST\n"
    ).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{b64(data)}"


@dataclass
class Route:
    body: bytes = b""
    content_type: str | None = "application/octet-stream"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the answer starts
    chunked: bool = False  # no Content-Length: the size is only known by reading


class MediaServer:
    """A threaded http.server on 127.0.0.1 serving the routes the tests register."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path, Route(b"not found", "text/plain", 404))
                if route.delay and server.stopping.wait(route.delay):
                    return
                self._answer(route)

            def _answer(self, route: Route) -> None:
                self.send_response(route.status)
                if route.content_type:
                    self.send_header("Content-Type", route.content_type)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if route.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(route.body), 65536):
                        piece = route.body[start : start + 65536]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body)

            def handle(self) -> None:
                # The fetcher may hang up midway, e.g. past its byte limit.
                with contextlib.suppress(ConnectionError):
                    super().handle()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class ConnectionRecorder:
    """A TCP listener on 127.0.0.1 that counts the connections it gets and never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed by stop()
            while True:
                connection, _ = self._listener.accept()
                self.connections += 1
                self._accepted.append(connection)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join()
        for connection in self._accepted:
            connection.close()
