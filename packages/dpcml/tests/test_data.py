"""Loaders and the per-user split on generated fixtures."""

import numpy as np
import pytest
import scipy.sparse as sp

from dpcml.data import (
    from_pairs,
    load_interactions,
    read_users_dat,
    split_per_user,
    write_users_dat,
)
from labcore.cli import UserError

# user 1: 6 positives (one duplicated, one rated 3); user 2: 4 positives (dropped at 5);
# user 7: 5 positives incl. raw item id 41
RATINGS = [
    (1, 10, 5), (1, 11, 4), (1, 12, 4), (1, 13, 5), (1, 14, 4), (1, 15, 4), (1, 15, 5), (1, 16, 3),
    (2, 10, 5), (2, 11, 5), (2, 12, 4), (2, 13, 4), (2, 20, 1),
    (7, 10, 4), (7, 30, 4), (7, 31, 5), (7, 32, 4), (7, 41, 4),
]  # fmt: skip
EXPECTED = {1: [10, 11, 12, 13, 14, 15], 7: [10, 30, 31, 32, 41]}


def _check_expected(data, remap=False):
    assert data.user_ids.tolist() == [1, 7]
    if remap:
        assert data.item_ids.tolist() == [10, 11, 12, 13, 14, 15, 30, 31, 32, 41]
    else:
        assert data.num_items == 42  # raw ids: max + 1
    for row, uid in enumerate(data.user_ids):
        cols = data.matrix[row].indices
        assert data.item_ids[cols].tolist() == EXPECTED[uid]
    assert set(data.matrix.data.tolist()) == {1.0}


def test_ml100k_u_data(tmp_path):
    p = tmp_path / "u.data"
    p.write_text("".join(f"{u}\t{i}\t{r}\t88125{k}\n" for k, (u, i, r) in enumerate(RATINGS)))
    _check_expected(load_interactions(p, "ml100k"))
    _check_expected(load_interactions(p, "ml100k", id_mode="remap"), remap=True)


def test_ratings_dat_gives_expected_csr(tmp_path):
    p = tmp_path / "ratings.dat"
    p.write_text("".join(f"{u}::{i}::{r}::97830{k}\n" for k, (u, i, r) in enumerate(RATINGS)))
    data = load_interactions(p, "ml1m")
    _check_expected(data)
    want = np.zeros((2, 42), np.float32)
    for row, uid in enumerate([1, 7]):
        want[row, EXPECTED[uid]] = 1
    np.testing.assert_array_equal(data.matrix.toarray(), want)
    np.testing.assert_array_equal(data.matrix.indptr, [0, 6, 11])


def test_ml20m_csv_and_threshold_options(tmp_path):
    p = tmp_path / "ratings.csv"
    body = "".join(f"{u},{i},{r}.0,11{k}\n" for k, (u, i, r) in enumerate(RATINGS))
    p.write_text("userId,movieId,rating,timestamp\n" + body)
    _check_expected(load_interactions(p, "ml20m"))
    loose = load_interactions(p, "ml20m", threshold=1, min_positives=5)
    assert loose.user_ids.tolist() == [1, 2, 7]  # user 2 now has 5 positives
    assert loose.matrix[0].nnz == 7  # user 1 keeps the 3-star item; duplicate still collapses
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(UserError, match="header"):
        load_interactions(bad, "ml20m")


def test_steam_purchase_and_play(tmp_path):
    rows = []
    for g in range(6):  # user 5: bought 6 games, played 5 of them (one for 0 hours)
        rows.append(f'5,"Game, {g}",purchase,1.0,0')
        if g < 5:
            rows.append(f'5,"Game, {g}",play,{0.0 if g == 4 else 1.5 + g},0')
    for g in range(5):  # user 9: played 5 games without a purchase row for one of them
        if g:
            rows.append(f'9,"Game, {g}",purchase,1.0,0')
        rows.append(f'9,"Game, {g}",play,2.0,0')
    p = tmp_path / "steam-200k.csv"
    p.write_text("\n".join(rows) + "\n")
    data = load_interactions(p, "steam", min_positives=4)
    assert data.user_ids.tolist() == [5, 9]
    assert data.item_ids[data.matrix[0].indices].tolist() == [f"Game, {g}" for g in range(4)]
    assert data.item_ids[data.matrix[1].indices].tolist() == [f"Game, {g}" for g in range(1, 5)]
    with pytest.raises(UserError, match="no user"):
        load_interactions(p, "steam", min_positives=5)


