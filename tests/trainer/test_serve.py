"""`lora-studio serve`: one base load, LoRAs and strengths switched per request, cancel, errors per request."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.support.engine import REPO, _env
from tests.support.loras import our_lora
from trainer.shared.events import decode


class Served:
    """`serve` as a child process, talked to line by line as the GUI does."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "trainer", "serve", "--model", "demo:sd15"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=REPO, env=_env())
        self.events = []

    def send(self, *requests: dict) -> None:
        for request in requests:
            self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def until(self, kind: str, job: str | None = None):
        for line in self.proc.stdout:
            self.events.append(decode(line))
            event = self.events[-1]
            if event.type == kind and (job is None or event.job == job):
                return event
        raise AssertionError(f"engine ended before a {kind} event: {self.events[-3:]}")


# the most images one request may ask for: the cancel, sent after the first, has minutes to arrive however
# busy the machine is, and a cancel that works ends it after a few
LONG = 1000


def gen(job: str, out, loras=(), **extra) -> dict:
    return {"cmd": "generate", "id": job, "prompt": "a blue circle", "seed": 5, "steps": 3, "out": str(out),
            "name": job, "loras": list(loras), **extra}


def test_serve_switches_loras_without_reloading_and_cancels(tmp_path):
    a = str(our_lora(tmp_path / "a.safetensors"))
    out = tmp_path / "out"
    engine = Served()
    engine.send(gen("off", out), gen("on", out, [{"path": a, "weight": 1.0}]),
                gen("zero", out, [{"path": a, "weight": 0.0}]),
                gen("bad", out, [{"path": str(tmp_path / "missing.safetensors")}]),
                gen("long", out, count=LONG))
    engine.until("image", "long")
    b = str(our_lora(tmp_path / "b.safetensors", seed=4))
    engine.send({"cmd": "cancel"}, gen("after", out),
                {"cmd": "combine", "id": "both", "out": str(tmp_path / "ab.safetensors"),
                 "loras": [{"path": a, "weight": 0.5}, {"path": b, "weight": 0.5}]})
    engine.proc.stdin.close()     # end of input: finish what is queued, then exit
    engine.until("done")
    assert engine.proc.wait(timeout=60) == 0
    events = engine.events
    assert [e.type for e in events].count("ready") == 1            # the base loaded once
    images = {e.job: e.path for e in events if e.type == "image" and e.job != "long"}
    px = {job: np.asarray(Image.open(path)).astype(int) for job, path in images.items()}
    assert np.array_equal(px["off"], px["zero"]) and np.array_equal(px["off"], px["after"])
    assert np.abs(px["on"] - px["off"]).max() > 20
    assert "<lora:a:1>" in Image.open(images["on"]).text["parameters"]
    errors = [e for e in events if e.type == "error"]
    assert [e.job for e in errors] == ["bad"] and "missing.safetensors" in errors[0].message
    done = {e.job: e for e in events if e.type == "job_done"}
    assert done["long"].cancelled and done["long"].images < LONG
    assert not done["after"].cancelled and done["after"].images == 1
    assert any(e.type == "progress" and e.job == "on" for e in events)
    assert done["both"].result["out"] == str(tmp_path / "ab.safetensors") and (tmp_path / "ab.safetensors").exists()
    assert events[-1].type == "done"
