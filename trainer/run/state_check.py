"""A resume snapshot checked as a whole before any of it is used (trainer.run.state reads it).

Each snapshot's trainer.json records the size and SHA-256 of the other files, so a file from another run or
another snapshot (an optimizer state copied across, a half-restored backup) is refused rather than resumed
from silently. The position and the tensors are checked for their fields, types and ranges, and then against
the run at hand: the same adapter modules with the same shapes, the same optimizer parameters, a step within
the run. Every failure is a StateDamaged naming the snapshot and what to do.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from trainer.shared.errors import UserError
from trainer.shared.fsutil import sha256_of

SNAPSHOT_FILES = ("adapter.safetensors", "optimizer.pt", "rng.safetensors")
META_FIELDS = {"position", "lr_scheduler", "files"}   # "files": absent in snapshots of older versions
POSITION_FIELDS = {"step": int, "epoch": int, "batch_in_epoch": int, "started_at": (int, float), "extra": dict}
# adapter-file components that ride beside the adapters (trainer.run.ema, trainer.lora.adalora)
EXTRA_COMPONENTS = {"ema", "adalora_scores"}
SHAPED_STATE = ("exp_avg", "exp_avg_sq", "momentum_buffer")  # optimizer state shaped like its parameter


class StateDamaged(UserError):
    pass


def damaged(snapshot: Path, what: str) -> StateDamaged:
    return StateDamaged(f"training state {snapshot} is damaged: {what}", _what_to_do(snapshot))


def _what_to_do(snapshot: Path) -> str:
    from trainer.run.state import snapshot_step, snapshots

    step = snapshot_step(snapshot) or 0
    earlier = [p for p in snapshots(snapshot.parent.parent) if (snapshot_step(p) or 0) < step]
    if earlier:
        return f"delete that folder to resume from {earlier[-1].name}, the snapshot before it"
    return ("it is the run's only snapshot: delete it and resume to start again from step 0 (the run's "
            "checkpoints stay), or start a new run with lora-studio train")


def file_digests(folder: Path) -> dict[str, dict]:
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
            for name in SNAPSHOT_FILES}


def check_meta(snapshot: Path, meta: object) -> dict:
    """trainer.json: exactly the known fields, a position of the right types within range, naming this
    snapshot's own step."""
    from trainer.run.state import snapshot_step

    if not isinstance(meta, dict) or not {"position", "lr_scheduler"} <= meta.keys():
        raise damaged(snapshot, "trainer.json lacks its position or learning-rate schedule")
    if extra := sorted(meta.keys() - META_FIELDS):
        raise damaged(snapshot, f"trainer.json has an unknown field {extra[0]!r}")
    position, schedule = meta["position"], meta["lr_scheduler"]
    if not isinstance(position, dict) or position.keys() != POSITION_FIELDS.keys():
        raise damaged(snapshot, f"trainer.json's position must have exactly {', '.join(POSITION_FIELDS)}")
    for key, kind in POSITION_FIELDS.items():
        value = position[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0) or \
                (key == "started_at" and not math.isfinite(value)):
            raise damaged(snapshot, f"trainer.json's position has {key} = {str(value)[:40]}")
    if position["step"] != snapshot_step(snapshot):
        raise damaged(snapshot, f"trainer.json says step {position['step']}, the folder is {snapshot.name}")
    if not isinstance(schedule, dict) or not isinstance(meta.get("files", {}), dict):
        raise damaged(snapshot, "trainer.json's learning-rate schedule or file list is not a table")
    return meta


def check_files(snapshot: Path, meta: dict) -> None:
    """Each file is the one this snapshot saved: its size and checksum as trainer.json recorded them."""
    recorded = meta.get("files")
    if recorded is None:
        return  # a snapshot of an older version: the structural checks still apply
    for name in SNAPSHOT_FILES:
        path, entry = snapshot / name, recorded.get(name)
        if not isinstance(entry, dict) or not path.is_file():
            raise damaged(snapshot, f"{name} is missing")
        if path.stat().st_size != entry.get("bytes") or sha256_of(path) != entry.get("sha256"):
            raise damaged(snapshot, f"{name} is not the file this snapshot saved (its size or checksum "
                                    "differs: a file of another run or snapshot, or a damaged copy)")


def check_tensors(snapshot: Path, flat: dict, optimizer_state: object, rng: dict) -> None:
    """The adapter file holds COMPONENT::KEY tensors with the denoiser's among them, all finite (a saver
    never writes NaN); the optimizer state is a state dict; the RNG file holds the CPU generator."""
    if not all("::" in key for key in flat) or not any(key.startswith("unet::") for key in flat):
        raise damaged(snapshot, "adapter.safetensors is not a snapshot's adapter (no unet::… tensors)")
    bad = [k for k, t in flat.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise damaged(snapshot, f"adapter.safetensors holds NaN/inf values ({bad[0]})")
    if not (isinstance(optimizer_state, dict) and isinstance(optimizer_state.get("state"), dict)
            and isinstance(optimizer_state.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                    for g in optimizer_state["param_groups"])):
        raise damaged(snapshot, "optimizer.pt is not an optimizer's state")
    if "torch_cpu" not in rng:
        raise damaged(snapshot, "rng.safetensors lacks the random generator's state")


def check_fits(snapshot: Path, loaded, adapters: dict[str, dict[str, torch.Tensor]], optimizer,
               total: int) -> None:
    """The snapshot against the run it resumes: same adapter modules and shapes, same optimizer parameters,
    a step within the run's length."""
    problem = _adapter_problem(loaded.adapters, adapters) or _optimizer_problem(loaded.optimizer_state, optimizer)
    if not problem and loaded.position.step > total:
        problem = f"it is at step {loaded.position.step}, past the run's last step {total}"
    if problem:
        raise StateDamaged(f"training state {snapshot} does not fit this run: {problem}",
                           "after resume --set of a key that shapes the adapter or the schedule (lora.rank, "
                           "lora.targets, lora.algorithm, lora.train_text_encoder, schedule.max_steps, ...), "
                           "resume without it (the run's config.toml was not changed); otherwise "
                           + _what_to_do(snapshot))


def _adapter_problem(saved: dict, expected: dict) -> str:
    extra = sorted(saved.keys() - expected.keys() - EXTRA_COMPONENTS)
    if extra:
        return f"it holds {extra[0]} weights this config does not train"
    for component, tensors in expected.items():
        have = saved.get(component, {})
        if have.keys() != tensors.keys():
            missing = sorted(tensors.keys() - have.keys()) or sorted(have.keys() - tensors.keys())
            return f"its {component} adapter has other modules than this config's (e.g. {missing[0]})"
        for key, tensor in tensors.items():
            if have[key].shape != tensor.shape:
                return (f"{component} {key} is {tuple(have[key].shape)} in the state, {tuple(tensor.shape)} "
                        "here (another lora.rank?)")
    return ""


def _optimizer_problem(saved: dict, optimizer) -> str:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = saved["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        return "its optimizer state is for other parameters (another run or config)"
    index = {i: p for i, p in zip((i for g in groups for i in g["params"]), params)}
    for i, entry in saved["state"].items():
        param = index.get(i)
        if param is None or not isinstance(entry, dict):
            return "its optimizer state names parameters this run does not have"
        for name in SHAPED_STATE:
            value = entry.get(name)
            if isinstance(value, torch.Tensor) and value.shape != param.shape:
                return f"its optimizer state has {name} of shape {tuple(value.shape)} for a {tuple(param.shape)} weight"
    return ""