def test_users_dat_roundtrip_and_filter(tmp_path):
    p = tmp_path / "users.dat"
    p.write_text("3 1 2 3\n5 0 4 9 2 7\n6 1 2 3 4 5 5\n")
    data = read_users_dat(p)
    assert data.user_ids.tolist() == [1, 2]  # line 0 has n = 3 < 5
    assert data.num_items == 10
    assert data.matrix[0].indices.tolist() == [0, 2, 4, 7, 9]
    assert data.matrix[1].indices.tolist() == [1, 2, 3, 4, 5]  # duplicate 5 collapses
    out = write_users_dat(tmp_path / "again.dat", data.matrix)
    again = read_users_dat(out)
    assert (again.matrix != data.matrix).nnz == 0


@pytest.mark.parametrize(
    "content,fmt,match",
    [
        ("1 2 3\n", "users_dat", "count 1 does not match 2"),
        ("5 a b c d e\n", "users_dat", "integers"),
        ("1::2\n", "ml1m", "not a MovieLens ratings.dat"),
        ("hello world\n", "ml100k", "not a MovieLens-100K"),
        ("", "ml100k", "empty"),
        ("1,2\n", "steam", "not a Steam-200k"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, content, fmt, match):
    p = tmp_path / "bad.txt"
    p.write_text(content)
    with pytest.raises(UserError, match=match) as e:
        load_interactions(p, fmt)
    assert "\n" not in str(e.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_interactions(tmp_path / "nope.dat", "ml1m")
    with pytest.raises(UserError, match="unknown format"):
        load_interactions(tmp_path, "netflix")


def _random_matrix(seed, n_users=40, n_items=50):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < rng.uniform(0.02, 0.6, (n_users, 1))
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize("rng", ["official", "numpy"])
def test_split_sizes_disjoint_deterministic(rng):
    m = _random_matrix(0)
    s = split_per_user(m, seed=7, rng=rng)
    n = np.diff(m.indptr)
    ok = n >= 5
    parts = [s.train, s.val, s.test]
    sizes = [np.diff(p.indptr) for p in parts]
    np.testing.assert_array_equal(sizes[0][ok], (n * 3 // 5)[ok])
    np.testing.assert_array_equal(sizes[1][ok], (n // 5)[ok])
    np.testing.assert_array_equal(sizes[2][ok], (n - n * 3 // 5 - n // 5)[ok])
    assert all((sz[ok] >= 1).all() for sz in sizes)
    assert all((sz[~ok] == 0).all() for sz in sizes)  # users under 5 are skipped
    total = s.train + s.val + s.test
    assert total.max() == 1  # disjoint
    assert (total != m.multiply(ok[:, None])).nnz == 0  # and together the whole
    again = split_per_user(m, seed=7, rng=rng)
    assert all((a != b).nnz == 0 for a, b in zip(parts, [again.train, again.val, again.test]))
    other = split_per_user(m, seed=8, rng=rng)
    assert (other.train != s.train).nnz > 0


def test_official_split_reproduces_the_code_stream():
    m = _random_matrix(1)
    s = split_per_user(m, seed=1234)
    # the official code: global seed, then one shuffle per user in row order
    np.random.seed(1234)  # noqa: NPY002
    for u in range(m.shape[0]):
        items = list(m[u].indices)
        if len(items) < 5:
            continue
        np.random.shuffle(items)  # noqa: NPY002
        a, b = len(items) * 3 // 5, len(items) // 5
        assert sorted(items[:a]) == s.train[u].indices.tolist()
        assert sorted(items[a : a + b]) == s.val[u].indices.tolist()
        assert sorted(items[a + b :]) == s.test[u].indices.tolist()


def test_from_pairs_raw_mode_needs_integer_ids():
    with pytest.raises(UserError, match="remap"):
        from_pairs(np.ones(5, int), np.array(list("abcde")), threshold=None)
    ok = from_pairs(np.ones(5, int), np.array(list("abcde")), threshold=None, id_mode="remap")
    assert ok.item_ids.tolist() == list("abcde")
