"""Run every benchmark and write one table to docs/benchmarks.md: the machine, the date, each figure with its
target. The targets are ratios and latencies; absolute times are context (they depend on the machine).

    .venv/bin/python bench/report.py            # full sizes (about 10 minutes on a 2-core CPU)
    .venv/bin/python bench/report.py --quick    # smaller sizes, for a quick look
    .venv/bin/python bench/report.py --models DIR   # plus real-size memory figures (bench/memory.py)
    .venv/bin/python bench/report.py --theirs PATH/train_text_to_image_lora.py --their-python VENV/bin/python
                                                # plus the whole-process race with diffusers (bench/speed.py)
    .venv/bin/python bench/report.py --only speed step demo --theirs ...   # re-run those, keep the other rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
PY = sys.executable


def run(args: list[str], env: dict | None = None, timeout: int = 1800) -> str:
    result = subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def json_line(stdout: str, bench: str) -> dict:
    return next(json.loads(line) for line in stdout.splitlines() if line.startswith(f'{{"bench": "{bench}"'))


def demo_figures() -> list[tuple]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run(["-m", "trainer", "train", "--demo", "--out", f"{tmp}/run"])
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return [("engine", "`train --demo` wall time (s), 120 steps", seconds, "< 60", seconds < 60),
            ("engine", "`train --demo` peak memory (MB)", peak_mb, "", None)]


def step_figures(quick: bool) -> list[tuple]:
    rows = json.loads(run(["bench/step_overhead.py", "--json", "--steps", "12" if quick else "30"]))
    return [("engine", f"step time / bare UNet fwd+bwd+AdamW, {r['model']} {r['resolution']} px",
             r["ratio_with_update"], f"<= {r['target']}", r["ratio_with_update"] <= r["target"]) for r in rows] + \
        [("engine", f"step time / bare UNet fwd+bwd, {r['model']} {r['resolution']} px", r["ratio"], "", None)
         for r in rows] + \
        [("engine", f"trainer s/step, {r['model']} (context)", r["trainer_s_per_step"], "", None) for r in rows]


def speed_figures(theirs: Path, their_python: str) -> list[tuple]:
    """bench/speed.py: the whole process against diffusers' LoRA example (its path given: never vendored);
    medians of 3 alternating runs, as single whole-process wall times swing with the machine's load."""
    f = json_line(run(["bench/speed.py", "--theirs", str(theirs), "--their-python", their_python, "--repeats",
                       "3", "--json"], timeout=3600), "speed")
    return [("speed", "ours: command to adapter on disk (s), tiny SD1.5, 24 images, 64 px, 200 steps",
             f["ours_s"], "", None),
            ("speed", "diffusers train_text_to_image_lora.py, same work (s)", f["theirs_s"], "", None),
            ("speed", "ratio (diffusers / ours)", f["ratio"], ">= 1.5", f["ratio"] >= 1.5),
            ("speed", "diffusers on one CPU thread, as ours runs a tiny model (s)", f["theirs_one_thread_s"],
             "", None),
            ("speed", "ratio with the same thread setting", f["ratio_same_threads"], ">= 1.5",
             f["ratio_same_threads"] >= 1.5),
            ("speed", "the bare libraries doing the same work, no trainer around them (s)", f["bare_s"], "", None),
            ("speed", "best ratio any trainer on these libraries reaches here (diffusers / bare)",
             f["best_ratio"], "", None),
            ("speed", "ours / bare libraries (what our engine adds)", f["ours_over_bare"], "", None),
            ("speed", "`train --demo`: command to first step done (s)", f["demo_first_step_s"], "<= 3",
             f["demo_first_step_s"] <= 3),
            ("speed", f"1-min load average during the speed runs (context: {os.cpu_count()} cores)", f["load"],
             "", None)]


def dataset_figures(quick: bool) -> list[tuple]:
    f = json_line(run(["bench/dataset_import.py", "--json", "--count", "100" if quick else "500"]),
                  "dataset_import")["figures"]
    rows = []
    for key, value in f.items():
        target, ok = ("> 1", value > 1) if key == "second_epoch_speedup" else ("", None)
        rows.append(("dataset", key.replace("_", " "), value, target, ok))
    return rows


