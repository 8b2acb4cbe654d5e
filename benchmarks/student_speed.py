"""Student training and inference speed per size, crop size, memory layout and precision.

Why this exists: on this project's 2-core CPU the best layout/precision differs per network
(channels_last made one plain CNN 3.7x slower while it sped MobileNet-style nets up; bf16 autocast
sped plain convs up 1.7-2.6x but slowed MobileNetV3 training). `streampose.model.preprocess.preferred_layout`
is filled from this script's table, so rerun it after changing the architectures.

Each configuration runs in its own fresh subprocess (several models alive in one process slowed
each other up to 2x here), warms up, then times several repeats and reports the median. The three
modes of one (size, crop) cell run back to back so that their ratios see similar foreign load;
``--rounds 2`` repeats the whole grid and keeps each cell's best median.

    .venv/bin/python benchmarks/student_speed.py                      # full grid
    .venv/bin/python benchmarks/student_speed.py --sizes small --crops 128 --phases train
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchutil import timed_repeats

MODES = {
    "fp32": (False, None),
    "cl": (True, None),
    "cl+bf16": (True, "bfloat16"),
    "bf16": (False, "bfloat16"),  # not in the default grid: NCHW bf16 was much slower before
    "cl+fp16": (True, "float16"),  # CUDA without bf16 (what preferred_layout picks there)
    "ort": (False, None),  # inference only: the student exported in memory, in onnxruntime (`OnnxBackend`)
}
DEFAULT_MODES = ("fp32", "cl", "cl+bf16")


def _child(spec: dict) -> dict:
    """Measure one configuration in this (fresh) process and return samples/s.

    ``spec["device"]`` (default "cpu") may be "cuda"; timings then synchronise the device.
    """
    import torch
    import torch.nn.functional as F

    from streampose.model.student import build_student, count_parameters

    if spec["mode"] == "ort":
        return _child_ort(spec)
    torch.manual_seed(0)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    channels_last, dtype_name = MODES[spec["mode"]]
    dtype = getattr(torch, dtype_name) if dtype_name else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    b, s, j = spec["batch"], spec["crop"], spec["joints"]
    device = torch.device(spec.get("device", "cpu"))

    model = build_student(spec["size"], j, s).to(device, memory_format=fmt)
    x = torch.randn(b, 3, s, s, device=device).contiguous(memory_format=fmt)
    t3d = torch.randn(b, j, 3, device=device) * 0.3
    t2d = torch.rand(b, j, 2, device=device)
    tvis = torch.randint(0, 2, (b, j), device=device).float()

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    if spec["phase"] == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

        def step() -> None:
            with autocast():
                out = model(x)
            loss = (
                F.l1_loss(out["joints3d"], t3d) + F.l1_loss(out["joints2d"], t2d) + F.l1_loss(out["vis_logits"], tvis)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast():
                model(x)

    timing = timed_repeats(
        step,
        units_per_step=b,
        warmup_s=spec["warmup_s"],
        repeat_s=spec["repeat_s"],
        repeats=spec["repeats"],
        sync=torch.cuda.synchronize if device.type == "cuda" else None,
    )
    return {
        **spec,
        "params": count_parameters(model),
        "median": timing.median,
        "rates": [round(r, 1) for r in timing.rates],
        "cpu_util": round(statistics.median(timing.cores), 2),  # cores this process actually got
        "steps_per_repeat": timing.units_per_repeat // b,
        "threads": torch.get_num_threads(),
        "load": os.getloadavg()[0],
    }


def _child_ort(spec: dict) -> dict:
    """Inference as `eval` and `predict` run a checkpoint when onnxruntime is installed: uint8
    crops in (normalisation included), numpy out, through `OnnxBackend` on the exported student."""
    import numpy as np
    import torch

    from streampose.model.backends import OnnxBackend
    from streampose.model.export import onnx_bytes
    from streampose.model.student import build_student, count_parameters

    torch.manual_seed(0)
    b, s, j = spec["batch"], spec["crop"], spec["joints"]
    model = build_student(spec["size"], j, s)
    ckpt = {"model": model.state_dict(), "skeleton": "blazepose33", "student": model.config_dict()}
    backend = OnnxBackend(onnx_bytes(ckpt), device=spec.get("device", "cpu"), threads=spec["threads"] or None)
    crops = np.random.default_rng(0).integers(0, 256, (b, s, s, 3), dtype=np.uint8)
    timing = timed_repeats(
        lambda: backend(crops), units_per_step=b, warmup_s=spec["warmup_s"], repeat_s=spec["repeat_s"],
        repeats=spec["repeats"],
    )  # fmt: skip
    return {
        **spec,
        "params": count_parameters(model),
        "median": timing.median,
        "rates": [round(r, 1) for r in timing.rates],
        "cpu_util": round(statistics.median(timing.cores), 2),
        "steps_per_repeat": timing.units_per_repeat // b,
        "threads": backend.session.get_session_options().intra_op_num_threads,
        "load": os.getloadavg()[0],
    }


def _run_child(spec: dict) -> dict:
    """Measure one configuration (see `_child`) in a fresh process; failures come back as "error"."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(r: dict) -> None:
    """One progress line on stderr per finished configuration."""
    head = f"  {r['phase']:5s} {r['size']:6s} {r['crop']:4d} {r['mode']:8s} "
    if "median" not in r:
        print(head + f"ERROR {r['error']}", file=sys.stderr, flush=True)
        return
    print(
        head + f"{r['median']:8.1f}/s  repeats {r['rates']}  cores {r['cpu_util']}  load {r['load']:.2f}",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=None, help="default: every size in STUDENT_SIZES")
    p.add_argument("--crops", nargs="+", type=int, default=[128, 192])
    p.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=list(MODES))
    p.add_argument("--phases", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--joints", type=int, default=33)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--repeat-s", type=float, default=1.0, help="target seconds per timed repeat")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=1, help="run the grid this often; keep each best")
    p.add_argument("--json", default=None, help="also write all results to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return

    if args.sizes is None:
        from streampose.model.student import STUDENT_SIZES

        args.sizes = list(STUDENT_SIZES)
    results: dict[tuple, dict] = {}
    for _ in range(args.rounds):
        for phase in args.phases:
            for size in args.sizes:
                for crop in args.crops:
                    for mode in args.modes:
                        spec = {
                            "size": size,
                            "crop": crop,
                            "mode": mode,
                            "phase": phase,
                            "batch": args.batch,
                            "joints": args.joints,
                            "threads": args.threads,
                            "warmup_s": args.warmup_s,
                            "repeat_s": args.repeat_s,
                            "repeats": args.repeats,
                        }
                        r = _run_child(spec)
                        key = (phase, size, crop, mode)
                        if key not in results or r.get("median", 0) > results[key].get("median", 0):
                            results[key] = r
                        _report(r)

    print(f"\nbatch {args.batch}, {args.joints} joints, samples/s (median of {args.repeats} repeats)")
    header = "| phase | size | params | crop | " + " | ".join(args.modes)
    header += " | " + " | ".join(f"{m}/fp32" for m in args.modes if m != "fp32") + " |"
    print(header)
    print("|" + "---|" * (4 + len(args.modes) + len([m for m in args.modes if m != "fp32"])))
    for phase in args.phases:
        for size in args.sizes:
            for crop in args.crops:
                row = [results.get((phase, size, crop, m), {}) for m in args.modes]
                params = next((r["params"] for r in row if "params" in r), 0)
                rates = [r.get("median") for r in row]
                base = results.get((phase, size, crop, "fp32"), {}).get("median")
                cells = [f"{v:.0f}" if v else "err" for v in rates]
                ratios = [
                    f"{v / base:.2f}x" if v and base else "-"
                    for m, v in zip(args.modes, rates, strict=True)
                    if m != "fp32"
                ]
                print(f"| {phase} | {size} | {params / 1e6:.2f}M | {crop} | " + " | ".join(cells + ratios) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**v} for v in results.values()], f, indent=1)


if __name__ == "__main__":
    main()
