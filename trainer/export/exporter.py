"""`lora-studio export`: verify, convert, place the adapter where a UI looks, with its sidecar and preview.

Nothing existing is overwritten unless asked; every file is written atomically; the written adapter is
reopened and verified again, and an export with any tensor a UI would ignore, or to a UI that would refuse
the file, is refused.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from safetensors.torch import load_file

from trainer.export.convert import kohya_to_diffusers
from trainer.export.save import SAVE_DTYPES, write_safetensors
from trainer.export.uis import UiFolder, a1111_sidecar, detect_ui
from trainer.export.verify import UI_NAMES, base_config_of, verify_file
from trainer.families.registry import by_config
from trainer.shared.errors import UserError
from trainer.shared.fsutil import atomic_write, atomic_write_text
from trainer.shared.paths import contained_path
from trainer.shared.run_folder import final_adapters


@dataclass
class ExportResult:
    adapter: Path
    ui: UiFolder
    report: str
    written: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"adapter": str(self.adapter), "ui": self.ui.ui, "folder": str(self.ui.lora_dir),
                "note": self.ui.note, "verification": self.report, "written": [str(p) for p in self.written]}


def export_adapter(adapter: Path, fmt: str = "kohya", to: Path | None = None, name: str | None = None,
                   overwrite: bool = False, preview: Path | None = None, dtype: str | None = None) -> ExportResult:
    adapter = resolve_adapter(Path(adapter))
    tensors, metadata = _read(adapter)
    report = verify_file(adapter)
    if not report.applies:
        raise UserError(f"{adapter} would not load fully: {report.summary()}",
                        "this adapter does not match its base architecture; re-export it from its run")
    name = safe_name(name or metadata.get("ss_output_name") or adapter.stem)
    ui = detect_ui(to or Path.cwd())
    # for another UI the report says so, and the file still goes where asked
    if ui.ui in report.refused or ui.ui in report.drops:
        what = f"would not install {adapter}: {report.refused[ui.ui]}" if ui.ui in report.refused else \
            f"would silently leave out parts of {adapter}: drops {report.drops[ui.ui]}"
        raise UserError(f"{UI_NAMES.get(ui.ui, ui.ui)} {what}",
                        "the other UIs take it as it is; a file LoRA Studio exports from its run installs here")
    preview = preview or latest_sample(adapter)
    metadata = _retitled(metadata, name, preview)
    if dtype:
        tensors = {k: v.to(SAVE_DTYPES[dtype]) for k, v in tensors.items()}
    if fmt == "diffusers":
        target = contained_path(ui.lora_dir, name, "--name") / "pytorch_lora_weights.safetensors"
        payload = kohya_to_diffusers(tensors, metadata)
    else:
        target = contained_path(ui.lora_dir, name, "--name", ".safetensors")
        payload = tensors
    _refuse_file_in_the_way(target.parent)
    files = _planned_files(target, fmt, ui, preview)
    _refuse_overwrite(files, overwrite)
    write_safetensors(target, payload, metadata)
    result = ExportResult(target, ui, report.summary() if fmt == "kohya" else _reverify_diffusers(target))
    result.written = [target] + _write_sidecars(target, fmt, ui, metadata, preview)
    if fmt == "kohya":
        result.report = verify_file(target).summary()
    return result


def resolve_adapter(path: Path) -> Path:
    """A run folder stands for its final adapter (not its EMA twin, NAME.ema.safetensors: give that by name)."""
    if path.is_dir():
        candidates = final_adapters(path)
        if not candidates:
            raise UserError(f"run folder {path} holds no adapter yet", "finish or stop the run first")
        return candidates[0]
    if not path.exists():
        raise UserError(f"adapter not found: {path}", "give the .safetensors file or the run folder")
    return path


def safe_name(name: str) -> str:
    cleaned = re.sub(r"[^\w\-. ]+", "_", name).strip(" .")
    if not cleaned:
        raise UserError(f"'{name}' is not usable as a file name", "use letters, digits, '-', '_' and spaces")
    return cleaned[:120]


def _refuse_file_in_the_way(folder: Path) -> None:
    """A file standing where the export's folder (or one above it) belongs: say so before writing."""
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            raise UserError(f"cannot export into {folder}: {path} is a file, not a folder",
                            "move or rename that file, or give --to another folder")
        if path.exists():
            return


def latest_sample(adapter: Path) -> Path | None:
    """The newest preview of the first prompt in the adapter's run folder, if there is one."""
    for folder in (adapter.parent / "samples", adapter.parent.parent / "samples"):
        samples = sorted(folder.glob("step*_p00.png")) if folder.is_dir() else []
        if samples:
            return samples[-1]
    return None


def _read(adapter: Path) -> tuple[dict, dict]:
    from trainer.models.safe_load import read_lora_file

    return read_lora_file(adapter)  # clear messages for damaged files, NaN/inf refused


def _retitled(metadata: dict, name: str, preview: Path | None) -> dict:
    meta = dict(metadata, ss_output_name=name)
    meta["modelspec.title"] = name
    if preview:
        meta["modelspec.thumbnail"] = thumbnail_data_uri(preview)
    return meta


def thumbnail_data_uri(png: Path, side: int = 256) -> str:
    with Image.open(png) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _planned_files(target: Path, fmt: str, ui: UiFolder, preview: Path | None) -> list[Path]:
    files = [target]
    if fmt == "kohya" and ui.ui in ("a1111", "forge", "folder"):
        files.append(target.with_suffix(".json"))
    if fmt == "kohya" and preview:
        files.append(target.with_suffix(".preview.png"))
    return files


def _refuse_overwrite(files: list[Path], overwrite: bool) -> None:
    existing = [f for f in files if f.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists", "choose another --name, or pass --overwrite to replace it")


def _write_sidecars(target: Path, fmt: str, ui: UiFolder, metadata: dict, preview: Path | None) -> list[Path]:
    if fmt != "kohya":
        return []
    written = []
    family = by_config(base_config_of(metadata))
    if ui.ui in ("a1111", "forge", "folder"):
        notes = (f"Trained with LoRA Studio on {metadata.get('ss_sd_model_name', '?')}: "
                 f"{metadata.get('ss_steps', '?')} steps, rank {metadata.get('ss_network_dim', '?')}.")
        sidecar = target.with_suffix(".json")
        atomic_write_text(sidecar, a1111_sidecar(family.a1111_version, metadata.get("modelspec.trigger_phrase", ""),
                                                 metadata.get("modelspec.title", target.stem), notes))
        written.append(sidecar)
    if preview:
        dest = target.with_suffix(".preview.png")
        atomic_write(dest, lambda tmp: tmp.write_bytes(Path(preview).read_bytes()))
        written.append(dest)
    return written


def _reverify_diffusers(target: Path) -> str:
    tensors = load_file(str(target))
    pairs = sum(1 for k in tensors if k.endswith("lora_A.weight"))
    return f"{len(tensors)} tensors ({pairs} modules) in diffusers/PEFT layout"