def gui_figures(quick: bool) -> list[tuple]:
    data = json_line(run(["bench/gui_latency.py", "--json", "--count", "100" if quick else "500"],
                         env={"QT_QPA_PLATFORM": "offscreen"}), "gui_latency")
    out = []
    for name, value, target in data["rows"]:
        ok = None
        if target.startswith("<="):
            ok = value <= float(target[2:])
        out.append(("gui", name, value, target, ok))
    return out


def caption_figures(quick: bool) -> list[tuple]:
    data = json_line(run(["bench/caption.py", "--json", "--count", "16" if quick else "64"]), "caption")
    return [("captioning", f"{r['backend']} images/s (tiny model, CPU)", r["images_per_s"], "", None)
            for r in data["rows"]]


def generate_figures(quick: bool) -> list[tuple]:
    """Try it (bench/generate.py): first image after a LoRA switch vs a cold start; merge peak RSS."""
    args = ["bench/generate.py", "--steps", "8"] + ([] if quick else ["--merge", "sd15"])
    f = json_line(run(args, timeout=3600), "generate")
    switch = f["switch_new_lora_s"]
    rows = [("try it", "serve cold start to first image (s), demo:sd15, 8 steps", f["cold_start_s"], "", None),
            ("try it", "first image after switching to a new LoRA (s), no base reload", switch,
             "< cold start", switch < f["cold_start_s"]),
            ("try it", "first image after switching to a loaded LoRA (s)", f["switch_cached_lora_s"], "", None),
            ("try it", "first image after a strength change (s)", f["strength_change_s"], "", None)]
    if "merge_peak_rss_gb" in f:
        rows.append(("try it", f"merge into a real-size {f['merge_arch']} checkpoint ({f['base_gb']:.1f} GB): "
                               "peak RSS (GB)", f["merge_peak_rss_gb"], "< 3", f["merge_peak_rss_gb"] < 3))
    return rows


def memory_figures(models: Path, reuse: bool) -> list[tuple]:
    """bench/memory.py on real-size random-weight files in `models` (several GB, outside the repo)."""
    args = ["bench/memory.py", "--models", str(models), "--json"] + (["--reuse"] if reuse else [])
    data = json_line(run(args, timeout=7200), "memory")
    sys.path.insert(0, str(ROOT))
    from bench.memory import targets

    out = []
    for r in data["rows"]:
        name, t = f"{r['arch']} {r['dtype']}", targets(r["arch"], r["dtype"])
        load = r["load"]["peak_gb"]
        out.append(("memory", f"{name}: load peak RSS (GB)", load, _le(t.get("load_gb")),
                    load <= t["load_gb"] if "load_gb" in t else None))
        out.append(("memory", f"{name}: load CPU time (s)", r["load"]["cpu_s"], "", None))
        if r.get("train"):
            train = r["train"]["peak_gb"]
            out.append(("memory", f"{name}: train 2 steps at 64 px, peak RSS (GB)", train,
                        _le(t.get("train_gb")), train <= t["train_gb"] if "train_gb" in t else None))
            error = (r["plan_gb"] - train) / train
            out.append(("memory", f"{name}: plan's RAM prediction error", error, "within ±0.2", abs(error) <= 0.2))
    return out


