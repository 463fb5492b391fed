"""model.training_adapter on the distilled models (FLUX.1 schnell, Z-Image Turbo): applied frozen while training,
left out of previews, checkpoints, the resume state and the exported LoRA; a bad file refused by its key.

The training adapters here are LoRAs our own trainer made in one step at a high learning rate on the same tiny
model (in the family's exported layout, as users download them), so their delta is large enough to see."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.support.conformance import single_file
from tests.support.engine import make_dataset, run_cli, tiny_config, train_in_process
from trainer.families.registry import get
from trainer.lora import ADAPTER
from trainer.run.training_adapter import NAME, check_adapter_file
from trainer.shared.errors import ConfigError, ModelFileError

FLUX = get("flux1")
FAST = dict(schedule__max_steps=1, schedule__batch_size=1, dataset__max_token_length=32, saving__dtype="fp32",
            optimizer__lr=1e-2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), count=1)


@pytest.fixture(scope="module")
def schnell(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("schnell")
    for name, state in FLUX.single_files(FLUX.tiny_components(variant="schnell"), "schnell").items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
    return folder / "flux1-schnell.safetensors"


def _adapter_from_one_step(model: Path, data: Path, run: Path, targets: str = "attention+ff") -> Path:
    """A LoRA in the family's exported layout, with a delta far from zero (one step at lr 0.05)."""
    cfg = tiny_config(data, model__path=str(model), lora__targets=targets, **(FAST | {"optimizer__lr": 5e-2}))
    adapter, _ = train_in_process(cfg, run)
    return adapter


@pytest.fixture(scope="module")
def schnell_adapter(schnell, data, tmp_path_factory) -> Path:
    return _adapter_from_one_step(schnell, data, tmp_path_factory.mktemp("adapter-run"))


def _first_loss(sink) -> float:
    return sink.of_type("progress")[0].loss


def test_schnell_trains_against_the_adapter_and_saves_only_the_lora(schnell, schnell_adapter, data, tmp_path,
                                                                    monkeypatch):
    import trainer.run.saving as saving

    active = []  # what each preview rendered with
    real_render = saving.render_samples

    def spy(model, *args, **kwargs):
        from peft.tuners.tuners_utils import BaseTunerLayer

        active.append({a for m in model.unet.modules() if isinstance(m, BaseTunerLayer) for a in m.active_adapters})
        return real_render(model, *args, **kwargs)

    monkeypatch.setattr(saving, "render_samples", spy)
    common = dict(model__path=str(schnell), sampling__every_n_steps=1, sampling__steps=1,
                  sampling__prompts=["tok"], **FAST)
    with_adapter = tiny_config(data, model__training_adapter=str(schnell_adapter), **common)
    adapter, sink = train_in_process(with_adapter, tmp_path / "with")
    plain, plain_sink = train_in_process(tiny_config(data, **common), tmp_path / "plain")
    ai_toolkit = _diffusers_layout(schnell_adapter, tmp_path / "pytorch_lora_weights.safetensors")
    _, ai_toolkit_sink = train_in_process(tiny_config(data, model__training_adapter=str(ai_toolkit), **common),
                                          tmp_path / "ai-toolkit")

    assert _first_loss(sink) != _first_loss(plain_sink), "the training adapter changed nothing in the step"
    assert _first_loss(ai_toolkit_sink) == _first_loss(sink), "the diffusers layout was read otherwise"
    assert not any("timestep-distilled" in w.message for w in sink.of_type("warning"))
    assert any("timestep-distilled" in w.message for w in plain_sink.of_type("warning"))
    assert active and all(names == {ADAPTER} for names in active), f"previews rendered with {active}"
    exported = load_file(str(adapter))
    assert set(exported) == set(load_file(str(plain))), "the exported file holds more than the trained LoRA"
    snapshot = load_file(str(next((tmp_path / "with" / "state").glob("step-*")) / "adapter.safetensors"))
    assert not any(NAME in key for key in snapshot), "the resume state holds the training adapter"
    _assert_file_is_the_trained_lora(adapter, snapshot, with_adapter.lora.alpha / with_adapter.lora.rank)
    with safe_open(str(adapter), "pt") as f:
        assert f.metadata()["lora_studio_training_adapter"] == schnell_adapter.name


