"""Whether a run folder holds a run worth protecting. Torch-free: `train` asks before anything heavy loads.

A folder where no training step ever completed (the model would not load, the dataset was empty, the first
step ran out of memory) holds only the config and events of a failed start: retrying `train --out` with the
same folder must simply start again, not send the user to `resume` a run that has nothing to resume.
"""

from __future__ import annotations

import json
from pathlib import Path

EVENTS_FILE = "events.jsonl"


def holds_a_run(run_dir: Path) -> bool:
    """True once a step completed: a saved state, a checkpoint, an adapter, or a progress event."""
    run_dir = Path(run_dir)
    if any((run_dir / "state").glob("step-*")) or any((run_dir / "checkpoints").glob("*.safetensors")):
        return True
    if any(run_dir.glob("*.safetensors")):
        return True
    return _logged_progress(run_dir / EVENTS_FILE)


def _logged_progress(events: Path) -> bool:
    if not events.exists():
        return False
    for line in events.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line).get("type") == "progress":
                return True
        except (json.JSONDecodeError, AttributeError):
            continue  # a torn last line of an interrupted run
    return False


def clear_failed_start(run_dir: Path) -> None:
    """Forget the events of an attempt that never trained, so events.jsonl tells this run's story only."""
    (Path(run_dir) / EVENTS_FILE).unlink(missing_ok=True)
