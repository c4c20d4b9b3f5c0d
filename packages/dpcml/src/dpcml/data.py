"""Implicit-feedback data: loaders for the standard files, and the official per-user split.

Every loader returns :class:`Interactions`, a binary user × item CSR matrix (rows = users in
ascending raw-id order, or file order for ``users.dat``). Positives are ratings ≥ ``threshold``;
duplicate (user, item) pairs collapse; users with fewer than ``min_positives`` positives are
dropped. ``id_mode="raw"`` (official) keeps item ids as columns, so #items = max id + 1;
``"remap"`` numbers the items that occur 0..I−1.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from labcore.cli import UserError

__all__ = [
    "FORMATS",
    "Interactions",
    "Split",
    "from_pairs",
    "load_interactions",
    "read_ml20m",
    "read_ml100k",
    "read_ratings_dat",
    "read_steam",
    "read_users_dat",
    "split_per_user",
    "write_users_dat",
]

FORMATS = ("ml100k", "ml1m", "ml10m", "ml20m", "steam", "users_dat")


@dataclass
class Interactions:
    """``matrix`` (U, I) CSR of ones with sorted column indices; raw ids of rows and columns."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray  # (U,) raw user id of each row
    item_ids: np.ndarray  # (I,) raw item id of each column

    @property
    def num_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def num_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz


@dataclass
class Split:
    """Train / validation / test CSR matrices of one shape, disjoint per user."""

    train: sp.csr_matrix
    val: sp.csr_matrix
    test: sp.csr_matrix


def _csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0  # duplicates collapse to one positive
    m.sort_indices()
    return m


def from_pairs(
    users,
    items,
    ratings=None,
    *,
    threshold: float | None = 4.0,
    min_positives: int = 5,
    id_mode: str = "raw",
) -> Interactions:
    """Build :class:`Interactions` from raw (user, item[, rating]) arrays (all vectorised)."""
    if id_mode not in ("raw", "remap"):
        raise UserError(f"id_mode must be 'raw' or 'remap', got {id_mode!r}")
    users, items = np.asarray(users), np.asarray(items)
    if ratings is not None and threshold is not None:
        keep = np.asarray(ratings, dtype=np.float64) >= threshold
        users, items = users[keep], items[keep]
    uid_raw, u_inv = np.unique(users, return_inverse=True)
    iid_raw, i_inv = np.unique(items, return_inverse=True)
    key = np.unique(u_inv.astype(np.int64) * max(len(iid_raw), 1) + i_inv)  # dedupe pairs
    pair_user, pair_item = np.divmod(key, max(len(iid_raw), 1))
    keep_user = np.bincount(pair_user, minlength=len(uid_raw)) >= min_positives
    pair_user, pair_item = pair_user[keep_user[pair_user]], pair_item[keep_user[pair_user]]
    if len(pair_user) == 0:
        raise UserError(f"no user has >= {min_positives} positives after filtering")
    row_of = np.cumsum(keep_user) - 1
    rows = row_of[pair_user]
    user_ids = uid_raw[keep_user]
    if id_mode == "raw":
        if not np.issubdtype(iid_raw.dtype, np.integer) or iid_raw.min() < 0:
            raise UserError("id_mode 'raw' needs non-negative integer item ids; use 'remap'")
        cols = iid_raw[pair_item].astype(np.int64)
        num_items = int(cols.max()) + 1
        item_ids = np.arange(num_items)
    else:
        used, cols = np.unique(pair_item, return_inverse=True)
        num_items = len(used)
        item_ids = iid_raw[used]
    return Interactions(_csr(rows, cols, (len(user_ids), num_items)), user_ids, item_ids)


def _read_text(path, name: str, filename: str) -> tuple[Path, bytes]:
    """The file's bytes, checked to be non-empty UTF-8 text, or a one-line error naming the file
    and what was expected. ``name`` says what the file is, ``filename`` its usual name."""
    path = Path(path)
    if path.is_dir():
        hint = path / filename
        found = f"; {hint} is there" if hint.is_file() else f", e.g. {hint}"
        raise UserError(f"{path} is a directory: expected the {name} file itself{found}")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path} (expected a {name} file)")
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a {name} file (not UTF-8 text: byte 0x{raw[e.start]:02x} "
                        f"at offset {e.start})") from None  # fmt: skip
    if not raw.strip():
        raise UserError(f"{path}: empty {name} file")
    return path, raw