def _diffusers_layout(kohya_file: Path, out: Path) -> Path:
    """The adapter as ai-toolkit writes FLUX LoRAs (ostris' schnell adapter too): diffusers names, lora_A/B,
    alpha folded, no metadata saying what it was trained on."""
    from trainer.export.convert import kohya_to_diffusers

    with safe_open(str(kohya_file), "pt") as f:
        save_file(kohya_to_diffusers(load_file(str(kohya_file)), f.metadata()), str(out))
    return out


def _assert_file_is_the_trained_lora(path: Path, snapshot: dict, scale: float) -> None:
    """The file, read back as `generate` reads it, is the trained adapter of the state snapshot: lora_A as it
    is, lora_B times alpha/rank (folded in by the reader). fp32 saving; the kohya fused layers split back
    exactly, so the only error is one rounding of the multiplication (relative 2**-24)."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        read = FLUX.peft_components({}, path, tensors, f.metadata())["transformer"]
    trained = {k.removeprefix("unet::"): v for k, v in snapshot.items() if k.startswith("unet::")}
    extra = read.keys() - trained.keys()  # pieces of fused layers the run did not train (proj_mlp): no delta
    assert trained.keys() <= read.keys() and not any(read[k].any() for k in extra if k.endswith("lora_B.weight"))
    for key, value in trained.items():
        want = value * scale if key.endswith("lora_B.weight") else value
        assert torch.allclose(read[key].float(), want, rtol=2 ** -23, atol=0), key


def _denoiser_output(rt, generator_seed: int = 0) -> torch.Tensor:
    """The denoiser's prediction for fixed latents, time and conditioning."""
    gen = torch.Generator().manual_seed(generator_seed)
    latents = torch.randn((1, 16, 8, 8), generator=gen)
    model = rt.model
    hidden = torch.randn((1, 4, model.unet.config.joint_attention_dim), generator=gen)
    pooled = torch.randn((1, model.unet.config.pooled_projection_dim), generator=gen)
    conditioning = model.family.conditioning(model, hidden, pooled, None, latents, torch.float32)
    with torch.no_grad():
        return model.family.predict(model.unet, latents, torch.tensor([0.5]), conditioning)


@pytest.mark.parametrize("weight_dtype", ["fp32", "fp8"])
def test_previews_see_the_base_and_the_trained_lora_only(weight_dtype, schnell, schnell_adapter, data, tmp_path):
    from tests.support.engine import RecordingSink
    from trainer.run.runtime import setup_runtime

    lora = _adapter_from_one_step(schnell, data, tmp_path / "lora", targets="attention")
    with safe_open(str(lora), "pt") as f:
        trained = {"unet": FLUX.peft_components({}, lora, load_file(str(lora)), f.metadata())["transformer"]}
    cfg = tiny_config(data, model__path=str(schnell), lora__alpha=4.0, performance__weight_dtype=weight_dtype,
                      **FAST)  # alpha = rank: scale 1
    outputs = {}
    for label, adapter in (("plain", ""), ("adapter", str(schnell_adapter))):
        cfg.model.training_adapter = adapter
        with setup_runtime(cfg, tmp_path / label, RecordingSink()) as rt:
            ours = rt.adapters()["unet"]  # the file's fused single-block layers carry zero proj_mlp pieces too
            rt.load_adapters({"unet": {k: v for k, v in trained["unet"].items() if k in ours}})
            trainable = [p for p in rt.model.unet.parameters() if p.requires_grad]
            outputs[label] = _denoiser_output(rt)
            with rt.without_training_adapter():
                outputs[label + " off"] = _denoiser_output(rt)
            outputs[label + " after"] = _denoiser_output(rt)
            assert [p for p in rt.model.unet.parameters() if p.requires_grad] == trainable == rt.unet_params
            frozen = [p for n, p in rt.model.unet.named_parameters() if f".{NAME}." in n]
            assert (bool(frozen) == bool(adapter)) and all(p.dtype == torch.float32 for p in frozen)
    assert torch.equal(outputs["adapter off"], outputs["plain"]), "previews would show the training adapter"
    assert not torch.equal(outputs["adapter"], outputs["plain"]), "the training adapter is not applied"
    assert torch.equal(outputs["adapter after"], outputs["adapter"]), "the adapter did not come back on"


