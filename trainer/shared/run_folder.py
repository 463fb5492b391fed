"""Whether a run folder holds a run worth protecting. Torch-free: `train` asks before anything heavy loads.

A folder where no training step ever completed (the model would not load, the dataset was empty, the first
step ran out of memory) holds only the config and events of a failed start: retrying `train --out` with the
same folder must simply start again, not send the user to `resume` a run that has nothing to resume.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trainer.shared.paths import contained_path

EVENTS_FILE = "events.jsonl"
MAX_EVENT_LINE = 1 << 20  # characters: an event line is far shorter; a longer one is read in pieces, never held


def holds_a_run(run_dir: Path) -> bool:
    """True once a step completed: a saved state, a checkpoint, an adapter, or a progress event."""
    run_dir = Path(run_dir)
    if any((run_dir / "state").glob("step-*")) or any((run_dir / "checkpoints").glob("*.safetensors")):
        return True
    if any(run_dir.glob("*.safetensors")):
        return True
    return _logged_progress(run_dir / EVENTS_FILE)


def _logged_progress(events: Path) -> bool:
    if not events.is_file():
        return False
    with open(events, encoding="utf-8", errors="replace") as fh:  # line by line: the file may not be ours
        while line := fh.readline(MAX_EVENT_LINE):
            try:
                whole = line.endswith("\n") or len(line) < MAX_EVENT_LINE  # not a piece of a longer one
                if whole and json.loads(line).get("type") == "progress":
                    return True
            except (json.JSONDecodeError, AttributeError):
                continue  # a torn last line of an interrupted run
    return False


def foreign_entries(run_dir: Path) -> list[Path]:
    """What in RUN_DIR no run of ours writes: the user's own files and folders, which `train --out` must
    neither replace nor delete. A config.toml counts as ours only when it holds every section of a resolved
    config (`train` writes them all; a config written by hand sets only what it is about)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [run_dir] if run_dir.exists() else []
    ours = {"config.toml", EVENTS_FILE, ".lock", SAMPLES_DIR, CHECKPOINTS_DIR, STATE_DIR, LOGS_DIR}
    found = [p for p in sorted(run_dir.iterdir()) if p.name not in ours and not _ours_by_kind(p)]
    config = run_dir / "config.toml"
    if config.exists() and not _resolved_config(config):
        found.insert(0, config)
    return found


def _ours_by_kind(path: Path) -> bool:
    # adapters (NAME.safetensors and its EMA twin), and the hidden temp file of a write a crash interrupted
    return path.is_file() and (path.suffix == ".safetensors" or (path.name.startswith(".")
                                                                 and path.name.endswith(".tmp")))


def _resolved_config(path: Path) -> bool:
    import tomllib

    from trainer.shared.config import SECTIONS

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return "schema_version" in data and all(isinstance(data.get(name), dict) for name in SECTIONS)


def clear_failed_start(run_dir: Path) -> None:
    """Forget the events of an attempt that never trained, so events.jsonl tells this run's story only."""
    (Path(run_dir) / EVENTS_FILE).unlink(missing_ok=True)


# -- the layout of a run folder, for the GUI and the engine alike (a second protocol beside the events) ------
SAMPLES_DIR, CHECKPOINTS_DIR, STATE_DIR, LOGS_DIR = "samples", "checkpoints", "state", "logs"
_SAMPLE = re.compile(r"^step(\d{6,})_p(\d{2,})\.png$")
_CHECKPOINT_STEP = re.compile(r"-step(\d{6,})$")
EMA_SUFFIX = ".ema.safetensors"


def sample_name(step: int, index: int) -> str:
    """samples/stepNNNNNN_pNN.png: the preview of prompt INDEX at STEP (0 = the baseline before training)."""
    return f"step{step:06d}_p{index:02d}.png"


def parse_sample(path: Path) -> tuple[int, int] | None:
    """(step, prompt index) of a preview image's file name, or None for any other file."""
    match = _SAMPLE.match(Path(path).name)
    return (int(match[1]), int(match[2])) if match else None


def checkpoint_name(output_name: str, step: int) -> str:
    return f"{output_name}-step{step:06d}.safetensors"


def adapter_path(run_dir: Path, output_name: str) -> Path:
    """RUN_DIR/NAME.safetensors, the final adapter; a name that would leave the run is refused."""
    return contained_path(run_dir, output_name, "config key 'saving.output_name'", ".safetensors")


def checkpoint_path(run_dir: Path, output_name: str, step: int) -> Path:
    return contained_path(Path(run_dir) / CHECKPOINTS_DIR, checkpoint_name(output_name, step),
                          "config key 'saving.output_name'")


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_STEP.search(Path(path).stem)
    return int(match[1]) if match else None


def ema_path(adapter: Path) -> Path:
    """NAME.safetensors -> NAME.ema.safetensors beside it: the average of the weights (lora.ema_decay), written
    for the final adapter and each checkpoint. A variant of its adapter, never an adapter of its own in a list."""
    adapter = Path(adapter)
    return adapter.with_name(adapter.stem + EMA_SUFFIX)


def is_ema_file(path: Path) -> bool:
    return Path(path).name.endswith(EMA_SUFFIX)


def ema_of(adapter: Path) -> Path | None:
    """The EMA file written beside ADAPTER, when the run kept one."""
    path = ema_path(adapter)
    return path if path.is_file() else None


def samples_in(run_dir: Path) -> list[tuple[Path, int, int]]:
    """Every preview image of a run with its step and prompt index, in step order."""
    found = [(p, *parsed) for p in (Path(run_dir) / SAMPLES_DIR).glob("step*_p*.png")
             if (parsed := parse_sample(p)) is not None]
    return sorted(found, key=lambda item: (item[1], item[2]))


def checkpoints_in(run_dir: Path, output_name: str = "*") -> list[Path]:
    """The run's checkpoint adapters (of OUTPUT_NAME, default any), oldest first, without their EMA files."""
    found = (Path(run_dir) / CHECKPOINTS_DIR).glob(f"{output_name}-step[0-9]*.safetensors")
    return sorted((p for p in found if not is_ema_file(p)), key=lambda p: (checkpoint_step(p) or 0, p.name))


def adapters_in(run_dir: Path) -> list[Path]:
    """The final adapter first, then checkpoints, newest first; EMA files are not listed (ema_of finds them)."""
    return final_adapters(run_dir) + checkpoints_in(run_dir)[::-1]


def final_adapters(run_dir: Path) -> list[Path]:
    """The adapter(s) a run wrote at its end (saving.output_name), without their EMA files."""
    return [p for p in sorted(Path(run_dir).glob("*.safetensors")) if not is_ema_file(p)]


def checkpoint_for_step(run_dir: Path, step: int) -> Path | None:
    return next((p for p in checkpoints_in(run_dir) if checkpoint_step(p) == step), None)
