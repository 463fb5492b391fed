"""A stand-in for `python -m trainer serve` in GUI tests: answers requests with canned events and small PNGs.

Each request line is appended to $FAKE_SERVE_LOG (JSON lines) so tests can check what the GUI asked for.
Image colours depend on the LoRA strengths, so "off" and "on" images differ as real ones would.
"""

import json
import os
import sys
from pathlib import Path

from PIL import Image


def emit(**event) -> None:
    print(json.dumps({"v": 1, **event}), flush=True)


def generate(request: dict, loaded: list) -> None:
    if request.get("model") and request["model"] not in loaded:
        loaded[:] = [request["model"]]
        emit(type="ready", model=request["model"], arch="sd1", device="cpu", width=64, height=64)
    if any("missing" in d["path"] for d in request.get("loras", [])):
        emit(type="error", message="LoRA not found: missing.safetensors", hint="give the path", job=request["id"])
        return
    out = Path(request["out"])
    out.mkdir(parents=True, exist_ok=True)
    strength = sum(d.get("weight", 1.0) for d in request.get("loras", []))
    seed = request.get("seed", 1) if request.get("seed", -1) >= 0 else 99
    for index in range(request.get("count", 1)):
        emit(type="progress", step=1, total=1, job=request["id"])
        path = out / f"{request.get('name') or request['id']}-{index:02d}.png"
        Image.new("RGB", (64, 64), (int(40 + 100 * strength) % 256, 90, (seed * 7) % 256)).save(path)
        caption = f"{len(request.get('loras', []))} LoRA · strength {strength:g} · seed {seed + index}"
        emit(type="image", path=str(path), seed=seed + index, job=request["id"], index=index,
             parameters=request["prompt"], caption=caption)
    emit(type="job_done", job=request["id"], images=request.get("count", 1))


def main() -> int:
    loaded: list = []
    log = os.environ.get("FAKE_SERVE_LOG")
    for line in sys.stdin:
        request = json.loads(line)
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(line)
        cmd = request.get("cmd")
        if cmd == "stop":
            break
        if cmd == "generate":
            generate(request, loaded)
        elif cmd in ("bake", "combine"):
            emit(type="job_done", job=request["id"], result={"out": request["out"],
                                                             "summary": f"{cmd} wrote {request['out']}"})
    emit(type="done", adapter="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
