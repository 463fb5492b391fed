"""Resize an adapter file to a lower rank (SVD), keeping its metadata up to date."""

from __future__ import annotations

from pathlib import Path

from trainer.export.convert import group_modules, refuse_lycoris, resize_rank
from trainer.export.save import write_safetensors
from trainer.export.verify import verify_file
from trainer.models.safe_load import read_lora_file
from trainer.shared.errors import UserError


def resize_file(adapter: Path, rank: int, out: Path | None = None, overwrite: bool = False):
    adapter = Path(adapter)
    if not adapter.exists():
        raise UserError(f"adapter not found: {adapter}", "give the .safetensors file")
    tensors, metadata = read_lora_file(adapter)  # header checked, NaN/inf refused
    refuse_lycoris(tensors, "resizing")
    ranks = {p["lora_down.weight"].shape[0] for p in group_modules(tensors).values()}
    if rank < 1 or rank >= max(ranks):
        raise UserError(f"--rank {rank} is not below the adapter's rank {max(ranks)}",
                        f"choose a rank from 1 to {max(ranks) - 1}")
    out = Path(out or adapter.with_name(f"{adapter.stem}-rank{rank}.safetensors"))
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists", "pass --overwrite or choose another --out")
    resized, energy = resize_rank(tensors, rank)
    metadata.update(ss_network_dim=str(rank), ss_network_alpha=repr(float(rank)),
                    lora_studio_resized_from=str(max(ranks)))
    write_safetensors(out, resized, metadata)
    report = verify_file(out)
    if not report.applies:  # (a UI refusing the file refused the original too: the report says so)
        raise UserError(f"resized adapter {out} does not verify: {report.summary()}", "please report this bug")
    return out, energy
