"""Damaged resume state (issue 29): a snapshot is checked whole against itself and the run before any of it
is used; each kind of damage is "state damaged" naming the snapshot and what to do, never a traceback and
never a silently wrong resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.engine import make_dataset, run_cli
from trainer.run.state import load_state
from trainer.run.state_check import StateDamaged, file_digests


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished demo run with snapshots at steps 2 and 4."""
    root = tmp_path_factory.mktemp("state")
    code, _, stderr = run_cli("train", "--demo", "--out", str(root / "run"), "--events", "jsonl",
                              "--set", f"dataset.path={make_dataset(root / 'data', count=2)}",
                              "--set", "schedule.max_steps=4", "--set", "sampling.every_n_steps=0",
                              "--set", "saving.every_n_steps=2")
    assert code == 0, stderr
    return root / "run"


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, copy / "state" / "step-000004"


def _edit_meta(snapshot, edit) -> None:
    meta = json.loads((snapshot / "trainer.json").read_text())
    edit(meta)
    (snapshot / "trainer.json").write_text(json.dumps(meta))


def _resign(snapshot) -> None:
    """Record the files' checksums again, as a snapshot consistent in itself but wrong for its run."""
    _edit_meta(snapshot, lambda meta: meta.update(files=file_digests(snapshot)))


DAMAGE = {
    "a missing key": (lambda s: _edit_meta(s, lambda m: m.pop("lr_scheduler")), "lacks"),
    "an extra field": (lambda s: _edit_meta(s, lambda m: m["position"].update(hacked=1)), "exactly"),
    "a step of 1e9": (lambda s: _edit_meta(s, lambda m: m["position"].update(step=10**9)), "says step"),
    "a negative epoch": (lambda s: _edit_meta(s, lambda m: m["position"].update(epoch=-1)), "epoch"),
    "not JSON": (lambda s: (s / "trainer.json").write_text("{"), "cannot be read"),
    "another snapshot's optimizer": (lambda s: shutil.copy(s.parent / "step-000002" / "optimizer.pt",
                                                           s / "optimizer.pt"), "not the file"),
    "a missing file": (lambda s: (s / "rng.safetensors").unlink(), "missing"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_each_kind_of_damage_is_named_with_what_to_do(case, run, tmp_path):
    damage, words = DAMAGE[case]
    _run, snapshot = _copy(run, tmp_path)
    damage(snapshot)
    with pytest.raises(StateDamaged, match=words) as err:
        load_state(snapshot)
    assert str(snapshot) in err.value.message and "step-000002" in err.value.hint


def test_nan_in_a_consistent_snapshot_is_refused(run, tmp_path):
    _run, snapshot = _copy(run, tmp_path)
    tensors = load_file(str(snapshot / "adapter.safetensors"))
    next(iter(tensors.values()))[0] = float("nan")
    save_file(tensors, str(snapshot / "adapter.safetensors"))
    _resign(snapshot)
    with pytest.raises(StateDamaged, match="NaN"):
        load_state(snapshot)


def test_an_adapter_of_another_rank_is_refused_on_resume_and_the_run_is_left_as_it_was(run, tmp_path):
    copy, snapshot = _copy(run, tmp_path)
    tensors = load_file(str(snapshot / "adapter.safetensors"))
    wider = {k: torch.cat([t, t], 0) if k.endswith("lora_A.weight") else t for k, t in tensors.items()}
    save_file(wider, str(snapshot / "adapter.safetensors"))
    _resign(snapshot)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name not in ("events.jsonl", ".lock")}
    code, events, stderr = run_cli("resume", str(copy), "--events", "jsonl")
    assert code == 2 and "does not fit" in events[-1].message and "Traceback" not in stderr
    assert "(8, 32) in the state" in events[-1].message and "step-000002" in events[-1].hint
    after = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name not in ("events.jsonl", ".lock")}
    assert after == before
