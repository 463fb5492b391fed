"""The saved kohya-layout adapter is the trained network: diffusers' load_lora_weights reproduces it."""

import pytest
import torch

from tests.support.engine import tiny_config, train_in_process
from tests.support.weights import assert_same_updates, components, lora_updates
from trainer.lora.inject import load_adapter_state_dict
from trainer.models.load import load_base_model
from trainer.run.runtime import add_adapters
from trainer.run.state import latest_snapshot, load_state


def _pipeline(model):
    """The family's diffusers pipeline around the model (what diffusers users load a LoRA into)."""
    return model.family.preview_pipeline(model, model.noise_scheduler)


def _latents(pipe) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe("tok, a shape", num_inference_steps=2, guidance_scale=1.0, height=64, width=64,
                output_type="latent", generator=torch.Generator().manual_seed(0)).images


@pytest.mark.parametrize("spec", ["demo:sd15", "demo:sdxl"])
def test_kohya_file_loads_in_diffusers_and_matches_the_trained_network(tmp_path, dataset_dir, spec):
    cfg = tiny_config(dataset_dir, model__path=spec, lora__targets="full", lora__train_text_encoder=True,
                      schedule__max_steps=6, saving__dtype="fp32", optimizer__lr=5e-3)
    adapter, _ = train_in_process(cfg, tmp_path / "run")

    base = _latents(_pipeline(load_base_model(spec)))
    trained_model = load_base_model(spec)
    add_adapters(cfg, trained_model)
    state = load_state(latest_snapshot(tmp_path / "run"))
    load_adapter_state_dict(trained_model.unet, state.adapters["unet"])
    for name, encoder in zip(("text_encoder", "text_encoder_2"), trained_model.text_encoders):
        load_adapter_state_dict(encoder, state.adapters[name])
    trained = _latents(_pipeline(trained_model))

    pipe = _pipeline(load_base_model(spec))
    pipe.load_lora_weights(str(adapter))
    assert_same_updates(lora_updates(components(pipe)), lora_updates(components(trained_model)))
    loaded = _latents(pipe)

    # a coarse look at the output: far closer to the trained network's than the base model's is
    effect = (trained - base).abs().max().item()
    assert effect > 1e-2, "training changed nothing, so this comparison would prove nothing"
    assert (loaded - trained).abs().max() < effect / 4



def test_fp16_file_stays_close(tmp_path, dataset_dir):
    cfg = tiny_config(dataset_dir, schedule__max_steps=4, optimizer__lr=5e-3)
    adapter, _ = train_in_process(cfg, tmp_path / "run")
    from safetensors.torch import load_file

    tensors = load_file(str(adapter))
    assert {t.dtype for k, t in tensors.items()} == {torch.float16}
    state = load_state(latest_snapshot(tmp_path / "run")).adapters["unet"]
    key = next(k for k in state if k.endswith("lora_B.weight"))
    kohya = "lora_unet_" + key.removesuffix(".lora_B.weight").replace(".", "_") + ".lora_up.weight"
    assert torch.allclose(tensors[kohya].float(), state[key], rtol=1e-3, atol=1e-6)
