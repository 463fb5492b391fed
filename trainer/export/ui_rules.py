"""Each UI's verdict on a LoRA file: loads it whole, drops some layers silently, refuses the whole file, has
no such model, or was never measured on that layout.

The rules themselves belong to the families (`Family.ui_verdicts`, measured in the UIs' own code and
recorded in the family's LoRA module); this module is the vocabulary they share and the one way a verdict
is written for the user: "ComfyUI ✓, Forge Neo ✓, InvokeAI ✗ refuses: …, diffusers ⚠ drops 2 layers (…)".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

UI_NAMES = {"a1111": "A1111", "forge": "Forge", "forge-neo": "Forge Neo", "comfyui": "ComfyUI",
            "invokeai": "InvokeAI", "diffusers": "diffusers"}
LOADS, ABSENT, UNKNOWN, DROPS, REFUSES = "loads", "absent", "unknown", "drops", "refuses"
_SEVERITY = {LOADS: 0, ABSENT: 1, UNKNOWN: 2, DROPS: 3, REFUSES: 4}
_MARK = {LOADS: "✓", ABSENT: "–", UNKNOWN: "? not measured:", DROPS: "⚠ drops", REFUSES: "✗ refuses:"}
SUFFIX = re.compile(r"^(?P<module>.+?)\.(?P<part>lora_down\.weight|lora_up\.weight|lora_A\.weight|lora_B\.weight"
                    r"|alpha|dora_scale|hada_(?:w[12]_[ab]|t[12])|lokr_(?:w[12](?:_[ab])?|t2))$")


def lora_modules(keys: Iterable[str]) -> dict[str, set[str]]:
    """{module: its parts (lora_A.weight, alpha, ...)} of a LoRA file's keys, in file order; keys that are
    no LoRA part are left out (verify reports them on their own)."""
    out: dict[str, set[str]] = {}
    for key in keys:
        match = SUFFIX.match(key)
        if match:
            out.setdefault(match["module"], set()).add(match["part"])
    return out


def layers(modules: list[str], strip: str = "") -> str:
    """'2 layers (img_in, txt_in)': how many, and the first few by name (without `strip`)."""
    names = [m.removeprefix(strip) for m in modules]
    shown = ", ".join(names[:2]) + ("…" if len(names) > 2 else "")
    return f"{len(names)} layer{'s' * (len(names) != 1)} ({shown})"


class Verdicts:
    """Collects the findings on one file for a set of UIs; each UI keeps its worst finding (refuses >
    drops > not measured > has no such model > loads), and findings of the same weight are joined."""

    def __init__(self, uis: Iterable[str]):
        self.found: dict[str, tuple[str, str]] = {ui: (LOADS, "") for ui in uis}

    def add(self, uis: str | Iterable[str], verdict: str, why: str) -> None:
        for ui in [uis] if isinstance(uis, str) else uis:
            old, reason = self.found[ui]
            if _SEVERITY[verdict] > _SEVERITY[old]:
                self.found[ui] = (verdict, why)
            elif verdict == old != LOADS and why not in reason:
                self.found[ui] = (old, f"{reason}; {why}")

    def drop(self, uis: str | Iterable[str], modules: list[str], why: str, strip: str = "") -> None:
        if modules:
            self.add(uis, DROPS, f"{layers(modules, strip)}: {why}")

    def result(self) -> dict[str, tuple[str, str]]:
        return dict(self.found)


def summary(verdicts: Mapping[str, tuple[str, str]]) -> str:
    """'ComfyUI ✓, InvokeAI ✗ refuses: why, diffusers ⚠ drops 2 layers (…): why, Forge – has no Z-Image'."""
    parts = []
    for ui, (verdict, why) in verdicts.items():
        text = f"{UI_NAMES.get(ui, ui)} {_MARK[verdict]}"
        parts.append(f"{text} {why}" if why and verdict != LOADS else text)
    return ", ".join(parts)
