"""GUI responsiveness: how long `python -m app` takes to show its window, the longest stall of the Qt
event loop while importing 500 images and while a tiny-model run streams events and samples, and how long
each preview takes to appear after the engine wrote it. Targets: window visible within 1.5 s with nothing
heavy imported; no stall over 50 ms; each preview visible within 1 s.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_latency.py [--count 500] [--startup-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.main_window import MainWindow  # noqa: E402

TICK_MS = 10
ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "tokenizers", "numpy")
# Runs `python -m app` as a user's launch does, and prints the seconds from process start until the main
# window has been shown and the event loop has painted it, then which heavy modules were loaded by then.
_STARTUP_CHILD = """
import os, sys, time
t0 = float(os.environ["BENCH_T0"])
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import app.main_window as mw
shown = mw.MainWindow.showEvent
def report(self, event):
    shown(self, event)
    def done():
        heavy = [m for m in os.environ["BENCH_HEAVY"].split(",") if m in sys.modules]
        print("visible", time.time() - t0, ",".join(heavy) or "-", flush=True)
        QApplication.instance().exit(0)
    QTimer.singleShot(0, done)
mw.MainWindow.showEvent = report
sys.argv = ["lora-studio"]
from app.__main__ import main
sys.exit(main())
"""


def startup_seconds(runs: int = 5) -> tuple[float, str]:
    """The median time to a visible window over RUNS launches (settings in a temp folder), and the heavy
    modules loaded by then."""
    times, heavy = [], "-"
    env = dict(os.environ, BENCH_HEAVY=",".join(HEAVY), XDG_CONFIG_HOME=tempfile.mkdtemp(),
               PYTHONPATH=str(ROOT))
    for _ in range(runs):
        env["BENCH_T0"] = repr(time.time())
        out = subprocess.run([sys.executable, "-c", _STARTUP_CHILD], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=120).stdout
        line = next(line for line in out.splitlines() if line.startswith("visible"))
        times.append(float(line.split()[1]))
        heavy = line.split()[2]
    return sorted(times)[len(times) // 2], heavy


class StallMeter:
    """A 10 ms timer that records how late it fires: lateness is time the event loop was blocked."""

    def __init__(self):
        self.clock = QElapsedTimer()
        self.timer = QTimer(interval=TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.worst = 0.0
        self.last = 0

    def start(self) -> None:
        self.worst, self.last = 0.0, 0
        self.clock.start()
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst

    def _tick(self) -> None:
        now = self.clock.elapsed()
        if self.last:
            self.worst = max(self.worst, now - self.last - TICK_MS)
        self.last = now


def wait_for(signal, timeout_ms: int) -> None:
    loop = QEventLoop()
    signal.connect(lambda *_: loop.quit())
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()


def generate(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(base, i, axis=0)).save(folder / f"img_{i:04d}.jpg", quality=90)


def measure(count: int) -> list[tuple[str, float, str]]:
    app = QApplication.instance() or QApplication(sys.argv)
    root = Path(tempfile.mkdtemp())
    generate(root / "src", count)
    window = MainWindow(data_dir=root / "app")
    window.show()
    window.open_project(root / "proj", create=True)
    meter = StallMeter()
    meter.start()
    window.dataset_page.import_paths([root / "src"])
    wait_for(window.dataset_page.import_finished, 600_000)
    for _ in range(50):  # let the thumbnails arrive too
        app.processEvents()
        time.sleep(0.02)
    import_stall = meter.stop()

    latencies = []
    page = window.run_page
    original = page.gallery.add_sample

    def timed_add(path, prompt, step, index):
        original(path, prompt, step, index)
        latencies.append(time.time() - os.path.getmtime(path))

    page.gallery.add_sample = timed_add
    meter.start()
    page.prepare(root / "run", demo=True, overrides=["schedule.max_steps=60", "sampling.every_n_steps=10"])
    page.start()
    wait_for(page.run_finished, 600_000)
    run_stall = meter.stop()
    window.close()
    app.processEvents()
    return [("longest stall while importing (ms)", import_stall, "<= 50"),
            ("longest stall while training (ms)", run_stall, "<= 50"),
            ("slowest preview to appear (s)", max(latencies), "<= 1.0"),
            ("previews shown", float(len(latencies)), "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="also print the rows as one JSON line")
    parser.add_argument("--startup-only", action="store_true", help="only the time to a visible window")
    args = parser.parse_args()
    seconds, heavy = startup_seconds()
    print(f"heavy modules loaded when the window showed: {heavy}")
    rows = [("window visible after launch (s, median of 5)", seconds, "<= 1.5")]
    rows += [] if args.startup_only else measure(args.count)
    if args.json:
        print(json.dumps({"bench": "gui_latency", "rows": rows}))
    print(f"{'figure':40} {'value':>10} {'target':>8}")
    for name, value, target in rows:
        print(f"{name:40} {value:>10.3f} {target:>8}")


if __name__ == "__main__":
    main()
