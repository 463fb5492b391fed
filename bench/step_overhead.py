"""How much time the trainer adds around the model: seconds per training step divided by a bare forward+
backward of the same LoRA-injected UNet on the same batch (ratio), and by that plus the same AdamW update
(ratio incl. AdamW: what is left is the trainer's own work, clipping, LR schedule, noise, events, logging,
checks). Target: 1.05 or less for the second.

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
from trainer.run.control import Control  # noqa: E402

WALL = "--wall" in sys.argv


def clock() -> float:
    """CPU seconds of this process (one torch thread on CPU): other programs on a shared machine can't
    inflate it, unlike wall time. But CPU time misses the main thread waiting for the GIL (a logging thread
    woken every step), so --wall times that too. On a GPU, wall time after a synchronize is what counts."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.perf_counter() if WALL else time.process_time()


class Interleaved:
    """Before each training step (batch 1 micro-step = 1 step), runs one bare UNet step, so both are timed
    under the same conditions (a shared machine's load changes by the second; interleaving step by step
    cancels that out). A trainer step is timed from the end of one bare step to the start of the next, so
    it holds everything the loop does per step, the work it does only every N steps included."""

    def __init__(self, bare_step):
        self.bare_step = bare_step
        self.trainer_times: list[float] = []
        self.bare_times: list[float] = []
        self.update_times: list[float] = []
        self.resumed_at = None

    def wrap(self, micro_step):
        def timed(*args, **kwargs):
            now = clock()
            if self.resumed_at is not None:
                self.trainer_times.append(now - self.resumed_at)
            fwd_bwd, update = self.bare_step()
            self.bare_times.append(fwd_bwd)
            self.update_times.append(update)
            self.resumed_at = clock()
            return micro_step(*args, **kwargs)
        return timed


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
    """A bare forward+backward of the same LoRA-injected UNet on a batch of the same shape, then the same
    AdamW update the trainer makes (timed apart: the update is model work too, not trainer overhead)."""
    from trainer.models.load import load_base_model
    from trainer.run.optim import build_optimizer, param_groups
    from trainer.run.runtime import _add_adapters

    model = load_base_model(cfg.model.path)
    params = _add_adapters(cfg, model)[0]
    for p in params:
        p.data = p.data.float()
    optimizer = build_optimizer(cfg, param_groups(cfg, params, []), torch.device("cpu"))
    unet = model.unet.train()
    b, side = cfg.schedule.batch_size, cfg.dataset.resolution // 8
    latents = torch.randn(b, 4, side, side)
    hidden = torch.randn(b, 77, unet.config.cross_attention_dim)
    t = torch.randint(0, 1000, (b,))

    def step() -> tuple[float, float]:
        start = clock()
        unet(latents, t, hidden).sample.float().pow(2).mean().backward()
        between = clock()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return between - start, clock() - between

    return step


def measure(name: str, cfg, root: Path, steps: int, warmup: int) -> dict:
    from trainer.run import loop

    cfg.schedule.max_steps = steps + warmup + 1
    run_dir = root / f"run-{name}"
    run_dir.mkdir()
    timer, original = Interleaved(bare_step_fn(cfg)), loop._micro_step
    loop._micro_step = timer.wrap(original)
    try:
        loop.train(cfg, run_dir, RecordingSink(), Control())
    finally:
        loop._micro_step = original
    n = len(timer.trainer_times)
    ours, bare, update = timer.trainer_times[warmup:], timer.bare_times[warmup:n], timer.update_times[warmup:n]
    return {"model": name, "resolution": cfg.dataset.resolution, "batch": cfg.schedule.batch_size,
            "trainer_s_per_step": statistics.fmean(ours), "bare_s_per_step": statistics.fmean(bare),
            "update_s_per_step": statistics.fmean(update), "ratio": sum(ours) / sum(bare),
            "ratio_with_update": sum(ours) / (sum(bare) + sum(update)), "target": 1.05}


def low_quartile(times: list[float]) -> float:
    # Other processes only ever add time; the lower quartile is the steady speed, robust to their bursts.
    return statistics.quantiles(times, n=4)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--wall", action="store_true", help="wall time instead of CPU time on a CPU")
    parser.add_argument("--tiny-only", action="store_true", help="skip the SD1.5-shaped model (minutes on a CPU)")
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
        if args.tiny_only:
            return print_table(rows, args.json)
        data256 = make_dataset(root / "d256", count=8, size=256)
        cfg = tiny_config(data256, model__path=str(reduced_sd15_folder(root)), dataset__resolution=256,
                          schedule__batch_size=2)
        rows.append(measure("sd15-quarter-channels", cfg, root, max(8, args.steps // 3), 3))
    print_table(rows, args.json)


def print_table(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':24} {'px':>4} {'batch':>5} {'trainer s/step':>15} {'fwd+bwd s':>10} {'AdamW s':>8} "
          f"{'ratio':>6} {'ratio incl. AdamW':>18} {'target':>6}")
    for r in rows:
        ok = "ok" if r["ratio_with_update"] <= r["target"] else "MISS"
        print(f"{r['model']:24} {r['resolution']:>4} {r['batch']:>5} {r['trainer_s_per_step']:>15.4f} "
              f"{r['bare_s_per_step']:>10.4f} {r['update_s_per_step']:>8.4f} {r['ratio']:>6.3f} "
              f"{r['ratio_with_update']:>18.3f} {r['target']:>6} {ok}")
    print(f"torch {torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"{torch.get_num_threads()} threads; LoRA rank 4 on attention; mean step times (every-N-steps work "
          "included), " + ("wall" if WALL else "CPU") + " clock on CPU")


if __name__ == "__main__":
    main()
