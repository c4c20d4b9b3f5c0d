"""labcore.video on videos the tests write: counts, colours, ALPRO's index rules, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from labcore.cli import UserError
from labcore.video import (
    CLIP_MEAN,
    CLIP_STD,
    TooFewFramesError,
    VideoDecodeError,
    count_frames,
    decode_all,
    decode_frames,
    normalize_frames,
    read_video,
    sample_indices,
    write_video,
)

RED = (220, 30, 30)
BG = 128
T_SRC = 16


def _frames(t: int = T_SRC, h: int = 64, w: int = 64) -> np.ndarray:
    """A grey clip with a 20x20 red square moving right by 2 px per frame."""
    x = np.full((t, h, w, 3), BG, np.uint8)
    for i in range(t):
        x[i, 20:40, 2 * i : 2 * i + 20] = RED
    return x


@pytest.fixture(scope="module", params=["mp4", "avi", "mkv"])
def clip(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / f"clip.{request.param}"
    write_video(path, _frames(), fps=8)
    return path


def test_frame_count_equals_written(clip):
    assert count_frames(clip) == T_SRC
    assert decode_all(clip).shape == (T_SRC, 64, 64, 3)


def test_object_colour_within_25(clip):
    frames = decode_all(clip)
    for i in (0, 7, 15):
        interior = frames[i, 24:36, 2 * i + 4 : 2 * i + 16].reshape(-1, 3).astype(float).mean(0)
        assert np.abs(interior - np.array(RED)).max() <= 25, (i, interior)
        background = frames[i, 50:60, 0:10].reshape(-1, 3).astype(float).mean(0)
        assert np.abs(background - BG).max() <= 25
    # the object moved: frame 15's square starts at x=30, which is background in frame 0
    assert frames[0, 30, 45, 0] < 170 and frames[15, 30, 45, 0] > 190


def test_decode_frames_matches_decode_all(clip):
    full = decode_all(clip)
    idx = [9, 2, 2, 15, 0]
    np.testing.assert_array_equal(decode_frames(clip, idx), full[idx])
    small = decode_frames(clip, [3], size=(32, 48))
    assert small.shape == (1, 32, 48, 3)


def test_read_video_normalised_matches_formula(clip):
    rng = np.random.default_rng(3)
    raw = read_video(clip, 8, "uniform", size=None, normalize=False)
    assert raw.dtype == torch.uint8 and raw.shape == (8, 3, 64, 64)
    full = decode_all(clip)
    np.testing.assert_array_equal(raw.permute(0, 2, 3, 1).numpy(), full[::2])
    x = read_video(clip, 8, "uniform", size=None, normalize=True, rng=rng)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (raw.float() / 255 - mean) / std)
    assert abs(CLIP_MEAN[0] - 0.4815) < 1e-4 and abs(CLIP_STD[2] - 0.2758) < 1e-4
    r = read_video(clip, 4, "headtail", size=32, rng=rng)
    assert r.shape == (4, 3, 32, 32) and r.dtype == torch.float32


@pytest.mark.parametrize("L,T", [(16, 8), (30, 16), (100, 16), (17, 4), (16, 16)])
def test_index_rules(L, T):
    rng = np.random.default_rng(0)
    for _ in range(200):
        r = sample_indices(L, T, "rand", rng)
        assert r.shape == (T,) and r.dtype == np.int64
        assert np.all(np.diff(r) > 0) and r.min() >= 0 and r.max() < L
        h = sample_indices(L, T, "headtail", rng)
        assert np.all(np.diff(h) > 0) and h.min() >= 0 and h.max() < L
        assert (h < L // 2).sum() == T // 2 and (h >= L // 2).sum() == T // 2
    u = sample_indices(L, T, "uniform")
    np.testing.assert_array_equal(u, [k * L // T for k in range(T)])
    np.testing.assert_array_equal(u, sample_indices(L, T, "uniform", np.random.default_rng(9)))


def test_rand_covers_every_index_evenly():
    rng = np.random.default_rng(1)
    counts = np.bincount(np.concatenate([sample_indices(20, 5, "rand", rng) for _ in range(4000)]))
    # each index is drawn with probability 5/20: 1000 of 4000 draws, binomial sd ~27
    assert counts.shape == (20,) and np.abs(counts - 1000).max() < 150


def test_uniform_legacy_reproduces_numpy_int_arange():
    np.testing.assert_array_equal(sample_indices(32, 16, "uniform", legacy_int_arange=True),
                                  sample_indices(32, 16, "uniform"))  # fmt: skip
    # ALPRO's np.arange(0, L, L/T, dtype=int): the step becomes int(L/T), so the first 16 frames
    np.testing.assert_array_equal(sample_indices(30, 16, "uniform", legacy_int_arange=True),
                                  np.arange(16))  # fmt: skip
    assert sample_indices(30, 16, "uniform")[-1] == 28


def test_sampling_errors():
    with pytest.raises(TooFewFramesError):
        sample_indices(7, 8, "rand", np.random.default_rng(0))
    with pytest.raises(TooFewFramesError):
        sample_indices(7, 8, "headtail", np.random.default_rng(0))
    with pytest.raises(UserError, match="even"):
        sample_indices(30, 5, "headtail")
    with pytest.raises(UserError, match="strategy"):
        sample_indices(30, 4, "middle")
    assert issubclass(TooFewFramesError, VideoDecodeError)
    assert issubclass(VideoDecodeError, UserError)
    assert sample_indices(5, 8, "uniform").tolist() == [0, 0, 1, 1, 2, 3, 3, 4]


def test_too_short_video_raises_naming_file(tmp_path):
    p = write_video(tmp_path / "short.mp4", _frames(t=4), fps=8)
    with pytest.raises(TooFewFramesError, match=r"short\.mp4"):
        read_video(p, 8, "rand", size=32, rng=np.random.default_rng(0))


def test_bad_files_raise_decode_error(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 200)
    with pytest.raises(VideoDecodeError, match=r"garbage\.mp4"):
        read_video(garbage, 4)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty\.avi"):
        read_video(empty, 4)
    good = write_video(tmp_path / "cut.mp4", _frames(), fps=8)
    data = good.read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError, match=r"truncated\.mp4"):
        read_video(cut, 16, "rand", rng=np.random.default_rng(0))
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4", 4)


def test_write_video_validates_input(tmp_path):
    with pytest.raises(UserError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(UserError, match="even"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 9, 8, 3), np.uint8))
    with pytest.raises(UserError, match="codec"):
        write_video(tmp_path / "a.xyz", np.zeros((2, 8, 8, 3), np.uint8))


def test_normalize_channels_last():
    x = np.full((2, 4, 4, 3), 255, np.uint8)
    y = normalize_frames(x, channels_last=True)
    assert y.shape == (2, 3, 4, 4)
    assert y[0, 1, 0, 0].item() == pytest.approx((1 - CLIP_MEAN[1]) / CLIP_STD[1], rel=1e-6)
