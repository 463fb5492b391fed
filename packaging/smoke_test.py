"""Smoke test of the built bundle: start it offscreen, open the main window, run the demo through the
bundled engine (the GUI's "Try the demo"), and check the adapter it wrote; then the headless CLI.

    .venv/bin/python packaging/smoke_test.py dist/lora-studio/lora-studio

Runs with a throw-away HOME so the user's settings and caches are untouched. Exit code 0 = passed.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str], env: dict, limit: int) -> subprocess.CompletedProcess:
    start = time.monotonic()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    print(f"{' '.join(cmd[1:]) or '(gui)'}: exit {result.returncode} in {time.monotonic() - start:.1f} s")
    return result


def main() -> int:
    bundle = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/lora-studio/lora-studio").resolve()
    home = Path(tempfile.mkdtemp(prefix="lora-studio-smoke-"))
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local/share"), XDG_CACHE_HOME=str(home / ".cache"),
               QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", PYTHONPATH="")
    gui = run([str(bundle), "--self-test"], env, 900)
    print(gui.stdout.strip()[-2000:])
    if gui.returncode != 0 or "self-test: passed" not in gui.stdout:
        print(gui.stderr[-4000:], file=sys.stderr)
        return 1
    cli = run([str(bundle), "train", "--demo", "--out", str(home / "cli-run"), "--set", "schedule.max_steps=20"],
              env, 600)
    if cli.returncode != 0 or not (home / "cli-run" / "demo-lora.safetensors").exists():
        print(cli.stderr[-4000:], file=sys.stderr)
        return 1
    inspect = run([str(bundle), "inspect", str(home / "cli-run" / "demo-lora.safetensors")], env, 300)
    print(inspect.stdout.strip().splitlines()[0] if inspect.stdout.strip() else inspect.stderr[-1000:])
    return 0 if inspect.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
