"""Video decoding and ALPRO-style frame sampling on PyAV (the optional extra ``labcore[video]``).

Three pieces, from the index rule to the tensor a model sees:

- :func:`sample_indices` picks ``T`` of ``L`` source frames, as ALPRO's decord loader does:

  - ``rand``: ``T`` distinct indices drawn uniformly from ``range(L)``, sorted;
  - ``uniform``: the deterministic stride ``L/T``, ``i_k = floor(k * L / T)``, ``k = 0..T-1``;
  - ``headtail``: ``T/2`` sorted distinct indices from ``range(L // 2)`` and ``T/2`` from
    ``range(L // 2, L)``.

  ALPRO writes ``uniform`` as ``np.arange(0, L, L / T, dtype=int)``. With an integer dtype numpy
  casts the *step* to ``int(L / T)`` after computing the length ``ceil(T)``, so for ``L`` not a
  multiple of ``T`` it returns the first ``T`` frames at stride ``floor(L/T)`` (``L=30, T=16`` gives
  ``0..15``; ``L < T`` gives all zeros). The intended stride is the default here; the exact numpy
  behaviour is ``legacy_int_arange=True``. Both agree when ``T`` divides ``L``.
  ALPRO drops a video with too few frames for ``rand``/``headtail`` (``random.sample`` raises and
  the loader returns ``None``); here that is :class:`TooFewFramesError`, a
  :class:`VideoDecodeError`, so the dataset layer can draw another video just the same.
- :func:`decode_frames` decodes with PyAV once through the stream, converting (and resizing, in
  swscale) only the requested frames, and stops after the last one. :func:`decode_all` is the naive
  decode-everything path, used for caching and as the baseline of the packages' benches.
- :func:`read_video` = count, sample, decode, then ``(T, 3, H, W)``: uint8, or float32 normalised
  with the CLIP statistics (:data:`CLIP_MEAN`, :data:`CLIP_STD`) that ALPRO uses.

:func:`write_video` writes ``(T, H, W, 3)`` uint8 frames (``.mp4``: ``mpeg4``; ``.avi``: ``mjpeg``),
for fixtures and synthetic data sets. ``av`` is imported inside the functions, so importing this
module costs nothing when PyAV is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from labcore.cli import UserError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "STRATEGIES",
    "TooFewFramesError",
    "VideoDecodeError",
    "count_frames",
    "decode_all",
    "decode_frames",
    "normalize_frames",
    "read_video",
    "sample_indices",
    "write_video",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
STRATEGIES = ("rand", "uniform", "headtail")


class VideoDecodeError(UserError):
    """A video file that cannot be opened or decoded (message names the file)."""


class TooFewFramesError(VideoDecodeError):
    """The video has fewer frames than the sampling strategy needs."""


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise UserError(
            "labcore.video needs PyAV: pip install 'labcore[video]' (or: pip install av)"
        ) from None
    return av


def sample_indices(
    num_source_frames: int,
    num_frames: int,
    strategy: str,
    rng: np.random.Generator | None = None,
    *,
    legacy_int_arange: bool = False,
) -> np.ndarray:
    """``num_frames`` indices into ``range(num_source_frames)`` by ALPRO's rule (module docstring).

    Returns an int64 array of shape ``(num_frames,)``, sorted. ``rng`` (a numpy Generator) drives
    ``rand`` and ``headtail``; ``None`` draws from a fresh unseeded generator.
    """
    L, T = int(num_source_frames), int(num_frames)
    if strategy not in STRATEGIES:
        raise UserError(f"frame sampling strategy must be one of {STRATEGIES}, got {strategy!r}")
    if T < 1:
        raise UserError(f"num_frames must be >= 1, got {T}")
    if L < 1:
        raise TooFewFramesError("video has no frames")
    if strategy == "uniform":
        if legacy_int_arange:
            return np.arange(0, L, L / T, dtype=int).astype(np.int64)
        return (np.arange(T, dtype=np.int64) * L) // T
    rng = rng if rng is not None else np.random.default_rng()
    if strategy == "rand":
        if L < T:
            raise TooFewFramesError(f"rand sampling needs >= {T} frames, the video has {L}")
        return np.sort(rng.choice(L, size=T, replace=False)).astype(np.int64)
    if T % 2:
        raise UserError(f"headtail sampling needs an even num_frames, got {T}")
    half, h = L // 2, T // 2
    if half < h or L - half < h:
        raise TooFewFramesError(f"headtail sampling needs >= {T} frames, the video has {L}")
    head = np.sort(rng.choice(half, size=h, replace=False))
    tail = half + np.sort(rng.choice(L - half, size=h, replace=False))
    return np.concatenate([head, tail]).astype(np.int64)


def _size_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise UserError(f"frame size must be positive, got {size!r}")
    return h, w


def _open(path: Path):
    av = _av()
    if not path.is_file():
        raise FileNotFoundError(2, "video not found", str(path))
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoDecodeError(f"cannot open video {path}: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"no video stream in {path}")
    return container


def count_frames(path: str | Path) -> int:
    """Number of frames in the first video stream: the container's count, else demuxed packets."""
    path = Path(path)
    av = _av()
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return int(stream.frames)
        n = 0
        for packet in container.demux(stream):
            if packet.size > 0:
                n += 1
        return n
    except av.FFmpegError as e:
        raise VideoDecodeError(f"cannot read video {path}: {e}") from None
    finally:
        container.close()


