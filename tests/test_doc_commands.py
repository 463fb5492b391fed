"""Every shell command in README.md and docs/ runs as written, and every TOML example is a valid config.

Each page's ```bash blocks run in order, one line at a time through bash, in a scratch "world" that holds
what the docs talk about, built from the tiny demo models: `~/refs` and `~/Downloads/refs` (images), a
`~/photos.zip`, datasets, `my-lora.toml` and `my.toml` (fast configs on demo:sd15 / demo:sdxl), a trained
run at `runs/my-lora-20261124-101500`, an A1111 and a ComfyUI install, and tiny captioning models at
`~/models/wd-vit-tagger-v3` and `~/models/blip-large`. HOME is the world, so `~/` means it, and the
environment's bin folder comes first on PATH, as after `source .venv/bin/activate`.

A block that cannot run here (it needs a GPU, a real checkpoint, a display, or takes minutes) is marked in
the page, on the line just before the block; the reason is shown when the test skips it:

    <!-- docs-test skip: needs a real SDXL checkpoint -->

A page gets new commands checked by being written: nothing here lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from trainer.commands.dispatch import GUI_OPTIONS
from trainer.shared import config as config_mod

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
SKIP = re.compile(r"^<!--\s*docs-test skip:\s*(.+?)\s*-->$")
SHELLS = {"bash", "sh", "shell", "console"}
TRAINED_RUN = "runs/my-lora-20261124-101500"
COMMAND_TIMEOUT_S = 300


@dataclass
class Block:
    doc: Path
    line: int          # 1-based line of the opening fence
    lang: str
    text: str
    skip: str          # why it is not run, or ""

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    found, lines, i = [], doc.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.match(before)
        found.append(Block(doc, i + 1, opening[1].lower(), "\n".join(lines[i + 1:end]),
                           marker[1] if marker else ""))
        i = end + 1
    return found


def shell_lines(text: str) -> list[str]:
    """Commands of a block: continuation lines joined, blank lines and whole-line comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def shell_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc) if b.lang in SHELLS]


def test_every_command_block_is_marked_as_shell():
    """An unlabelled block that starts with a command would silently escape the test below."""
    unlabelled = [b.where for doc in DOCS for b in blocks(doc) if not b.lang and shell_lines(b.text)
                  and shell_lines(b.text)[0].split()[0] in {"lora-studio", "accelerate", "bash", "python"}]
    assert not unlabelled, f"label these blocks ```bash: {unlabelled}"


# --- the world the docs are written against -------------------------------------------------------------

