"""Tail classes from pixel-frequency statistics, the official ``small_index`` presets, and the
Head/Middle/Tail groups used for evaluation (two different things: the bank's tail list is not
the evaluation's tail group)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "NUM_CLASSES",
    "OFFICIAL_SMALL_INDEX",
    "class_groups",
    "select_tail_classes",
    "small_index_preset",
]

NUM_CLASSES = {"ade20k": 150, "cityscapes": 19, "cocostuff": 171}

# The ``small_index`` lists of the released configs (memory bank tail classes), stored sorted:
# the bank treats them as a set. The ADE list holds every id >= 26.
OFFICIAL_SMALL_INDEX: dict[str, tuple[int, ...]] = {
    "ade20k": tuple(range(26, 150)),
    "cityscapes": (6, 12, 14, 15, 16, 17, 18),
    "cocostuff": tuple(
        sorted(
            (
                3,
                20,
                97,
                89,
                87,
                166,
                16,
                116,
                127,
                72,
                131,
                93,
                55,
                69,
                63,
                17,
                13,
                121,
                62,
                4,
                23,
                22,
                77,
                61,
                95,
                138,
                28,
                98,
                48,
                25,
                135,
                144,
                117,
                113,
                162,
                19,
                8,
                146,
                170,
                41,
                58,
                80,
                115,
                88,
                132,
                46,
                163,
                82,
                158,
                107,
                18,
                151,
                21,
                126,
                50,
                54,
                71,
                73,
                168,
                152,
                75,
                140,
                104,
                14,
                39,
                1,
                139,
                150,
                66,
                118,
                49,
                74,
                110,
                52,
                83,
                37,
                81,
                10,
                11,
                149,
                47,
                26,
                92,
                102,
                67,
                96,
                68,
                24,
                40,
                154,
                124,
                134,
                156,
                51,
                12,
                9,
                33,
                125,
                36,
                38,
                129,
                148,
                65,
                141,
                43,
                31,
                76,
                29,
                30,
                91,
                27,
                42,
                119,
                44,
                64,
                35,
                122,
                79,
                34,
                32,
                167,
                70,
                78,
            )
        )
    ),
}

# The official bank settings per dataset (memory_size is 5 everywhere).
OFFICIAL_BANK = {
    "ade20k": {"p_sample": 0.05, "p_resize": 0.4, "w_auc": 4.0},
    "cityscapes": {"p_sample": 1.0, "p_resize": 1.0, "w_auc": 1.0},
    "cocostuff": {"p_sample": 0.05, "p_resize": 0.1, "w_auc": 1.0},
}


def small_index_preset(name: str) -> list[int]:
    """The official tail list of ``ade20k``, ``cityscapes`` or ``cocostuff``."""
    if name not in OFFICIAL_SMALL_INDEX:
        raise ValueError(
            f"no small_index preset {name!r}; choose from {sorted(OFFICIAL_SMALL_INDEX)}"
        )
    return list(OFFICIAL_SMALL_INDEX[name])


def _ranking(pixel_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
        raise ValueError("pixel_counts must be a non-empty 1-D array of non-negative counts")
    return np.argsort(-counts, kind="stable")


def select_tail_classes(
    pixel_counts: Sequence[int] | np.ndarray,
    *,
    num_head: int | None = None,
    head_share: float | None = None,
) -> list[int]:
    """Tail classes = every class after a head cut in descending pixel-count order.

    Give exactly one cut: ``num_head`` (the first ``num_head`` classes are head), or
    ``head_share`` (the head is the shortest prefix whose pixels reach that share of all pixels).
    Returned in descending pixel-count order, like the official lists. How the authors cut is
    not recorded (their issue #2). The ADE preset is the cut ``num_head=26`` of the id order, and
    the official list order follows the training pixel counts.
    """
    order = _ranking(pixel_counts)
    if (num_head is None) == (head_share is None):
        raise ValueError("give exactly one of num_head and head_share")
    if head_share is not None:
        if not 0.0 < head_share <= 1.0:
            raise ValueError(f"head_share must lie in (0, 1], got {head_share}")
        share = np.cumsum(np.asarray(pixel_counts, dtype=np.float64)[order])
        share /= max(share[-1], 1.0)
        num_head = int(np.searchsorted(share, head_share - 1e-12) + 1)
    if not 0 <= num_head <= len(order):
        raise ValueError(f"num_head must lie in [0, {len(order)}], got {num_head}")
    return order[num_head:].tolist()


def class_groups(
    pixel_counts: Sequence[int] | np.ndarray, cuts: tuple[int, int] | None = None
) -> dict[str, list[int]]:
    """Head / middle / tail evaluation groups by descending pixel count.

    ``cuts = (n_head, n_head + n_middle)``; default: thirds. The paper's cut points were not
    recovered, so any cut here is a choice, not the authors'.
    """
    order = _ranking(pixel_counts)
    k = len(order)
    a, b = cuts if cuts is not None else (round(k / 3), round(2 * k / 3))
    if not 0 < a < b < k:
        raise ValueError(f"cuts must satisfy 0 < head < head+middle < {k}, got {(a, b)}")
    return {"head": order[:a].tolist(), "middle": order[a:b].tolist(), "tail": order[b:].tolist()}
