"""Training runs through the CLI for tests that compare variants: each export is verified."""

from safetensors import safe_open

from tests.support.engine import run_cli
from trainer.export.verify import verify_file


def train_verified(root, name, *sets, steps=1):
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


def adapter_metadata(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()