def _read_table(path, sep: str, skip_header: bool, name: str, filename: str) -> np.ndarray:
    """The first three numeric columns of a delimited text file, as float64 (N, 3); the first
    two (user and item ids) must be non-negative integers."""
    path, raw = _read_text(path, name, filename)
    if skip_header and not raw.partition(b"\n")[2].strip():
        raise UserError(f"{path}: {name} file has a header but no rows")
    if sep == "::":
        raw, sep = raw.replace(b"::", b"\t"), "\t"
    try:
        table = np.loadtxt(io.BytesIO(raw), delimiter=sep, usecols=(0, 1, 2),
                           skiprows=int(skip_header), dtype=np.float64, ndmin=2)  # fmt: skip
    except ValueError as e:
        msg = str(e).splitlines()[0].rstrip(".")
        raise UserError(f"{path}: not a {name} file, or truncated ({msg})") from None
    ids = table[:, :2]
    bad = ~(np.isfinite(ids) & (ids == np.round(ids)) & (ids >= 0)).all(1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise UserError(f"{path}: data row {row}: user and item ids must be non-negative integers")
    return table


def _named(path, build):
    """Run ``build()``; a :class:`UserError` it raises gets the file name in front."""
    try:
        return build()
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _from_table(path, table: np.ndarray, **kw) -> Interactions:
    users, items = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
    return _named(path, lambda: from_pairs(users, items, table[:, 2], **kw))


def read_ml100k(path, **kw) -> Interactions:
    """MovieLens-100K ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``."""
    return _from_table(path, _read_table(path, "\t", False, "MovieLens-100K u.data", "u.data"),
                       **kw)  # fmt: skip


def read_ratings_dat(path, **kw) -> Interactions:
    """MovieLens-1M / 10M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``."""
    table = _read_table(path, "::", False, "MovieLens ratings.dat", "ratings.dat")
    return _from_table(path, table, **kw)


def read_ml20m(path, **kw) -> Interactions:
    """MovieLens-20M ``ratings.csv`` with header ``userId,movieId,rating,timestamp``."""
    name = "MovieLens-20M ratings.csv"
    _, raw = _read_text(path, name, "ratings.csv")
    header = raw.split(b"\n", 1)[0].decode().strip().lower()
    if not header.startswith("userid,movieid,rating"):
        raise UserError(f"{path}: expected header 'userId,movieId,rating,timestamp'")
    return _from_table(path, _read_table(path, ",", True, name, "ratings.csv"), **kw)


def read_steam(path, *, min_positives: int = 5, **_) -> Interactions:
    """Steam-200k CSV ``user,"game",behavior,value,0``: a positive is a game the user purchased
    and played for more than 0 hours. Games are names, so items are always numbered (remap).
    """
    path, raw = _read_text(path, "Steam-200k CSV", "steam-200k.csv")
    text = raw.decode("utf-8")
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except csv.Error as e:
        raise UserError(f"{path}: not a Steam-200k CSV ({e})") from None
    short = [i for i, r in enumerate(rows, 1) if len(r) < 4]
    if short:
        raise UserError(f"{path}: row {short[0]} has fewer than 4 fields; not a Steam-200k CSV "
                        "(user,game,behavior,value), or truncated")  # fmt: skip
    cols = np.array([r[:4] for r in rows], dtype=object).T
    try:
        users, value = cols[0].astype(np.int64), cols[3].astype(np.float64)
    except ValueError:
        raise UserError(f"{path}: not a Steam-200k CSV (non-numeric user or value)") from None
    games, behavior = cols[1].astype(str), np.char.lower(cols[2].astype(str))
    _, key = np.unique(np.char.add(np.char.add(users.astype(str), "\x1f"), games),
                       return_inverse=True)  # fmt: skip
    played = np.zeros(key.max() + 1, bool)
    played[key[(behavior == "play") & (value > 0)]] = True
    positive = (behavior == "purchase") & played[key]
    users, games = users[positive], games[positive]
    kw = {"threshold": None, "min_positives": min_positives, "id_mode": "remap"}
    return _named(path, lambda: from_pairs(users, games, None, **kw))


def read_users_dat(path, *, min_positives: int = 5, **_) -> Interactions:
    """The official DPCML/LibCML ``users.dat``: one line per user, ``n i1 i2 … in``.

    Users with n < ``min_positives`` are dropped (by the count field, as the code does), rows
    keep file order, items keep raw ids (#items = max id + 1).
    """
    path, raw = _read_text(path, "users.dat ('n i1 ... in' per line)", "users.dat")
    text = raw.decode("utf-8")
    rows, cols, kept = [], [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok = np.array(line.split(), dtype=np.int64)
        except (ValueError, OverflowError):
            raise UserError(
                f"{path}:{lineno}: users.dat lines are integers 'n i1 ... in'"
            ) from None
        if tok[0] != len(tok) - 1:
            raise UserError(f"{path}:{lineno}: count {tok[0]} does not match {len(tok) - 1} items"
                            " (truncated?)")  # fmt: skip
        if (tok[1:] < 0).any():
            raise UserError(f"{path}:{lineno}: negative item id")
        if tok[0] < min_positives:
            continue
        rows.append(np.full(len(tok) - 1, len(kept)))
        cols.append(tok[1:])
        kept.append(lineno - 1)
    if not kept:
        raise UserError(f"{path}: no user has >= {min_positives} items")
    r, c = np.concatenate(rows), np.concatenate(cols)
    num_items = int(c.max()) + 1
    return Interactions(_csr(r, c, (len(kept), num_items)), np.array(kept), np.arange(num_items))


def write_users_dat(path, matrix: sp.csr_matrix) -> Path:
    """Write a CSR matrix in the ``users.dat`` format (one line per row)."""
    path = Path(path)
    m = sp.csr_matrix(matrix)
    lines = (" ".join(map(str, [len(r), *r])) for r in np.split(m.indices, m.indptr[1:-1]))
    path.write_text("\n".join(lines) + "\n")
    return path


_READERS = {
    "ml100k": read_ml100k,
    "ml1m": read_ratings_dat,
    "ml10m": read_ratings_dat,
    "ml20m": read_ml20m,
    "steam": read_steam,
    "users_dat": read_users_dat,
}


def load_interactions(
    path,
    format: str,
    *,
    threshold: float = 4.0,
    min_positives: int = 5,
    id_mode: str = "raw",
) -> Interactions:
    """Read ``path`` in one of :data:`FORMATS` (see the module docstring for the options)."""
    if format not in _READERS:
        raise UserError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    return _READERS[format](path, threshold=threshold, min_positives=min_positives,
                            id_mode=id_mode)  # fmt: skip


def split_per_user(
    matrix: sp.csr_matrix,
    ratios=(3, 1, 1),
    seed: int = 1234,
    min_items: int = 5,
    rng: str = "official",
) -> Split:
    """Per-user train/val/test split of the official code.

    For each user with n ≥ ``min_items`` positives, shuffle them and take int(n·3/5) for train,
    int(n·1/5) for validation and the rest for test (integer arithmetic). ``rng="official"``
    reproduces the code's stream exactly (``np.random.seed(seed)`` then one ``shuffle`` per user
    over the sorted items, users in row order; a loop over users). ``rng="numpy"`` draws one
    random key per interaction from ``default_rng(seed)`` and sorts once (fully vectorised).
    """
    m = sp.csr_matrix(matrix, copy=True)
    m.sort_indices()
    indptr, n_users = m.indptr, m.shape[0]
    counts = np.diff(indptr)
    cols = m.indices.astype(np.int64).copy()
    if rng == "official":
        state = np.random.RandomState(seed)
        for u in np.flatnonzero(counts >= min_items):
            state.shuffle(cols[indptr[u] : indptr[u + 1]])
    elif rng == "numpy":
        row = np.repeat(np.arange(n_users), counts)
        cols = cols[np.lexsort((np.random.default_rng(seed).random(len(cols)), row))]
    else:
        raise UserError(f"rng must be 'official' or 'numpy', got {rng!r}")
    total = sum(ratios)
    n_train, n_val = counts * ratios[0] // total, counts * ratios[1] // total
    pos = np.arange(len(cols)) - np.repeat(indptr[:-1], counts)  # position within the user
    row = np.repeat(np.arange(n_users), counts)
    ok = np.repeat(counts >= min_items, counts)
    tr, va = np.repeat(n_train, counts), np.repeat(n_val, counts)
    part = np.where(pos < tr, 0, np.where(pos < tr + va, 1, 2))
    out = [_csr(row[ok & (part == p)], cols[ok & (part == p)], m.shape) for p in range(3)]
    return Split(*out)
