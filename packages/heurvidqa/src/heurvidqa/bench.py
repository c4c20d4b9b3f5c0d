"""``heurvidqa bench``: the costs behind the method, measured in one run.

1. Decode: ``labcore.video.read_video`` (convert and resize only the sampled frames, stop after
   the last) against the naive decode-every-frame-to-RGB-then-index-and-resize, frames/s, over
   video lengths (log-log plot).
2. Prompter overhead: one training step with the frozen entity and action prompters (+E+A)
   against the plain student step, same batch, CPU size (spec target ≤ 1.3×).
3. Real size (ViT-B/16 TimeSformer + BERT-base): parameter / gradient / AdamW-state bytes
   (``labcore.memory.training_state_bytes``); without ``--quick`` also the step time and live-tensor
   peak (``peak_memory(method='tensors')``) at batch ``--batch`` with ``--frames`` frames.

Thresholds are fixed here before the run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from heurvidqa.config import HeuristicConfig, model_config
from heurvidqa.heuristics import Heuristics
from heurvidqa.model import AlproStudent, DualEncoder, load_text_model
from heurvidqa.train import qa_losses
from labcore.runs import Claim, write_result

TARGET_DECODE_SPEEDUP = 1.2  # labcore.video vs naive, frames/s ratio, 64-frame clip
TARGET_PROMPTER_OVERHEAD = 1.3  # (+E+A step) / (plain step)


def _naive_clip(path, num_frames, size):
    from labcore.video import decode_all, sample_indices

    frames = decode_all(path)  # every frame to RGB at full size
    idx = sample_indices(len(frames), num_frames, "uniform")
    x = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    from labcore.video import normalize_frames

    return normalize_frames(x.round().clamp(0, 255).to(torch.uint8))


def bench_decode(lengths, reps: int, num_frames: int = 8, size: int = 64, src: int = 128) -> dict:
    from labcore.video import read_video, write_video

    rng = np.random.default_rng(0)
    out = {"lengths": list(lengths), "labcore_fps": [], "naive_fps": []}
    with tempfile.TemporaryDirectory() as d:
        for n in lengths:
            frames = rng.integers(0, 255, size=(n, src, src, 3), dtype=np.uint8)
            frames = np.clip(frames // 4 + 96, 0, 255).astype(np.uint8)
            path = write_video(Path(d) / f"v{n}.mp4", frames, fps=8)
            for name, fn in (
                ("labcore", lambda p=path: read_video(p, num_frames, "uniform", size)),
                ("naive", lambda p=path: _naive_clip(p, num_frames, size)),
            ):
                fn()  # warm
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                out[f"{name}_fps"].append(num_frames * reps / (time.perf_counter() - t))
    return out


def _batch(cfg, tok_len: int, b: int, n_answers: int = 20):
    g = torch.Generator().manual_seed(0)
    return {
        "pixels": torch.randn(b, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g),
        "ids": torch.randint(1000, 2000, (b, tok_len), generator=g),
        "mask": torch.ones(b, tok_len, dtype=torch.long),
        "labels": torch.randint(0, n_answers, (b,), generator=g),
        "num_candidates": 0,
    }


def _time_steps(student, batch, heur, use: bool, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    hcfg = HeuristicConfig()
    rng = np.random.default_rng(0)

    def one():
        h = heur(batch["pixels"], rng) if use else None
        losses = qa_losses(student, batch, h, hcfg, use, use)
        loss = sum(losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    one()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t) / steps


def bench_prompter_overhead(batch: int, steps: int, text_model: str = "minilm") -> dict:
    cfg = model_config("cpu", text_model=text_model)
    torch.manual_seed(0)
    text = load_text_model(text_model)
    student = AlproStudent(cfg, num_answers=20, num_entities=40, num_actions=6)
    frozen = load_text_model(text_model).requires_grad_(False)
    ep, ap = DualEncoder(cfg, text_model=frozen), DualEncoder(cfg, text_model=frozen)
    del text
    heur = Heuristics(ep, ap, torch.nn.functional.normalize(torch.randn(40, 256), dim=-1),
                      torch.nn.functional.normalize(torch.randn(6, 256), dim=-1),
                      HeuristicConfig(), cfg.patch_size, cfg.grid)  # fmt: skip
    b = _batch(cfg, 14, batch)
    before = [p.detach().clone() for p in heur.parameters()]
    plain = _time_steps(student, b, heur, False, steps)
    full = _time_steps(student, b, heur, True, steps)
    unchanged = all(torch.equal(a, p) for a, p in zip(before, heur.parameters(), strict=True))
    return {"plain_step_s": plain, "heuristic_step_s": full, "ratio": full / plain,
            "prompters_unchanged": unchanged, "batch": batch}  # fmt: skip


def bench_real_size(batch: int, frames: int, timed: bool, steps: int) -> dict:
    from labcore.memory import peak_memory, training_state_bytes

    cfg = model_config("real", num_frames=frames)
    torch.manual_seed(0)
    t = time.perf_counter()
    student = AlproStudent(cfg, num_answers=1500)
    build_s = time.perf_counter() - t
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    n_params = sum(p.numel() for p in student.parameters())
    # state after one step = params + grads + 2 AdamW moments (counted, not estimated)
    for p in student.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    state = training_state_bytes(student, opt).as_dict()
    out = {"params": n_params, "state_bytes": state, "build_seconds": build_s,
           "batch": batch, "frames": frames}  # fmt: skip
    if timed:
        b = _batch(cfg, 40, batch, 1500)
        student.zero_grad(set_to_none=True)

        def step():
            losses = qa_losses(student, b, None, HeuristicConfig(), False, False)
            losses["qa"].backward()

        t = time.perf_counter()
        for _ in range(steps):
            step()
            student.zero_grad(set_to_none=True)
        out["step_seconds"] = (time.perf_counter() - t) / steps
        out["peak_tensor_bytes"] = peak_memory(step, method="tensors").peak_bytes
    return out


def run_bench(args) -> int:
    from labcore.plot import line_plot

    t0 = time.perf_counter()
    quick = args.quick
    dec = bench_decode((16, 64) if quick else (16, 32, 64, 128), reps=2 if quick else 5)
    i64 = dec["lengths"].index(64)
    speedup = dec["labcore_fps"][i64] / dec["naive_fps"][i64]
    print(f"decode 64-frame 128² mp4 → 8×64²: labcore {dec['labcore_fps'][i64]:.0f} frames/s, "
          f"naive {dec['naive_fps'][i64]:.0f} frames/s ({speedup:.2f}×)")  # fmt: skip
    ov = bench_prompter_overhead(batch=4 if quick else 16, steps=2 if quick else 5)
    print(f"CPU-size step: plain {ov['plain_step_s']:.3f} s, +E+A {ov['heuristic_step_s']:.3f} s "
          f"({ov['ratio']:.2f}×, target ≤ {TARGET_PROMPTER_OVERHEAD}); prompters unchanged: "
          f"{ov['prompters_unchanged']}")  # fmt: skip
    real = bench_real_size(args.batch, args.frames, timed=not quick, steps=args.steps)
    gib = real["state_bytes"]["total"] / 2**30
    print(f"real size (ViT-B/16 + BERT-base): {real['params'] / 1e6:.1f} M parameters, "
          f"training state {gib:.2f} GiB (params + grads + AdamW)"
          + (f"; step {real['step_seconds']:.1f} s, live-tensor peak "
             f"{real['peak_tensor_bytes'] / 2**30:.2f} GiB at batch {args.batch}, "
             f"{args.frames} frames" if "step_seconds" in real else ""))  # fmt: skip
    claims = [
        Claim("labcore.video decodes sampled clips faster than decode-all-then-index",
              "frames/s (64-frame clip)", dec["labcore_fps"][i64], dec["naive_fps"][i64], "x",
              threshold=TARGET_DECODE_SPEEDUP),
        Claim("frozen prompters add little to a training step (+E+A vs plain)",
              "step seconds", ov["heuristic_step_s"], ov["plain_step_s"], "x",
              threshold=TARGET_PROMPTER_OVERHEAD, higher_is_better=False),
    ]  # fmt: skip
    # Claim compares value to threshold; for "x" claims use the ratio as the value
    claims = [Claim(c.claim, c.metric, c.value / c.baseline, 1.0, c.unit, c.threshold,
                    c.higher_is_better) for c in claims]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    png = line_plot(args.out / "heurvidqa_bench_decode.png",
                    series={"labcore.video": (dec["lengths"], dec["labcore_fps"]),
                            "naive decode-all": (dec["lengths"], dec["naive_fps"])},
                    xlabel="source frames", ylabel="sampled frames / s",
                    title="decode 8 frames at 64² from a 128² mp4", loglog=True)  # fmt: skip
    path = write_result(args.out, package="heurvidqa", command="bench",
                        dataset="synthetic videos and tensors",
                        metrics={"decode": dec, "prompter_overhead": ov, "real_size": real},
                        memory={"real_size_state_bytes": real["state_bytes"],
                                "real_size_peak_tensor_bytes": real.get("peak_tensor_bytes")},
                        timings={"total_seconds": time.perf_counter() - t0},
                        config={"quick": quick, "batch": args.batch, "frames": args.frames},
                        device="cpu", seed=args.seed, claims=claims)  # fmt: skip
    for c in claims:
        print(
            f"[{'met' if c.met else 'MISSED'}] {c.claim}: {c.value:.2f}{c.unit} "
            f"(threshold {'≥' if c.higher_is_better else '≤'} {c.threshold})"
        )
    print(f"wrote {path}" + (f" and {png}" if png else ""))
    return 0
