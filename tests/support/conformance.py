"""The family conformance suite: what every registered model family must do, through the public seam only
(trainer.families.registry, the loaders, the loop, export, verify) on the family's own tiny model.

detect -> load -> train 2 steps -> resume bit-exact -> preview -> export (kohya and diffusers) -> our verify
-> diffusers' load_lora_weights applies every module and reproduces the adapter.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.support.engine import make_dataset, tiny_config, train_in_process
from tests.support.weights import assert_same_updates, components, lora_updates
from trainer.export.exporter import export_adapter
from trainer.export.verify import verify_file
from trainer.models.detect import inspect_base_model, inspect_file
from trainer.models.load import load_base_model


def single_file(family, folder: Path, seed: int = 1) -> tuple[Path, dict]:
    """The family's tiny model written in the single-file layout users download; (path, the components)."""
    parts = family.tiny_components(seed)
    path = folder / f"{family.id}-tiny.safetensors"
    save_file(family.original_layout(parts), str(path))
    return path, parts


def check_detect_and_load(family, folder: Path) -> Path:
    path, parts = single_file(family, folder)
    info = inspect_base_model(path)
    assert info.family is family and info.kind == "base" and info.size == "tiny"
    model = load_base_model(str(path))
    assert model.family is family and model.arch == family.id
    expected, loaded = parts["unet"].state_dict(), model.unet.state_dict()
    assert expected.keys() == loaded.keys()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected), "the denoiser did not load exactly"
    for name, encoder in zip(family.text_encoders, model.text_encoders):
        want = parts[name].state_dict()
        assert all(torch.equal(want[k], v) for k, v in encoder.state_dict().items() if k in want), name
    return path


def check_train_resume_preview(model_path: Path, folder: Path, **overrides) -> Path:
    """Two steps in one go, and one step + stop + resume: the same adapter bit for bit. Returns the adapter."""
    cfg = tiny_config(make_dataset(folder / "data", count=3), model__path=str(model_path), schedule__max_steps=2,
                      saving__every_n_steps=1, saving__dtype="fp32", lora__targets="full",
                      lora__train_text_encoder=True, optimizer__lr=5e-3, sampling__every_n_steps=2,
                      sampling__steps=2, **overrides)
    straight, sink = train_in_process(cfg, folder / "straight")
    samples = sink.of_type("sample")
    assert samples and all(Path(s.path).is_file() for s in samples), "no preview was rendered"
    train_in_process(cfg, folder / "resumed", stop_at=1)
    resumed, _ = train_in_process(cfg, folder / "resumed", resume=True)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume is not bit-exact"
    return straight


def _latents(family, model_path: Path, lora: Path | None = None) -> tuple[torch.Tensor, dict]:
    """Two denoising steps of the family's diffusers pipeline; (latents, the updates its LoRA layers apply)."""
    model = load_base_model(str(model_path))
    pipe = family.preview_pipeline(model, model.noise_scheduler)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    latents = pipe("tok, a shape", num_inference_steps=2, guidance_scale=1.0, height=64, width=64,
                   output_type="latent", generator=torch.Generator().manual_seed(0)).images
    return latents, lora_updates(components(model))  # peft's LoRA layers, one per adapted module


def check_export_verify_diffusers(family, model_path: Path, adapter: Path, folder: Path) -> None:
    modules = {k.rsplit(".", 2)[0] for k in load_file(str(adapter)) if k.endswith("lora_down.weight")}
    report = verify_file(adapter)
    assert report.ok and report.modules == len(modules), report.summary()
    base, _ = _latents(family, model_path)
    original, updates = _latents(family, model_path, adapter)
    assert len(updates) == len(modules), f"diffusers applied {len(updates)} of {len(modules)} modules"
    effect = (original - base).abs().max().item()
    assert effect > 1e-3, "the adapter changes nothing, so the comparison would prove nothing"
    for fmt in ("kohya", "diffusers"):
        exported = export_adapter(adapter, fmt, folder / fmt, name="conformance").adapter
        latents, exported_updates = _latents(family, model_path, exported)
        # the same fp32 weights through another key layout: every module's update within rounding, and the
        # output coarsely the same (denoising steps amplify the last bits by amounts that vary by CPU)
        assert_same_updates(exported_updates, updates)
        assert (latents - original).abs().max() < effect / 4, fmt


def check_family(family, folder: Path, **overrides) -> None:
    model_path = check_detect_and_load(family, folder)
    adapter = check_train_resume_preview(model_path, folder, **overrides)
    said = inspect_file(adapter)  # an adapter: `inspect` says which family it is for
    assert said["kind"] == "lora" and said["arch"] == family.id
    check_export_verify_diffusers(family, model_path, adapter, folder)
