"""T7: per-type accuracy against a hand count; NExT-QA groups."""

import numpy as np

from heurvidqa.train import _merge_report, accuracy_report


def test_per_type_accuracy_hand_count():
    correct = np.array([1, 0, 1, 1, 0, 0, 1], bool)
    types = ["what", "what", "where", "how", "how", "how", "what"]
    r = accuracy_report(correct, types)
    assert r["all"] == 100 * 4 / 7
    assert r["what"] == 100 * 2 / 3 and r["where"] == 100.0 and r["how"] == 100 * 1 / 3


def test_nextqa_groups_hand_count():
    correct = np.array([1, 0, 1, 1, 1, 0], bool)
    types = ["CW", "CH", "TN", "TP", "DO", "DL"]
    rep = _merge_report(accuracy_report(correct, types, sums=True), nextqa=True)
    assert rep["groups"] == {"C": 50.0, "T": 100.0, "D": 50.0}
    assert rep["accuracy"] == 100 * 4 / 6 and rep["counts"]["TN"] == [1, 1]
    assert rep["per_type"]["CH"] == 0.0
