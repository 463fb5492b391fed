"""Helpers for engine tests: generated datasets, in-process runs, and the real CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.run.control import Control
from trainer.run.sink import EventSink
from trainer.shared import config as config_mod
from trainer.shared.events import Event, decode

REPO = Path(__file__).resolve().parents[2]
COLORS = [(220, 40, 40), (40, 180, 70), (40, 80, 220), (240, 210, 40), (245, 245, 245), (20, 20, 20)]


def make_dataset(folder: Path, count: int = 6, size: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        array = np.zeros((size, size + 8 * i, 3), np.uint8) + np.array(COLORS[i % 6], np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        array[y:y + size // 3, x:x + size // 3] = 255 - array[y, x]
        Image.fromarray(array).save(folder / f"img_{i:02d}.png")
        (folder / f"img_{i:02d}.txt").write_text(f"tok, shape {i}, plain background", encoding="utf-8")
    return folder


def tiny_config(dataset: Path, **overrides) -> config_mod.TrainConfig:
    """A fast config on the tiny model; overrides are dotted keys with '__' for '.'."""
    cfg = config_mod.load(config_mod.PRESETS_DIR / "demo.toml")
    cfg.dataset.path = str(dataset)
    cfg.sampling.every_n_steps = 0
    cfg.saving.every_n_steps = 0
    for key, value in overrides.items():
        config_mod.set_key(cfg, key.replace("__", "."), value)
    config_mod.validate(cfg)
    return cfg


class RecordingSink(EventSink):
    """Keeps every event; can ask the run to stop once a given step is reached."""

    def __init__(self, control: Control | None = None, stop_at: int | None = None):
        super().__init__(None, progress_bar=False)
        self.events: list[Event] = []
        self.control, self.stop_at = control, stop_at

    def emit(self, event: Event) -> None:
        super().emit(event)
        self.events.append(event)
        if self.stop_at is not None and event.type == "progress" and event.step >= self.stop_at:
            self.control.request("stop")

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]


def train_in_process(cfg, run_dir: Path, resume: bool = False, stop_at: int | None = None):
    from trainer.run.loop import train

    run_dir.mkdir(parents=True, exist_ok=True)
    config_mod.save(cfg, run_dir / "config.toml")
    control = Control()
    sink = RecordingSink(control, stop_at)
    adapter = train(cfg, run_dir, sink, control, resume=resume)
    return adapter, sink


def run_cli(*args: str, timeout: float = 240, input_text: str | None = None, cwd: Path | None = None):
    """Run `python -m trainer ARGS`; return (returncode, decoded events from stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True,
                          timeout=timeout, input=input_text, cwd=cwd or REPO,
                          env=_env())
    events = [decode(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, events, proc.stderr


def _env() -> dict:
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO)
    return env


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
