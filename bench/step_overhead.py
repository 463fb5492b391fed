"""How much time the trainer adds around the UNet: seconds per training step divided by a bare UNet
forward+backward of the same LoRA-injected UNet on the same batch. Target: 1.05 or less.

Models: the built-in tiny SD1.5-architecture model at 64 px, and an SD1.5-shaped model with a quarter of
the channels at 256 px (the real SD1.5 block layout, attention and 768-wide text conditioning), saved as a
diffusers folder so it goes through the normal loading path. Both run on whatever device is present.

    .venv/bin/python bench/step_overhead.py [--steps 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.engine import RecordingSink, make_dataset, tiny_config  # noqa: E402
from trainer.control import Control  # noqa: E402


def clock() -> float:
    """CPU seconds of this process (one torch thread on CPU): other programs on a shared machine can't
    inflate it, unlike wall time. On a GPU, wall time after a synchronize is what counts."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


class InterleavedSink(RecordingSink):
    """After each training step, runs one bare UNet step, so both are timed under the same conditions
    (a shared machine's load changes by the second; interleaving step by step cancels that out)."""

    def __init__(self, bare_step):
        super().__init__()
        self.bare_step = bare_step
        self.trainer_times: list[float] = []
        self.bare_times: list[float] = []
        self.resumed_at = None

    def emit(self, event) -> None:
        if event.type != "progress":
            return super().emit(event)
        now = clock()
        if self.resumed_at is not None:
            self.trainer_times.append(now - self.resumed_at)
        self.bare_times.append(self.bare_step())
        self.resumed_at = clock()


def reduced_sd15_folder(root: Path) -> Path:
    """SD1.5's UNet config with block_out_channels / 4, random weights, as a diffusers folder."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from trainer.models.assets import CONFIGS, load_tokenizer
    from trainer.models.tiny import build_tiny_components

    unet_cfg = json.loads((CONFIGS / "sd15" / "unet" / "config.json").read_text())
    unet_cfg["block_out_channels"] = [c // 4 for c in unet_cfg["block_out_channels"]]
    unet_cfg["norm_num_groups"] = 16  # 80 channels: groups of 5, as 320 channels form groups of 10
    unet = UNet2DConditionModel.from_config(unet_cfg)
    from transformers import CLIPTextConfig, CLIPTextModel

    te_cfg = json.loads((CONFIGS / "sd15" / "text_encoder" / "config.json").read_text())
    te_cfg["num_hidden_layers"] = 2  # text conditioning is cached; only its width matters here
    parts = build_tiny_components("sd15")
    pipe = StableDiffusionPipeline(vae=parts["vae"], text_encoder=CLIPTextModel(CLIPTextConfig.from_dict(te_cfg)),
                                   tokenizer=load_tokenizer(), unet=unet, scheduler=parts["scheduler"],
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = root / "sd15-quarter"
    pipe.save_pretrained(folder)
    return folder


def bare_step_fn(cfg):
    """A bare forward+backward of the same LoRA-injected UNet on a batch of the same shape."""
    from trainer.models.load import load_base_model
    from trainer.runtime import _add_adapters

    model = load_base_model(cfg.model.path)
    params = _add_adapters(cfg, model)[0]
    unet = model.unet.train()
    b, side = cfg.schedule.batch_size, cfg.dataset.resolution // 8
    latents = torch.randn(b, 4, side, side)
    hidden = torch.randn(b, 77, unet.config.cross_attention_dim)
    t = torch.randint(0, 1000, (b,))

    def step() -> float:
        start = clock()
        unet(latents, t, hidden).sample.float().pow(2).mean().backward()
        for p in params:
            p.grad = None
        return clock() - start

    return step


def measure(name: str, cfg, root: Path, steps: int, warmup: int) -> dict:
    from trainer.loop import train

    cfg.schedule.max_steps = steps + warmup + 1
    run_dir = root / f"run-{name}"
    run_dir.mkdir()
    sink = InterleavedSink(bare_step_fn(cfg))
    train(cfg, run_dir, sink, Control())
    ours, bare = low_quartile(sink.trainer_times[warmup:]), low_quartile(sink.bare_times[warmup:])
    return {"model": name, "resolution": cfg.dataset.resolution, "batch": cfg.schedule.batch_size,
            "trainer_s_per_step": ours, "bare_s_per_step": bare, "ratio": ours / bare, "target": 1.05}


def low_quartile(times: list[float]) -> float:
    # Other processes only ever add time; the lower quartile is the steady speed, robust to their bursts.
    return statistics.quantiles(times, n=4)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # so that CPU time measures work, not two threads spinning
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data64 = make_dataset(root / "d64", count=8, size=72)
        rows.append(measure("tiny-sd15", tiny_config(data64, schedule__batch_size=2), root, args.steps,
                            args.warmup))
        data256 = make_dataset(root / "d256", count=8, size=256)
        cfg = tiny_config(data256, model__path=str(reduced_sd15_folder(root)), dataset__resolution=256,
                          schedule__batch_size=2)
        rows.append(measure("sd15-quarter-channels", cfg, root, max(8, args.steps // 3), 3))
    print_table(rows, args.json)


def print_table(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':24} {'px':>4} {'batch':>5} {'trainer s/step':>15} {'bare s/step':>12} {'ratio':>6} "
          f"{'target':>6}")
    for r in rows:
        ok = "ok" if r["ratio"] <= r["target"] else "MISS"
        print(f"{r['model']:24} {r['resolution']:>4} {r['batch']:>5} {r['trainer_s_per_step']:>15.4f} "
              f"{r['bare_s_per_step']:>12.4f} {r['ratio']:>6.3f} {r['target']:>6} {ok}")
    print(f"torch {torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"{torch.get_num_threads()} threads; LoRA rank 4 on attention; lower-quartile step times, CPU clock on CPU")


if __name__ == "__main__":
    main()