def _images(folder: Path, count: int, first_color: int, captions: list[str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", (320, 288), (first_color + 23 * i, 90, 200 - 17 * i))
        image.paste((255 - 11 * i, 255, 0), (40 + 9 * i, 60, 140 + 9 * i, 170))
        image.save(folder / f"img{i:02d}.png")
        if captions:
            (folder / f"img{i:02d}.txt").write_text(captions[i % len(captions)], encoding="utf-8")


CAPTIONS = ["woman, red hair, blue eyes, sitting, indoors, smile", "woman, red hair, blue eyes, standing, outdoors",
            "red hair, woman, blue eyes, upper body, white shirt"]
FAST = """
[schedule]
max_steps = 2
epochs = 0
[sampling]
every_n_steps = {sample_every}
steps = 2
[saving]
every_n_steps = {save_every}
"""


def _configs(work: Path) -> None:
    """Two steps each. my-lora.toml's run also leaves a checkpoint, a state and previews to export."""
    (work / "my-lora.toml").write_text(
        '[model]\npath = "demo:sd15"\n[dataset]\npath = "~/data/my-character"\nresolution = 64\n'
        '[lora]\nrank = 16\nalpha = 8\n' + FAST.format(sample_every=2, save_every=1) +
        'output_name = "my-lora"\ntrigger_phrase = "zkx"\n', encoding="utf-8")
    (work / "my.toml").write_text(  # epochs = 0: the presets it is stacked on ask for 10 epochs
        '[model]\npath = "demo:sdxl"\n[dataset]\npath = "~/loras/zkx/dataset"\nresolution = 64\n'
        + FAST.format(sample_every=0, save_every=0) + 'output_name = "zkx"\ntrigger_phrase = "zkx, woman"\n',
        encoding="utf-8")


def _environment(home: Path) -> dict:
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen",
               XDG_DATA_HOME=str(home / ".local/share"), XDG_CONFIG_HOME=str(home / ".config"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One short run of my-lora.toml (checkpoints, state, samples, adapter), copied into every world."""
    home = tmp_path_factory.mktemp("trained-home")
    _images(home / "data" / "my-character", 3, 10, CAPTIONS)
    work = home / "work"
    work.mkdir()
    _configs(work)
    out = work / TRAINED_RUN
    done = subprocess.run(["lora-studio", "train", "my-lora.toml", "--out", str(out)], cwd=work, env=_environment(home),
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def caption_models(tmp_path_factory) -> Path:
    from tests.support.caption_models import (
        build_blip,
        build_florence2,
        build_llava,
        build_qwen_vl,
        build_tagger,
    )

    folder = tmp_path_factory.mktemp("caption-models")
    build_tagger(folder / "wd-vit-tagger-v3", [("general", 9, 0.9), ("red hair", 0, 0.8), ("smile", 0, 0.6),
                                               ("simple background", 0, 0.7), ("zkx", 4, 0.9)])
    build_blip(folder / "blip-large")
    build_florence2(folder / "Florence-2-large")  # tiny random vision-language models under the docs' names
    build_qwen_vl(folder / "Qwen2.5-VL-3B-Instruct")
    build_llava(folder / "joycaption")
    return folder


def build_world(root: Path, trained_run: Path, caption_models: Path) -> tuple[Path, Path]:
    home, work = root / "home", root / "home" / "work"
    _images(home / "refs", 4, 30, CAPTIONS)
    _images(home / "Downloads" / "refs", 3, 60, CAPTIONS[:1])
    _images(home / "data" / "my-character", 3, 10, CAPTIONS)
    _images(home / "datasets" / "zkx", 3, 90, ["zkx, watermark, red hair"])
    _images(home / "loras" / "zkx" / "dataset", 2, 120, ["zkx, woman, sitting"])
    with zipfile.ZipFile(home / "photos.zip", "w") as archive:
        _images(root / "zipped", 2, 150)
        for image in sorted((root / "zipped").iterdir()):
            archive.write(image, f"photos/{image.name}")
    (home / "stable-diffusion-webui").mkdir()
    (home / "stable-diffusion-webui" / "webui.py").write_text("")
    (home / "ComfyUI" / "comfy").mkdir(parents=True)
    (home / "ComfyUI" / "main.py").write_text("")
    shutil.copytree(caption_models, home / "models")
    work.mkdir(parents=True)
    _configs(work)
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)  # for `source .venv/bin/activate`
    shutil.copytree(trained_run, work / TRAINED_RUN)
    (work / TRAINED_RUN / ".lock").unlink(missing_ok=True)
    return home, work


def _pages_with_commands() -> list[Path]:
    return sorted({b.doc for b in shell_blocks()})


@pytest.mark.parametrize("doc", _pages_with_commands(), ids=lambda d: str(d.relative_to(ROOT)))
def test_every_documented_command_runs_as_written(doc, tmp_path, trained_run, caption_models):
    page = [b for b in shell_blocks() if b.doc == doc]
    runnable = [b for b in page if not b.skip]
    if not runnable:
        pytest.skip("; ".join(f"{b.where}: {b.skip}" for b in page))
    home, work = build_world(tmp_path, trained_run, caption_models)
    env = _environment(home)
    for block in runnable:
        for command in shell_lines(block.text):
            done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S)
            said = (done.stdout + done.stderr)[-3000:]
            assert done.returncode == 0, f"{block.where}: `{command}` exited {done.returncode}:\n{said}"
            assert "Traceback" not in done.stderr, f"{block.where}: `{command}` crashed:\n{said}"


# --- what need not run to be checked ---------------------------------------------------------------------

def test_every_toml_example_is_a_valid_config():
    bad = []
    for block in (b for doc in DOCS for b in blocks(doc) if b.lang == "toml" and not b.skip):
        try:
            config_mod.from_dict(tomllib.loads(block.text))
        except (tomllib.TOMLDecodeError, config_mod.ConfigError) as exc:
            bad.append(f"{block.where}: {exc}")
    assert not bad, bad


class _Refused(Exception):
    pass


def _strict_parser() -> argparse.ArgumentParser:
    from trainer.commands.dispatch import build_parser

    def refuse(self, message):
        raise _Refused(message)

    parser = build_parser()
    for p in [parser, *_subparsers(parser)]:
        p.error = refuse.__get__(p)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_subparsers(sub)]
    return found


def test_every_lora_studio_command_in_the_text_names_real_options():
    """Inline `lora-studio ...` mentions hold placeholders (FILE, RUN_DIR), so they are not run, but a
    command or option that does not exist (`--self-test` once was) is caught here."""
    spans = [(doc, m[1]) for doc in DOCS for m in re.finditer(r"`(lora-studio(?: [^`]*)?)`",
                                                               doc.read_text(encoding="utf-8"))]
    spans += [(b.doc, line) for b in shell_blocks() for line in shell_lines(b.text)
              if line.startswith("lora-studio")]
    assert len(spans) > 10
    wrong = []
    for doc, span in spans:
        words = shlex.split(span.split(" #")[0])[1:]
        if words and words[0] in GUI_OPTIONS:
            continue  # handed to the app (tests/trainer/test_cli_train.py checks that it is)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # `--help` prints, then exits
                _strict_parser().parse_args(words)
        except _Refused as exc:
            if "unrecognized arguments" in str(exc) or "invalid choice" in str(exc):
                wrong.append(f"{doc.relative_to(ROOT)}: `{span}`: {exc}")
        except SystemExit:
            pass  # --help
    assert not wrong, wrong
