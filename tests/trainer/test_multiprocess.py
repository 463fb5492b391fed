"""Data-parallel training through `accelerate launch`: two CPU processes talking over gloo, exactly as on two
GPUs but without them. Both processes must end with the same LoRA weights (DDP averages the gradients, so
they stay bit-identical), and only the first process writes: one events stream, one adapter, one set of
checkpoints.

Every process logs "process I of N: adapter fingerprint H" at the end (trainer/loop.py); the tests compare
those, check that the saved training state hashes to the same value, that each process drew its own noise,
and that a stop request (which reaches one process only) followed by a two-process resume ends bit-identical
to the uninterrupted run (each process gets its own noise stream back). One process crashing, before the
group forms or during a step, fails the launch; the tests skip only on a machine where two bare processes
cannot form a gloo group.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed
from safetensors.torch import load_file

from tests.support.engine import REPO, _env, read_jsonl
from trainer.shared.events import decode

pytest.importorskip("accelerate")
pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend for CPU processes")

# Two bare processes joining a gloo group over the loopback and summing one number: no engine code.
GLOO_PAIR = """
import sys, datetime, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method=sys.argv[1], rank=int(sys.argv[2]), world_size=2,
                        timeout=datetime.timedelta(seconds=60))
total = torch.ones(1)
dist.all_reduce(total)
assert total.item() == 2
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def local_process_groups_work():
    """Skip only when this machine cannot run a gloo process group at all (no loopback, sandboxed sockets),
    found by two processes that run nothing of the engine. Once they can, every failure of a launch is a
    failure of the engine: a process that crashes before the others connect leaves them waiting until
    they time out or lose their peer, which is not the machine's fault."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = dict(_env(), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", GLOO_PAIR, address, str(rank)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for rank in (0, 1)]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs.append(proc.communicate()[0] + "\n(timed out)")
    if any(proc.returncode for proc in procs):
        pytest.skip(f"two local processes cannot form a gloo process group here: {outputs[0][-400:]}")


def launch(*trainer_args, input_text=None, fault=None):
    """`accelerate launch --multi_gpu --num_processes 2 -m trainer ...` on the CPU (gloo). `fault` is
    (LORA_STUDIO_FAULT, rank): that process alone meets the fault (trainer/shared/faults.py)."""
    env = dict(_env(), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    if fault:
        env.update(LORA_STUDIO_FAULT=fault[0], LORA_STUDIO_FAULT_RANK=str(fault[1]))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "trainer", *trainer_args, "--events", "jsonl"]
    # its own session, so that a hang (processes waiting for each other) can be ended with every rank
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(input_text or "", timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the processes hung (waiting for each other?):\n{stderr[-3000:]}")
    events = [decode(line) for line in stdout.splitlines() if line.strip()]
    return proc.returncode, events, stderr


def train(out, input_text=None, fault=None):
    return launch("train", "--demo", "--out", str(out), "--set", "performance.device=cpu",
                  "--set", "schedule.max_steps=4", "--set", "saving.every_n_steps=2",
                  "--set", "sampling.every_n_steps=2", "--set", "sampling.steps=2",
                  "--set", "sampling.prompts=[\"a red circle\"]", input_text=input_text, fault=fault)


def fingerprints(err) -> dict[str, str]:
    return dict(re.findall(r"process (\d) of 2: adapter fingerprint ([0-9a-f]{16})", err))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("mp") / "run"
    return (out, *train(out))


def state_fingerprint(snapshot) -> str:
    """The same hash as Runtime.fingerprint, over the fp32 weights saved in a training-state snapshot."""
    flat = load_file(str(snapshot / "adapter.safetensors"))
    digest = hashlib.sha256()
    for key in sorted(flat, key=lambda k: tuple(k.split("::", 1))):
        component, name = key.split("::", 1)
        digest.update(f"{component}/{name}".encode())
        digest.update(flat[key].float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def test_two_processes_train_in_step_and_only_the_first_writes(uninterrupted):
    out, code, events, err = uninterrupted
    assert code == 0, err[-3000:]

    prints = fingerprints(err)
    assert set(prints) == {"0", "1"}, err[-3000:]
    assert prints["0"] == prints["1"], "the two processes ended with different LoRA weights"
    assert state_fingerprint(out / "state" / "step-000004") == prints["0"], "the saved state is what was trained"
    # each process drew its own noise and timesteps, and the state keeps every stream for an exact resume
    rng = load_file(str(out / "state" / "step-000004" / "rng.safetensors"))
    assert not torch.equal(rng["noise"], rng["noise_01"]), "both processes drew the same noise"

    # one stream: each event once, from the first process only
    assert [e.type for e in events].count("started") == 1 and [e.type for e in events].count("done") == 1
    assert [e.step for e in events if e.type == "progress"] == [1, 2, 3, 4]
    copy = read_jsonl(out / "events.jsonl")
    assert [e["type"] for e in copy] == [e.type for e in events]

    # one set of files
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoints", "config.toml",
                                                     "demo-lora.safetensors", "events.jsonl", "logs", "samples",
                                                     "state"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["demo-lora-step000002.safetensors"]
    assert sorted(p.name for p in (out / "state").iterdir()) == ["step-000002", "step-000004"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step000000_p00.png", "step000002_p00.png", "step000004_p00.png"]
    assert len(list((out / "logs").iterdir())) == 1, "one TensorBoard log"
    assert [p.name for p in out.rglob(".*")] == [".lock"], "no temp files left behind"
    assert load_file(str(out / "demo-lora.safetensors"))


def test_a_stop_that_reaches_one_process_stops_both_and_resume_is_exact(uninterrupted, tmp_path):
    """stdin is read by whichever process gets the line first; both must stop at the same step."""
    out = tmp_path / "run"
    code, events, err = train(out, input_text=json.dumps({"cmd": "stop"}) + "\n")
    assert code == 0, err[-3000:]
    done = events[-1]
    assert done.type == "done" and done.stopped_early and done.step < 4
    code, events, err = launch("resume", str(out))
    assert code == 0, err[-3000:]
    assert events[0].resumed_from == done.step and events[-1].step == 4
    prints = fingerprints(err)
    assert prints["0"] == prints["1"] == fingerprints(uninterrupted[3])["0"], "resume continues exactly"
    reference = load_file(str(uninterrupted[0] / "demo-lora.safetensors"))
    resumed = load_file(str(out / "demo-lora.safetensors"))
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)



@pytest.mark.parametrize("fault", ["connect:crash", "step@2:crash"])
def test_a_process_that_crashes_fails_the_launch(tmp_path, fault):
    """The second process dies, just before the process group forms or in step 2 (the first then loses its
    peer: gloo reports "Connection closed by peer", a message the old skip rule took for a machine without
    sockets): the launch ends non-zero, promptly, and the tests above would fail on it, not skip."""
    code, events, err = train(tmp_path / "run", fault=(fault, 1))
    where = fault.split(":")[0].split("@")[0]
    assert code != 0 and f"injected crash at '{where}'" in err, err[-3000:]
    assert not any(e.type == "done" for e in events)