def _to_rgb(frame, hw: tuple[int, int] | None) -> np.ndarray:
    if hw is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", height=hw[0], width=hw[1], interpolation="BILINEAR")


def decode_frames(
    path: str | Path, indices: Sequence[int], size: int | Sequence[int] | None = None
) -> np.ndarray:
    """The frames at ``indices`` (any order, repeats allowed) as uint8 ``(len(indices), H, W, 3)``.

    One pass through the stream; only the requested frames are converted to RGB (and resized to
    ``size``, an int or ``(H, W)``); decoding stops after the largest index. Raises
    :class:`VideoDecodeError` if the file does not decode or ends before an index.
    """
    path = Path(path)
    av = _av()
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0:
        raise UserError(f"indices must be a non-empty 1-d sequence, got shape {idx.shape}")
    if idx.min() < 0:
        raise UserError(f"frame indices must be >= 0, got {int(idx.min())}")
    hw = _size_hw(size)
    wanted = set(idx.tolist())
    last = int(idx.max())
    got: dict[int, np.ndarray] = {}
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = _to_rgb(frame, hw)
            if i >= last:
                break
    except (av.FFmpegError, ValueError) as e:
        raise VideoDecodeError(f"cannot decode video {path}: {e}") from None
    finally:
        container.close()
    if len(got) < len(wanted):
        raise VideoDecodeError(
            f"video {path} ended after {len(got) and max(got) + 1} decodable frames; "
            f"frame {last} was requested"
        )
    return np.stack([got[i] for i in idx.tolist()])


def decode_all(path: str | Path, size: int | Sequence[int] | None = None) -> np.ndarray:
    """Every frame as uint8 ``(L, H, W, 3)``: the naive path (and the cache-filling one)."""
    path = Path(path)
    av = _av()
    hw = _size_hw(size)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [_to_rgb(f, hw) for f in container.decode(stream)]
    except (av.FFmpegError, ValueError) as e:
        raise VideoDecodeError(f"cannot decode video {path}: {e}") from None
    finally:
        container.close()
    if not frames:
        raise VideoDecodeError(f"video {path} has no decodable frames")
    return np.stack(frames)


def normalize_frames(
    frames: torch.Tensor | np.ndarray, channels_last: bool = False
) -> torch.Tensor:
    """uint8 frames → float32 ``(T, 3, H, W)``: ``(x / 255 - CLIP_MEAN) / CLIP_STD`` per channel.

    ``frames`` is ``(T, 3, H, W)``, or ``(T, H, W, 3)`` with ``channels_last=True``.
    """
    x = torch.as_tensor(frames)
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] != 3:
        raise UserError(f"frames must be (T, 3, H, W), got {tuple(x.shape)}")
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def read_video(
    path: str | Path,
    num_frames: int,
    strategy: str = "uniform",
    size: int | Sequence[int] | None = 224,
    normalize: bool = True,
    rng: np.random.Generator | None = None,
    *,
    legacy_int_arange: bool = False,
) -> torch.Tensor:
    """Decode ``num_frames`` frames sampled by ``strategy`` (:func:`sample_indices`).

    Returns ``(T, 3, H, W)``: float32 CLIP-normalised if ``normalize``, else uint8. ``size``: an
    int (square) or ``(H, W)`` to resize to, or ``None`` for the native size. A file that does not
    decode, or is too short for the strategy, raises :class:`VideoDecodeError` naming it.
    """
    path = Path(path)
    n = count_frames(path)
    try:
        idx = sample_indices(n, num_frames, strategy, rng, legacy_int_arange=legacy_int_arange)
    except TooFewFramesError as e:
        raise TooFewFramesError(f"{path}: {e}") from None
    try:
        frames = decode_frames(path, idx, size)
    except VideoDecodeError:
        # the container's frame count can overstate what decodes: count by decoding, resample once
        all_frames = decode_all(path, size)
        if len(all_frames) >= n:
            raise
        try:
            idx = sample_indices(len(all_frames), num_frames, strategy, rng,
                                 legacy_int_arange=legacy_int_arange)  # fmt: skip
        except TooFewFramesError as e:
            raise TooFewFramesError(f"{path}: {e}") from None
        frames = all_frames[idx]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return normalize_frames(x) if normalize else x.contiguous()


def write_video(
    path: str | Path,
    frames: np.ndarray | torch.Tensor,
    fps: int = 8,
    codec: str | None = None,
    bit_rate: int = 4_000_000,
) -> Path:
    """Write uint8 ``(T, H, W, 3)`` RGB frames. ``codec`` defaults by suffix: ``.mp4`` → ``mpeg4``,
    ``.avi`` → ``mjpeg`` (both at high quality). H and W must be even (yuv420 chroma)."""
    av = _av()
    path = Path(path)
    arr = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise UserError(f"frames must be uint8 (T, H, W, 3), got {arr.dtype} {arr.shape}")
    h, w = arr.shape[1:3]
    if h % 2 or w % 2:
        raise UserError(f"frame height and width must be even, got {h}x{w}")
    if codec is None:
        codec = {".mp4": "mpeg4", ".avi": "mjpeg", ".mkv": "mpeg4"}.get(path.suffix.lower())
        if codec is None:
            raise UserError(f"no default codec for {path.suffix!r}; pass codec=")
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps), options={"qmin": "1", "qmax": "3"})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.bit_rate = int(bit_rate)
        for frame in arr:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
