"""The family conformance suite: what every registered model family must do, through the public seam only
(trainer.families.registry, the loaders, the loop, export, verify) on the family's own tiny model.

detect -> load -> train 2 steps -> resume bit-exact -> preview -> export (kohya and diffusers) -> our verify
-> diffusers' load_lora_weights applies every module of the diffusers export and reproduces the trained
network. (The kohya export of each family is checked against the UIs' own formulas elsewhere:
tests/support/ui_formulas.py; diffusers' kohya FLUX reader only works at FLUX's real width.)
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
    """The family's tiny model written in the files users download (the base model's first, its other files
    beside it); (the base model's path, the components)."""
    parts = family.tiny_components(seed)
    paths = []
    for name, state in family.single_files(parts).items():
        paths.append(folder / name)
        save_file({k: v.contiguous() for k, v in state.items()}, str(paths[-1]))
    return paths[0], parts


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


def check_train_resume_preview(family, model_path: Path, folder: Path, **overrides):
    """Two steps in one go, and one step + stop + resume: the same adapter bit for bit. Returns (adapter,
    config)."""
    overrides = {"lora__targets": "full", "lora__train_text_encoder": True, **overrides}
    cfg = tiny_config(make_dataset(folder / "data", count=3), model__path=str(model_path), schedule__max_steps=2,
                      saving__every_n_steps=1, saving__dtype="fp32", optimizer__lr=5e-3, sampling__every_n_steps=2,
                      sampling__steps=2, dataset__max_token_length=75, **overrides)
    straight, sink = train_in_process(cfg, folder / "straight")
    samples = sink.of_type("sample")
    assert samples and all(Path(s.path).is_file() for s in samples), "no preview was rendered"
    train_in_process(cfg, folder / "resumed", stop_at=1)
    resumed, _ = train_in_process(cfg, folder / "resumed", resume=True)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume is not bit-exact"
    return straight, cfg


def _latents(family, model) -> torch.Tensor:
    """Two denoising steps of the family's diffusers pipeline around MODEL (the prompt encoded by it)."""
    pipe = family.preview_pipeline(model, model.noise_scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe("tok, a shape", num_inference_steps=2, guidance_scale=1.0, height=64, width=64,
                output_type="latent", generator=torch.Generator().manual_seed(0)).images


def _trained_network(cfg, model_path: Path, run_dir: Path):
    """The base with the run's last adapter state put in by the engine itself."""
    from trainer.lora.inject import load_adapter_state_dict
    from trainer.run.runtime import add_adapters
    from trainer.run.state import latest_snapshot, load_state

    model = load_base_model(str(model_path))
    add_adapters(cfg, model)
    state = load_state(latest_snapshot(run_dir)).adapters
    load_adapter_state_dict(model.unet, state["unet"])
    for name, encoder in model.family.trained_encoders(model):
        if name in state:
            load_adapter_state_dict(encoder, state[name])
    return model


def check_export_verify_diffusers(family, cfg, model_path: Path, adapter: Path, folder: Path) -> None:
    modules = {k.rsplit(".", 2)[0] for k in load_file(str(adapter)) if k.endswith(("lora_down.weight", "lora_A.weight"))}
    report = verify_file(adapter)
    assert report.ok and report.modules == len(modules), report.summary()
    kohya = export_adapter(adapter, "kohya", folder / "kohya", name="conformance")
    assert "none ignored" in kohya.report, kohya.report
    exported = export_adapter(adapter, "diffusers", folder / "diffusers", name="conformance").adapter
    trained_model = _trained_network(cfg, model_path, folder / "straight")
    model = load_base_model(str(model_path))
    pipe = family.preview_pipeline(model, model.noise_scheduler)
    pipe.load_lora_weights(str(exported))
    # every module's update within fp32 rounding of the one the engine trained (the same weights in another
    # key layout); the output only coarsely (denoising steps amplify the last bits by amounts that vary by CPU)
    assert_same_updates(lora_updates(components(model)), lora_updates(components(trained_model)))
    base = _latents(family, load_base_model(str(model_path)))
    trained, loaded = _latents(family, trained_model), _latents(family, model)
    effect = (trained - base).abs().max().item()
    assert effect > 1e-3, "the adapter changes nothing, so the comparison would prove nothing"
    assert (loaded - trained).abs().max() < effect / 4


def check_family(family, folder: Path, **overrides) -> None:
    model_path = check_detect_and_load(family, folder)
    # the text encoders train too where the family's diffusers layout can carry them (FLUX.1's cannot)
    adapter, cfg = check_train_resume_preview(family, model_path, folder,
                                              lora__train_text_encoder=family.diffusers_text_encoders, **overrides)
    said = inspect_file(adapter)  # an adapter: `inspect` says which family it is for
    assert said["kind"] == "lora" and said["arch"] == family.id
    check_export_verify_diffusers(family, cfg, model_path, adapter, folder)