def _le(target) -> str:
    return f"<= {target:.1f}" if target else ""


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="ascii")
                   if line.startswith("model name"))
        ram = int(next(line.split()[1] for line in open("/proc/meminfo", encoding="ascii")
                       if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        ram = 0
    system = json.loads(run(["-m", "trainer", "system", "--json"]))
    gpus = ", ".join(f"{g['name']} ({g['total_gb']} GB)" for g in system["gpus"]) or "none"
    return (f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GB RAM; GPU: {gpus}; PyTorch {system['torch']}, "
            f"Python {system['python']}, {platform.system()} {platform.release()}")


def part_of(area: str, figure: str) -> str:
    """Which part of main()'s list made a row of the table (to keep the rows of parts not re-run)."""
    if area == "engine":
        return "demo" if figure.startswith("`train --demo`") else "step"
    return {"try it": "generate", "captioning": "caption"}.get(area, area)


def previous_rows() -> tuple[list[tuple], str]:
    """The current table's rows, already formatted, and its date line."""
    rows, date = [], ""
    for line in OUT.read_text(encoding="utf-8").splitlines() if OUT.exists() else []:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("- Date: "):
            date = line[len("- Date: "):]
        elif line.startswith("| ") and len(cells) == 5 and cells[0] not in ("area", "---"):
            rows.append(tuple(cells))
    return rows, date


def write(rows: list[tuple], quick: bool, kept_from: str = "") -> str:
    lines = ["# Benchmarks", "", "Generated by `bench/report.py`" + (" --quick" if quick else "") + "; do not edit by hand.",
             "", f"- Machine: {machine()}", f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}"]
    if kept_from:
        lines.append(f"- Rows of parts not re-run (`--only`) are kept from the table of {kept_from}")
    lines += ["", "| area | figure | value | target | |", "| --- | --- | ---: | --- | --- |"]
    for area, name, value, target, ok in rows:
        if isinstance(value, str):  # a kept row, formatted already
            lines.append(f"| {area} | {name} | {value} | {target} | {ok} |")
            continue
        mark = "" if ok is None else ("ok" if ok else "**miss**")
        if value != value:  # NaN: the benchmark failed
            shown = "—"
        else:
            shown = f"{value:.0f}" if float(value).is_integer() or value >= 100 else f"{value:.3f}"
        lines.append(f"| {area} | {name} | {shown} | {target} | {mark} |")
    lines += ["", "Notes:", "",
              "- Step ratios compare our whole optimizer step (forward, backward, gradient clipping, AdamW "
              "update, LR schedule, noise, progress event, logging, checks) with a bare UNet forward+backward "
              "on the same batch, and with that plus the same AdamW update. On the toy-sized tiny model the "
              "fixed per-step work is a visible share; on the SD1.5-shaped model it is not.",
              "- Speed rows (bench/speed.py) are wall times of whole processes: other programs on the machine "
              "slow them; the load average beside them says how busy it was. The bare-libraries row is the same "
              "work written with torch, transformers, diffusers and peft alone (bench/speed.py bare_run): no "
              "trainer on those libraries finishes sooner, so diffusers / bare bounds the ratio any can reach.",
              "- GPU figures (bf16/fp16 speed, SDPA, real-size models) are not in this table: no GPU was "
              "available where it was generated.", ""]
    OUT.write_text("\n".join(lines), encoding="utf-8")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", type=Path, help="folder for bench/memory.py's real-size files (several GB, "
                                                     "outside the repo); without it the memory rows are skipped")
    parser.add_argument("--reuse", action="store_true", help="reuse bench/memory.py's measured rows")
    parser.add_argument("--theirs", type=Path, help="diffusers' examples/text_to_image/train_text_to_image_lora.py "
                                                    "(outside the repo) for bench/speed.py; without it: skipped")
    parser.add_argument("--their-python", default=PY, help="a Python with that script's requirements")
    parser.add_argument("--only", nargs="+", help="run only these parts (demo step dataset gui generate speed "
                                                  "memory caption) and keep the other rows of the current table")
    args = parser.parse_args()
    parts = {"demo": lambda quick: demo_figures(), "step": step_figures, "dataset": dataset_figures,
             "gui": gui_figures, "generate": generate_figures}
    if args.theirs:
        parts["speed"] = lambda quick: speed_figures(args.theirs, args.their_python)
    if args.models:
        parts["memory"] = lambda quick: memory_figures(args.models, args.reuse)
    if (ROOT / "bench" / "caption.py").exists():  # written separately; report it once it is there
        parts["caption"] = caption_figures
    kept, kept_from = previous_rows() if args.only else ([], "")
    rows = []
    for name in dict.fromkeys([*parts, "speed", "memory", "caption"]):
        if args.only and name not in args.only:
            rows += [r for r in kept if part_of(r[0], r[1]) == name]
        elif name in parts:
            rows += run_part(name, parts[name], args.quick)
    print(write(rows, args.quick, kept_from))
    return 0


def run_part(name: str, part, quick: bool) -> list[tuple]:
    started = time.perf_counter()
    try:
        return part(quick)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, StopIteration, ValueError) as exc:
        # one broken benchmark must not hide the others' figures: it shows as a failed row
        return [(name, f"benchmark failed: {str(exc).splitlines()[0][:120]}", float("nan"), "", False)]
    finally:
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
