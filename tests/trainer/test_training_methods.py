"""Training methods of issue 17's second part (timestep shift, long captions, EMA, masked loss, per-block
ranks, starting from a LoRA file, AdaLoRA): each through the CLI on the tiny model, exported and verified."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.support.engine import make_dataset, run_cli
from tests.support.ui_formulas import modules_of
from trainer.config import LossConfig
from trainer.export.verify import verify_file
from trainer.objective import draw_timesteps


def _train(root, name, *sets, steps=1):
    """Train the demo model on root/data through the CLI; return (events, adapter path)."""
    out = root / name
    args = ["train", "--demo", "--out", str(out), "--events", "jsonl", "--set", f"dataset.path={root / 'data'}",
            "--set", f"schedule.max_steps={steps}", "--set", "sampling.every_n_steps=0",
            "--set", "saving.every_n_steps=0", "--set", "saving.dtype=fp32"]
    code, events, stderr = run_cli(*args, *[a for s in sets for a in ("--set", s)])
    assert code == 0, stderr
    adapter = out / "demo-lora.safetensors"
    report = verify_file(adapter)
    assert report.ok, report.summary()  # every variant exports a file the UIs load completely
    return events, adapter


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A shared dataset, the plain one-step reference run's modules, and a function to run a variant."""
    root = tmp_path_factory.mktemp("methods")
    make_dataset(root / "data", count=4)
    _, plain = _train(root, "plain")
    return root, modules_of(load_file(str(plain))), lambda name, *sets, **kw: _train(root, name, *sets, **kw)


def _meta(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


# --- timestep shift ---------------------------------------------------------------------------------------

def test_timestep_shift_moves_the_drawn_timesteps_toward_noise_inside_the_window():
    plain = draw_timesteps(20000, torch.Generator().manual_seed(0), LossConfig())
    shifted = draw_timesteps(20000, torch.Generator().manual_seed(0), LossConfig(timestep_shift=3.0))
    assert plain.float().mean() == pytest.approx(500, abs=10)
    # s = 3: the window's middle (u = 0.5) lands at 0.75, the mean of s·u/(1+(s−1)u) is about 0.68
    assert shifted.float().median() == pytest.approx(750, abs=15) and shifted.float().mean() > 650
    windowed = draw_timesteps(5000, torch.Generator().manual_seed(0),
                              LossConfig(timestep_shift=3.0, min_timestep=200, max_timestep=400))
    assert windowed.min() >= 200 and windowed.max() <= 399 and windowed.float().median() > 330


def test_timestep_shift_changes_what_a_run_learns(runs):
    root, plain, run = runs
    _, adapter = run("shift", "loss.timestep_shift=3")
    shifted = modules_of(load_file(str(adapter)))
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert not torch.equal(shifted[module]["lora_up.weight"], plain[module]["lora_up.weight"])
