"""`lora-studio inspect FILE`: what a checkpoint or adapter is (family, kind, keys, metadata); with
`--json` the GUI's model check reads it, family facts included."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    i = sub.add_parser("inspect", help="what a checkpoint or adapter file is")
    i.add_argument("file", type=Path)
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--require-base", action="store_true",
                   help="fail with an explanation unless FILE is a base model to train on")


def cmd_inspect(args) -> int:
    from trainer.models.detect import inspect_base_model, inspect_file

    if args.require_base:
        inspect_base_model(args.file)
    info = inspect_file(args.file)
    if info["kind"] == "lora":
        info["verification"], info["ui_verdicts"] = _verify(args.file)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(_format_inspect(info))
    return 0


def _verify(path: Path) -> tuple[str, dict]:
    """(the report's summary, {UI: {"verdict": loads|drops|refuses|absent|unknown, "why": ...}})."""
    from trainer.export.verify import verify_file

    try:
        report = verify_file(path)
    except (KeyError, ValueError) as exc:  # an adapter from another trainer without our metadata
        return f"not verified ({exc})", {}
    return report.summary(), {ui: {"verdict": verdict, "why": why} for ui, (verdict, why) in report.uis.items()}


def _format_inspect(info: dict) -> str:
    lines = [f"{info['path']}"]
    for key in ("format", "kind", "arch", "prediction_type", "size", "key_count", "rank", "verification"):
        if info.get(key) not in (None, ""):
            lines.append(f"  {key + ':':17} {info[key]}")
    meta = info.get("metadata") or {}
    if meta:
        lines.append(f"  metadata ({len(meta)} keys):")
        for key in sorted(meta):
            value = str(meta[key]).replace("\n", " ")
            lines.append(f"    {key}: {value[:100]}{'…' if len(value) > 100 else ''}")
    return "\n".join(lines)
