"""A stand-in for `python -m trainer dataset caption DIR --model M ... --events jsonl` in GUI tests.

Writes "caption of NAME" for each image (respecting --only), one event per image, and stops between images
on {"cmd": "stop"}. FAKE_CAPTION_MODE: ok, slow (0.3 s per image, for cancel), error (no model found).
With --preview it writes nothing and answers "preview of NAME (PROMPT)" (status preview).
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

stop = threading.Event()


def emit(**event) -> None:
    print(json.dumps({"v": 1, **event}), flush=True)


def watch_stdin() -> None:
    for line in sys.stdin:
        if json.loads(line).get("cmd") == "stop":
            stop.set()


def main() -> int:
    args = sys.argv[1:]
    if args[:2] != ["dataset", "caption"]:
        print("fake captioner: only `dataset caption` is faked", file=sys.stderr)
        return 1
    folder = Path(args[2])
    mode = os.environ.get("FAKE_CAPTION_MODE", "ok")
    if mode == "error":
        emit(type="error", message=f"{args[args.index('--model') + 1]} holds no supported captioning model",
             hint="choose a folder with model.onnx + selected_tags.csv, or a transformers image-to-text model")
        return 2
    threading.Thread(target=watch_stdin, daemon=True).start()
    only = args[args.index("--only") + 1:] if "--only" in args else []
    images = [Path(p) for p in only] or sorted(p for p in folder.iterdir() if p.suffix == ".png")
    for image in images:
        if stop.is_set():
            break
        if "--preview" in args:
            prompt = args[args.index("--prompt") + 1] if "--prompt" in args else "default prompt"
            emit(type="caption", path=str(image), caption=f"preview of {image.stem} ({prompt})", status="preview",
                 reason="")
            continue
        caption = f"caption of {image.stem}"
        image.with_suffix(".txt").write_text(caption, encoding="utf-8")
        emit(type="caption", path=str(image), caption=caption, status="written", reason="")
        time.sleep(0.3 if mode == "slow" else 0.01)
    emit(type="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
