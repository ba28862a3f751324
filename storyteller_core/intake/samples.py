"""Synthetic sample videos (PyAV): for trying the app, tests and benchmarks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_video(
    path: Path,
    seconds: float = 1.0,
    size: tuple[int, int] = (64, 48),
    fps: int = 10,
    audio: bool = True,
    seed: int = 0,
) -> Path:
    """Write a small H.264 MP4 of moving colour bars (and a tone when ``audio``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "35"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        frames = max(1, int(seconds * fps))
        x = np.arange(width, dtype=np.int32)
        for i in range(frames):
            row = ((x * 3 + i * 8 + seed * 7) % 256).astype(np.uint8)  # 7 and 256 coprime: 256 distinct seeds
            rgb = np.stack(
                [
                    np.tile(row, (height, 1)),
                    np.full((height, width), (seed * 11 + seed // 256) % 256, np.uint8),
                    np.tile(row[::-1], (height, 1)),
                ],
                axis=-1,
            )
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            _write_tone(out, sound, seconds)
    return path


def _write_tone(out: av.container.OutputContainer, sound: av.AudioStream, seconds: float) -> None:
    rate, block = 16000, 1024
    total = int(rate * seconds)
    t = np.arange(total, dtype=np.float32) / rate
    wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, total, block):
        frame = av.AudioFrame.from_ndarray(wave[None, start : start + block], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in sound.encode(frame):
            out.mux(packet)
    for packet in sound.encode():
        out.mux(packet)


def make_batch(folder: Path, count: int, seconds: float = 1.0) -> list[Path]:
    return [make_video(folder / f"clip-{i:03d}.mp4", seconds=seconds, seed=i) for i in range(count)]
