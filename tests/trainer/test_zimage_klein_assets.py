"""The offline Z-Image and FLUX.2 klein assets: the prompt templates give the chat template's own ids with
the bundled Qwen3 tokenizer, the configs say what the models are, the "load fewer Qwen3 layers" rule
holds, and the tiny folders run diffusers' own ZImagePipeline and Flux2KleinPipeline offline."""

import json

import pytest
import torch

from trainer.models import qwen_prompts
from trainer.models.assets import CONFIGS, load_qwen3_tokenizer

CAT = [64, 6548, 315, 264, 8251]  # "a photo of a cat"
ZIMAGE_IDS = [151644, 872, 198, *CAT, 151645, 198, 151644, 77091, 198]
KLEIN_IDS = ZIMAGE_IDS + [151667, 271, 151668, 271]  # <think>\n\n</think>\n\n


def _read(name, sub, file="config.json"):
    return json.loads((CONFIGS / name / sub / file).read_text())


@pytest.mark.parametrize("recipe, thinking, ids", [(qwen_prompts.ZIMAGE, True, ZIMAGE_IDS),
                                                   (qwen_prompts.KLEIN, False, KLEIN_IDS)])
def test_prompt_templates_are_the_chat_template_and_give_known_ids(recipe, thinking, ids):
    tokenizer = load_qwen3_tokenizer()
    messages = [{"role": "user", "content": "a photo of a cat"}]
    assert recipe.text("a photo of a cat") == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
    assert tokenizer(recipe.text("a photo of a cat")).input_ids == ids
    assert len(tokenizer(recipe.text("")).input_ids) == recipe.template_tokens
    assert qwen_prompts.caption_token_budget(recipe) == 512 - recipe.template_tokens
    padded = tokenizer(recipe.text("a {braced} caption"), padding="max_length", max_length=512).input_ids
    assert len(padded) == 512 and padded[-1] == qwen_prompts.QWEN3_PAD_ID  # right padding, <|endoftext|>


def test_recipes_match_the_configs_feature_widths():
    assert qwen_prompts.layers_to_load(qwen_prompts.ZIMAGE) == 35
    assert qwen_prompts.layers_to_load(qwen_prompts.KLEIN) == 27
    qwen4, qwen8 = _read("zimage", "text_encoder"), _read("flux2-klein-9b", "text_encoder")
    assert qwen_prompts.feature_width(qwen_prompts.ZIMAGE, qwen4["hidden_size"]) == _read(
        "zimage", "transformer")["cap_feat_dim"] == 2560
    assert qwen_prompts.feature_width(qwen_prompts.KLEIN, qwen4["hidden_size"]) == _read(
        "flux2-klein-4b", "transformer")["joint_attention_dim"] == 7680
    assert qwen_prompts.feature_width(qwen_prompts.KLEIN, qwen8["hidden_size"]) == _read(
        "flux2-klein-9b", "transformer")["joint_attention_dim"] == 12288


def test_a_truncated_qwen3_gives_the_same_features_only_without_its_final_norm():
    """hidden_states[27] of the whole model is the raw output of layer 27. A model cut to 27 layers
    returns that only once its final RMSNorm is an identity: transformers norms the last entry."""
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    config = Qwen3Config.from_pretrained(str(CONFIGS / "tiny-flux2-klein" / "text_encoder"))
    full = Qwen3Model(config).eval()
    ids = torch.tensor([KLEIN_IDS])
    with torch.no_grad():
        want = full(input_ids=ids, output_hidden_states=True).hidden_states
        full.layers = full.layers[:qwen_prompts.layers_to_load(qwen_prompts.KLEIN)]
        assert not torch.equal(full(input_ids=ids, output_hidden_states=True).hidden_states[27], want[27])
        full.norm = torch.nn.Identity()
        got = full(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(got[k], want[k]) for k in qwen_prompts.KLEIN.hidden_states)


def test_real_configs_say_what_the_models_are():
    assert _read("zimage", "scheduler", "scheduler_config.json")["use_dynamic_shifting"] is False
    assert _read("zimage", "scheduler", "scheduler_config.json")["shift"] == 3.0
    assert _read("flux2-klein-4b", "scheduler", "scheduler_config.json")["use_dynamic_shifting"] is True
    assert _read("zimage", "vae") == _read("flux1-dev", "vae")  # Z-Image decodes with FLUX.1's AE
    vae = _read("flux2-klein-4b", "vae")
    assert (vae["latent_channels"], vae["patch_size"], vae["_class_name"]) == (32, [2, 2], "AutoencoderKLFlux2")
    assert _read("flux2-klein-4b", "vae") == _read("flux2-klein-9b", "vae")
    assert (_read("zimage", "text_encoder")["hidden_size"], _read("flux2-klein-9b", "text_encoder")["hidden_size"]) == (
        2560, 4096)
    assert _read("flux2-klein-4b", "text_encoder")["tie_word_embeddings"] is True
    assert _read("flux2-klein-9b", "text_encoder")["tie_word_embeddings"] is False
    for name in ("flux2-klein-4b", "flux2-klein-9b"):
        assert _read(name, "transformer")["guidance_embeds"] is False
        assert json.loads((CONFIGS / name / "model_index.json").read_text())["is_distilled"] is False


@pytest.mark.parametrize("name", ["tiny-zimage", "tiny-flux2-klein"])
def test_tiny_folders_run_diffusers_pipelines_offline(name):
    from diffusers import (
        AutoencoderKL,
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    folder, zimage = CONFIGS / name, name == "tiny-zimage"
    torch.manual_seed(0)
    transformer = (ZImageTransformer2DModel if zimage else Flux2Transformer2DModel).from_config(
        _read(name, "transformer"))
    vae = (AutoencoderKL if zimage else AutoencoderKLFlux2).from_config(_read(name, "vae"))
    text_encoder = (Qwen3Model if zimage else Qwen3ForCausalLM)(Qwen3Config.from_pretrained(folder / "text_encoder"))
    pipe = (ZImagePipeline if zimage else Flux2KleinPipeline)(
        transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=load_qwen3_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler"))
    pipe.set_progress_bar_config(disable=True)
    image = pipe(prompt="a photo of a cat", height=64, width=64, num_inference_steps=2, guidance_scale=1.0,
                 max_sequence_length=32, output_type="np").images
    assert image.shape == (1, 64, 64, 3)
