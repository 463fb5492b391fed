"""`lora-studio system`: what this machine offers for training, as facts the wizard and the start screen use.

The GPU (name, total and free memory, bf16), and the optional pieces (xformers, bitsandbytes) with what
their absence costs. Missing pieces are facts, not errors: training works without every one of them.
"""

from __future__ import annotations

import importlib.util
import json
import platform

from trainer.families.registry import families
from trainer.shared.tiers import memory_tier


def optional_facts(cuda: bool) -> list[dict]:
    """One entry per optional piece: present or not, and what a user loses without it."""
    facts = []
    if not cuda:
        facts.append({"name": "CUDA GPU", "present": False,
                      "cost": "training runs on the CPU: fine for the demo, but a real SD1.5 model takes tens "
                              "of seconds per step (many hours for a useful LoRA)"})
    facts.append({"name": "xformers", "present": _installed("xformers"),
                  "cost": "none that matters: PyTorch's built-in SDPA attention is used, about as fast and as "
                          "lean on recent PyTorch"})
    facts.append({"name": "bitsandbytes", "present": _installed("bitsandbytes"),
                  "cost": "the 8-bit AdamW optimizer is unavailable; for a LoRA its saving is tens of MB, so "
                          "AdamW (or Adafactor) does the same job"})
    return facts


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gpu_facts() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        with torch.cuda.device(index):
            free, total = torch.cuda.mem_get_info()
            bf16 = torch.cuda.is_bf16_supported()
        gpus.append({"index": index, "name": props.name, "total_gb": round(total / 2**30, 1),
                     "free_gb": round(free / 2**30, 1), "bf16": bool(bf16)})
    return gpus


def system_report() -> dict:
    import torch

    gpus = gpu_facts()
    free = max((g["free_gb"] for g in gpus), default=None)  # the GPU with the most free memory trains
    return {"torch": torch.__version__, "python": platform.python_version(), "cuda": bool(gpus),
            "cuda_version": torch.version.cuda, "gpus": gpus, "ram": ram_facts(),
            "optional": optional_facts(bool(gpus)),
            "memory_tier": {f.preset_prefix: memory_tier(f.tier_prefix, free, f.smallest_tier) for f in families()},
            "families": [f.facts() for f in families()]}


def ram_facts() -> dict:
    import psutil

    memory = psutil.virtual_memory()
    return {"total_gb": round(memory.total / 1e9, 1), "available_gb": round(memory.available / 1e9, 1)}


def register(sub) -> None:
    s = sub.add_parser("system", help="the GPU and optional pieces this machine has for training")
    s.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_system(args) -> int:
    report = system_report()
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"PyTorch {report['torch']} · Python {report['python']} · RAM {report['ram']['available_gb']} of "
          f"{report['ram']['total_gb']} GB free")
    for gpu in report["gpus"]:
        print(f"GPU {gpu['index']}: {gpu['name']} · {gpu['free_gb']} of {gpu['total_gb']} GB free · "
              f"bf16 {'yes' if gpu['bf16'] else 'no'}")
    tiers = report["memory_tier"]
    by_prefix = {f["preset_prefix"]: [] for f in report["families"]}
    for f in report["families"]:
        by_prefix[f["preset_prefix"]].append(f["label"])
    print("memory tier: " + ", ".join(f"--preset {tiers[prefix]} ({'/'.join(labels)})"
                                      for prefix, labels in by_prefix.items()) if report["gpus"]
          else "memory tier: --preset cpu (no CUDA GPU)")
    for fact in report["optional"]:
        if not fact["present"]:
            print(f"no {fact['name']}: {fact['cost']}")
    return 0
