"""The offline FLUX.1 assets: the bundled T5 and Qwen3 tokenizers give the reference ids, and the tiny FLUX
config folder runs diffusers' own FluxPipeline with them, offline, end to end."""

import json

import torch

from trainer.models.assets import CONFIGS, load_qwen3_tokenizer, load_t5_tokenizer, load_tokenizer


def test_t5_tokenizer_gives_t5_v1_1_ids():
    tokenizer = load_t5_tokenizer()
    assert len(tokenizer) == 32100
    # T5 splits a lone "a" into "▁" + "a"; "</s>" (1) ends every sequence, there is no BOS
    assert tokenizer("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<extra_id_0>")) == (
        0, 1, 32099)


def test_qwen3_tokenizer_gives_qwen3_ids():
    tokenizer = load_qwen3_tokenizer()
    assert len(tokenizer) == 151669
    assert tokenizer("a photo of a cat").input_ids == [64, 6548, 315, 264, 8251]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (151643, 151645)


def test_real_flux_configs_say_what_dev_and_schnell_are():
    def read(name, sub, file="config.json"):
        return json.loads((CONFIGS / name / sub / file).read_text())

    assert read("flux1-dev", "transformer")["guidance_embeds"] is True
    assert read("flux1-schnell", "transformer")["guidance_embeds"] is False
    assert read("flux1-dev", "scheduler", "scheduler_config.json")["use_dynamic_shifting"] is True
    assert read("flux1-schnell", "scheduler", "scheduler_config.json")["shift"] == 1.0
    vae = read("flux1-dev", "vae")
    assert (vae["latent_channels"], vae["scaling_factor"], vae["shift_factor"]) == (16, 0.3611, 0.1159)
    assert read("flux1-dev", "text_encoder_2")["tie_word_embeddings"] is False


def test_tiny_flux_runs_diffusers_flux_pipeline_offline():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    folder = CONFIGS / "tiny-flux1"
    torch.manual_seed(0)
    pipe = FluxPipeline(
        transformer=FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(folder / "transformer")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        text_encoder_2=T5EncoderModel(T5Config.from_pretrained(folder / "text_encoder_2")),
        tokenizer=load_tokenizer(), tokenizer_2=load_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler"))
    image = pipe("a photo of a cat", height=64, width=64, num_inference_steps=2, guidance_scale=3.5,
                 max_sequence_length=32, output_type="np").images
    assert image.shape == (1, 64, 64, 3)