def test_resume_takes_the_same_adapter_file_and_refuses_a_changed_one(schnell, schnell_adapter, data, tmp_path):
    copy = tmp_path / "adapter.safetensors"
    copy.write_bytes(schnell_adapter.read_bytes())
    cfg = tiny_config(data, model__path=str(schnell), model__training_adapter=str(copy), **FAST)
    train_in_process(cfg, tmp_path / "run")
    cfg.schedule.max_steps = 2
    _, sink = train_in_process(cfg, tmp_path / "run", resume=True)
    assert sink.of_type("done")[0].step == 2
    with safe_open(str(copy), "pt") as f:
        metadata = f.metadata()
    save_file({k: v * 2 for k, v in load_file(str(copy)).items()}, str(copy), metadata)  # same name, other weights
    cfg.schedule.max_steps = 3
    with pytest.raises(ConfigError, match=r"model\.training_adapter.*not the file the run was trained with"):
        train_in_process(cfg, tmp_path / "run", resume=True)


def test_bad_adapter_files_are_refused_naming_the_key(schnell, schnell_adapter, data, tmp_path):
    cfg = tiny_config(data, model__path=str(schnell))
    cfg.model.training_adapter = str(tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match=r"'model\.training_adapter'.*not found"):
        check_adapter_file(cfg, FLUX)
    cfg.model.training_adapter = str(schnell.parent / "ae.safetensors")  # a model file, not a LoRA
    with pytest.raises(ModelFileError, match=r"'model\.training_adapter'.*is not a LoRA"):
        check_adapter_file(cfg, FLUX)
    cfg.model.training_adapter = str(schnell_adapter)
    with pytest.raises(ConfigError, match=r"'model\.training_adapter'.*LoRA for FLUX\.1, the base model is Z-Image"):
        check_adapter_file(cfg, get("zimage"))


def test_cli_names_the_key_of_a_missing_adapter(tmp_path):
    code, events, _ = run_cli("train", "--demo", "--events", "jsonl", "--out", str(tmp_path / "run"),
                              "--set", "model.path=demo:flux1",
                              "--set", f"model.training_adapter={tmp_path / 'none.safetensors'}")
    errors = [e for e in events if e.type == "error"]
    assert code == 2 and errors and "model.training_adapter" in errors[0].message


@pytest.fixture(scope="module")
def zimage(tmp_path_factory) -> Path:
    """Z-Image Base and Turbo (the same weights; Turbo is told by its file name), with their companions."""
    path, _ = single_file(get("zimage"), tmp_path_factory.mktemp("zimage"))
    turbo = path.parent / "z_image_turbo_tiny.safetensors"
    turbo.symlink_to(path)
    return path


def test_z_image_turbo_trains_with_an_adapter(zimage, data, tmp_path):
    adapter = _adapter_from_one_step(zimage, data, tmp_path / "adapter")
    turbo = zimage.parent / "z_image_turbo_tiny.safetensors"
    runs = {}
    for label, model, training_adapter in (("turbo", turbo, adapter), ("base", zimage, adapter),
                                           ("plain", zimage, "")):
        cfg = tiny_config(data, model__path=str(model), model__training_adapter=str(training_adapter), **FAST)
        runs[label] = train_in_process(cfg, tmp_path / label)
    losses = {label: _first_loss(sink) for label, (_, sink) in runs.items()}
    assert losses["turbo"] == losses["base"] != losses["plain"], losses  # same weights; the adapter applied
    warnings = {label: [w.message for w in sink.of_type("warning")] for label, (_, sink) in runs.items()}
    assert not any("training_adapter" in m for m in warnings["turbo"])
    assert any("not a step-distilled model" in m for m in warnings["base"]), warnings["base"]
    assert set(load_file(str(runs["turbo"][0]))) == set(load_file(str(runs["plain"][0])))
    from trainer.models.detect import inspect_file

    assert inspect_file(turbo)["family"]["distilled"] and not inspect_file(zimage)["family"]["distilled"]
