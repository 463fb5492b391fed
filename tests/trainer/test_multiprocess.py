"""Data-parallel training through `accelerate launch`: two CPU processes talking over gloo, exactly as on two
GPUs but without them. Both processes must end with the same LoRA weights (DDP averages the gradients, so
they stay bit-identical), and only the first process writes: one events stream, one adapter, one set of
checkpoints.

Every process logs "process I of N: adapter fingerprint H" at the end (trainer/loop.py); the test compares
those, and checks that the saved training state hashes to the same value.
"""

import hashlib
import re
import socket
import subprocess
import sys

import pytest
import torch.distributed
from safetensors.torch import load_file

from tests.support.engine import REPO, _env, read_jsonl
from trainer.events import decode

pytest.importorskip("accelerate")
pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend for CPU processes")

# Signs that this machine can't run a gloo process group at all (no loopback, sandboxed sockets): skip,
# since the engine isn't what failed.
CANNOT_START = re.compile(r"(gloo|rendezvous|c10d).*(connect|refused|timed? ?out|address)|"
                          r"Address family not supported|Network is unreachable", re.IGNORECASE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out, *extra):
    """`accelerate launch --multi_gpu --num_processes 2 -m trainer train ...` on the CPU (gloo)."""
    env = dict(_env(), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()),
           "-m", "trainer", "train", "--demo", "--out", str(out), "--events", "jsonl",
           "--set", "performance.device=cpu", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0 and CANNOT_START.search(proc.stderr):
        pytest.skip(f"accelerate launch could not start a gloo process group here: {proc.stderr[-400:]}")
    events = [decode(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, events, proc.stderr


def state_fingerprint(snapshot) -> str:
    """The same hash as Runtime.fingerprint, over the fp32 weights saved in a training-state snapshot."""
    flat = load_file(str(snapshot / "adapter.safetensors"))
    digest = hashlib.sha256()
    for key in sorted(flat, key=lambda k: tuple(k.split("::", 1))):
        component, name = key.split("::", 1)
        digest.update(f"{component}/{name}".encode())
        digest.update(flat[key].float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def test_two_processes_train_in_step_and_only_the_first_writes(tmp_path):
    out = tmp_path / "run"
    code, events, err = launch(out, "--set", "schedule.max_steps=4", "--set", "saving.every_n_steps=2",
                               "--set", "sampling.every_n_steps=2", "--set", "sampling.steps=2",
                               "--set", "sampling.prompts=[\"a red circle\"]")
    assert code == 0, err[-3000:]

    prints = dict(re.findall(r"process (\d) of 2: adapter fingerprint ([0-9a-f]{16})", err))
    assert set(prints) == {"0", "1"}, err[-3000:]
    assert prints["0"] == prints["1"], "the two processes ended with different LoRA weights"
    assert state_fingerprint(out / "state" / "step-000004") == prints["0"], "the saved state is what was trained"

    # one stream: each event once, from the first process only
    assert [e.type for e in events].count("started") == 1 and [e.type for e in events].count("done") == 1
    assert [e.step for e in events if e.type == "progress"] == [1, 2, 3, 4]
    copy = read_jsonl(out / "events.jsonl")
    assert [e["type"] for e in copy] == [e.type for e in events]

    # one set of files
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.toml", "demo-lora.safetensors",
                                                     "events.jsonl", "logs", "samples", "state"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["demo-lora-step000002.safetensors"]
    assert sorted(p.name for p in (out / "state").iterdir()) == ["step-000002", "step-000004"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step000000_p00.png", "step000002_p00.png", "step000004_p00.png"]
    assert len(list((out / "logs").iterdir())) == 1, "one TensorBoard log"
    assert not list(out.rglob(".*")), "no temp files left behind"
    assert load_file(str(out / "demo-lora.safetensors"))
