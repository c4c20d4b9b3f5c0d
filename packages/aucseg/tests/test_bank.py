import math

import numpy as np
import pytest
import torch

from aucseg import TMemoryBank

H = W = 32
BG = 0  # background class id (not tail)


def sample_with(objects, fill=0.0):
    """An image (3, H, W) and label (H, W) with square objects {cls: (top, left, size)}."""
    img = torch.full((3, H, W), fill)
    lab = torch.full((H, W), BG, dtype=torch.long)
    for c, (t, l, s) in objects.items():
        lab[t : t + s, l : l + s] = c
        img[:, t : t + s, l : l + s] = float(c) + torch.arange(3.0).view(3, 1, 1) / 10
    return img, lab


def test_capacity_is_bounded_and_entries_are_copies():
    bank = TMemoryBank(10, [5, 6], memory_size=3, seed=0)
    for i in range(20):
        img, lab = sample_with({5: (i % 20, 3, 4)})
        bank(img, lab)
        assert len(bank.banks[5]) == min(i + 1, 3)
    assert len(bank.banks[6]) == 0
    img, lab = sample_with({6: (1, 1, 3)})
    bank(img, lab)
    stored = bank.banks[6][0].image.clone()
    img.fill_(-7.0)  # mutating the source (the official bank kept a reference) must not leak in
    assert torch.equal(bank.banks[6][0].image, stored)
    assert bank.nbytes == sum(
        e.image.numel() * 4 + e.mask.numel() for v in bank.banks.values() for e in v
    )


def test_replacement_slot_is_uniform():
    s_m, n = 5, 1500
    bank = TMemoryBank(10, [5], memory_size=s_m, p_sample=0.0, seed=1)
    for _ in range(s_m):
        bank(*sample_with({5: (0, 0, 2)}))
    counts = np.zeros(s_m)
    for i in range(n):
        img, lab = sample_with({5: (0, 0, 2)}, fill=0.0)
        img[:, 0, 0] = 1000.0 + i  # a tag inside the object
        bank(img, lab)
        slot = [j for j, e in enumerate(bank.banks[5]) if e.image[0, 0, 0] == 1000.0 + i]
        assert len(slot) == 1
        counts[slot[0]] += 1
    chi2 = ((counts - n / s_m) ** 2 / (n / s_m)).sum()
    assert chi2 < 18.47  # chi-square, 4 dof, p = 0.001


def filled_bank(tail, p_sample, p_resize=1.0, seed=0):
    bank = TMemoryBank(20, tail, memory_size=2, p_sample=p_sample, p_resize=p_resize, seed=seed)
    for j, c in enumerate(tail):  # each class at its own spot, so pastes never overlap
        bank(*sample_with({c: (2 + 4 * (j // 6), 2 + 5 * (j % 6), 3)}))
    return bank


@pytest.mark.parametrize(("n_tail", "p_sample"), [(7, 0.3), (7, 1.0), (4, 0.05), (7, 0.0)])
def test_number_of_pasted_classes_is_ceil_of_p_sample_times_absent(n_tail, p_sample):
    tail = list(range(10, 10 + n_tail))
    bank = filled_bank(tail, p_sample)
    present = {tail[0]: (20, 20, 4)}  # one tail class already present: |A| = n_tail - 1
    img, lab = sample_with(present)
    for _ in range(5):
        _, out = bank(img, lab)
        pasted = set(torch.unique(out).tolist()) - {BG, tail[0]}
        assert len(pasted) == math.ceil(p_sample * (n_tail - 1))
        assert tail[0] not in pasted


def test_only_object_pixels_change_and_land_at_source_position():
    tail = [11, 12, 13]
    bank = TMemoryBank(20, tail, memory_size=5, p_sample=1.0, p_resize=1.0, seed=0)
    src_img, src_lab = sample_with({12: (5, 9, 6)})
    src_lab[5, 9] = BG  # a non-square mask: the bbox corner is not part of the object
    bank(src_img, src_lab)
    img = torch.randn(3, H, W, generator=torch.Generator().manual_seed(0))
    lab = torch.randint(0, 3, (H, W), generator=torch.Generator().manual_seed(1))
    out_img, out_lab = bank(img, lab)
    changed_lab = out_lab != lab
    assert torch.equal(changed_lab, src_lab == 12)  # p_resize = 1: the source coordinates
    assert (out_lab[changed_lab] == 12).all()
    changed_img = (out_img != img).any(0)
    assert not (changed_img & ~changed_lab).any()
    assert torch.equal(out_img[:, changed_lab], src_img[:, src_lab == 12])
    assert torch.equal(lab, torch.randint(0, 3, (H, W), generator=torch.Generator().manual_seed(1)))


def test_empty_bank_is_skipped():
    bank = TMemoryBank(20, [11, 12, 13], p_sample=1.0, seed=0)
    img, lab = sample_with({})
    out_img, out_lab = bank(img, lab)
    assert torch.equal(out_img, img) and torch.equal(out_lab, lab)
    bank(*sample_with({13: (3, 3, 4)}))  # now only class 13 has an entry
    _, out_lab = bank(img, lab)
    assert set(torch.unique(out_lab).tolist()) == {BG, 13}


def test_resized_paste_is_scaled_and_inside_the_image():
    bank = TMemoryBank(20, [15], memory_size=1, p_sample=1.0, p_resize=0.5, seed=3)
    bank(*sample_with({15: (8, 12, 8)}))  # an 8x8 object
    img, lab = sample_with({})
    tops = set()
    for _ in range(40):
        _, out = bank(img, lab)
        ys, xs = torch.nonzero(out == 15, as_tuple=True)
        assert len(ys) == 16  # 4x4 after scaling by 0.5
        # canvas 16x16 at offset U[0, 16]; object at 0.5 * (8, 12) inside it
        assert 4 <= ys.min() <= 4 + 16 and 6 <= xs.min() <= 6 + 16
        tops.add(int(ys.min()))
    assert len(tops) > 5  # the offset is random


def test_label_with_channel_axis_and_bad_arguments():
    bank = filled_bank([10, 11], 1.0)
    img, lab = sample_with({})
    _, out_lab = bank(img, lab[None])
    assert out_lab.shape == (1, H, W)
    with pytest.raises(ValueError, match="expected image"):
        bank(img[0], lab)
    for kwargs in (
        {"p_sample": 1.5},
        {"p_resize": 0.0},
        {"memory_size": 0},
        {"tail_classes": [25]},
    ):
        args = {"num_classes": 20, "tail_classes": [3], **kwargs}
        with pytest.raises(ValueError):
            TMemoryBank(**args)
