"""Data-parallel training with `accelerate launch`: two CPU processes (gloo) on the tiny model end with
identical adapter weights, and only the main process writes files and events."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed

from tests.support.engine import REPO, _env

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend for CPU processes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_one_run_with_identical_weights(tmp_path):
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "trainer", "train", "--demo", "--out", str(out), "--events", "jsonl",
           "--set", "schedule.max_steps=6", "--set", "saving.every_n_steps=3", "--set", "sampling.every_n_steps=3",
           "--set", "sampling.steps=2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    prints = dict(re.findall(r"process (\d) of 2: adapter fingerprint (\w+)", result.stderr))
    assert set(prints) == {"0", "1"} and prints["0"] == prints["1"], result.stderr[-2000:]
    events = [json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()]
    assert events.count("started") == 1 and events.count("done") == 1 and events.count("progress") == 6
    copied = [json.loads(line)["type"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert copied == events
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["demo-lora.safetensors"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["demo-lora-step000003.safetensors"]
    assert len(list((out / "logs").iterdir())) == 1, "one TensorBoard log, from the main process"
