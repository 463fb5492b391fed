"""A stand-in for `python -m trainer` in GUI tests: prints canned JSON-lines events and writes sample PNGs.

FAKE_ENGINE_MODE: ok (a full run), crash (dies mid-run with no message), error (an error event and exit 2),
slow (a second per step; {"cmd": "stop"} on stdin ends it early after "saving" for SAVE_S, as the real engine
does), deaf (a second per step, and it never hears a stop: only a kill ends it early).
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

SAVE_S = 0.8   # a stop's checkpoint save: long enough that a window closing meanwhile has to wait for it


def emit(**event) -> None:
    print(json.dumps({"v": 1, **event}), flush=True)


def main() -> int:
    args = sys.argv[1:]
    run_dir = Path(args[args.index("--out") + 1]) if "--out" in args else Path(args[1])
    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    emit(type="started", run_dir=str(run_dir), total_steps=4, arch="sd1", device="cpu", resumed_from=0)
    stop = threading.Event()
    if mode != "deaf":
        threading.Thread(target=lambda: [stop.set() for line in sys.stdin if '"stop"' in line], daemon=True).start()
    for step in range(0, 5):
        if stop.is_set():
            time.sleep(SAVE_S)
            emit(type="done", adapter=str(run_dir / "lora.safetensors"), step=step - 1, stopped_early=True)
            return 0
        if step:
            emit(type="progress", step=step, total=4, epoch=1, loss=1.0 / step, lr=1e-4, it_s=10.0, eta_s=0.4)
            print(f"log line at step {step}", file=sys.stderr, flush=True)
        if step in (2, 4):  # held-out images: the validation loss, rising at the end (overfitting)
            emit(type="validation", step=step, loss=0.5 + step / 10, images=2)
        if step % 2 == 0:
            for index, prompt in enumerate(["a cat", "a dog"]):
                path = run_dir / "samples" / f"step{step:06d}_p{index:02d}.png"
                info = PngInfo()
                info.add_text("prompt", prompt)  # as the real engine writes it
                Image.new("RGB", (32, 32), (step * 50, 80, 120)).save(path, pnginfo=info)
                emit(type="sample", path=str(path), prompt=prompt, seed=1, step=step, index=index)
        if step == 2 and mode == "crash":
            (run_dir / "state").mkdir(exist_ok=True)
            print("Segmentation fault (pretend)", file=sys.stderr, flush=True)
            os._exit(139)
        if step == 2 and mode == "error":
            emit(type="error", message="CUDA out of memory", hint="lower the batch size to 1")
            return 2
        time.sleep(1.0 if mode in ("slow", "deaf") else 0.02)
    emit(type="done", adapter=str(run_dir / "lora.safetensors"), step=4, stopped_early=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
