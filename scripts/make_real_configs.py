"""Regenerate the JSON model configs in assets/configs/{sd15,sd2,sd2-768v,sdxl} (the official models' hyper-
parameters) and check them by parameter count on the meta device. Run from the repo root."""
import json
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

root = "assets/configs"

def clean(c, cls):
    c = dict(c); c["_class_name"] = cls
    return {k: v for k, v in c.items() if not k.startswith("_") or k == "_class_name"}

def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    json.dump(obj, open(path, "w"), indent=2, sort_keys=True)

def unet(**kw):
    with torch.device("meta"):
        m = UNet2DConditionModel(**kw)
    return clean(m.config, "UNet2DConditionModel"), sum(p.numel() for p in m.parameters())

def vae(sample, scale, upcast):
    with torch.device("meta"):
        m = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",)*4,
                          up_block_types=("UpDecoderBlock2D",)*4, layers_per_block=2, latent_channels=4,
                          sample_size=sample, scaling_factor=scale, force_upcast=upcast)
    return clean(m.config, "AutoencoderKL"), sum(p.numel() for p in m.parameters())

def te(hidden, inter, heads, layers, act, proj, cls, bos=0, eos=2, pad=1):
    c = CLIPTextConfig(hidden_size=hidden, intermediate_size=inter, num_attention_heads=heads, num_hidden_layers=layers,
                       hidden_act=act, projection_dim=proj, vocab_size=49408, max_position_embeddings=77,
                       bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, layer_norm_eps=1e-5)
    with torch.device("meta"):
        m = (CLIPTextModelWithProjection if cls == "CLIPTextModelWithProjection" else CLIPTextModel)(c)
    d = c.to_dict(); d["architectures"] = [cls]
    for k in ["transformers_version", "_name_or_path", "return_dict", "output_hidden_states", "torch_dtype", "dtype"]:
        d.pop(k, None)
    return d, sum(p.numel() for p in m.parameters())

def sched(pred):
    return {"_class_name": "DDPMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "prediction_type": pred, "clip_sample": False, "set_alpha_to_one": False,
            "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "variance_type": "fixed_small"}

sd1_unet = dict(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
sd2_unet = dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
sdxl_unet = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
                 attention_head_dim=(5, 10, 20), use_linear_projection=True, cross_attention_dim=2048,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, sample_size=128)
clip_l = (768, 3072, 12, 12, "quick_gelu", 768, "CLIPTextModel")
clip_h = (1024, 4096, 16, 23, "gelu", 512, "CLIPTextModel")
clip_g = (1280, 5120, 20, 32, "gelu", 1280, "CLIPTextModelWithProjection")
models = {
    "sd15": (dict(sd1_unet), (512, 0.18215, False), clip_l, None, "epsilon"),
    "sd2": (dict(sd2_unet, sample_size=64), (512, 0.18215, False), clip_h, None, "epsilon"),
    "sd2-768v": (dict(sd2_unet, sample_size=96), (768, 0.18215, False), clip_h, None, "v_prediction"),
    "sdxl": (dict(sdxl_unet), (1024, 0.13025, True), clip_l, clip_g, "epsilon"),
}
for name, (u, v, t1, t2, pred) in models.items():
    f = f"{root}/{name}"
    uc, un = unet(**u); dump(f"{f}/unet/config.json", uc)
    vc, vn = vae(*v); dump(f"{f}/vae/config.json", vc)
    tc, tn = te(*t1); dump(f"{f}/text_encoder/config.json", tc)
    counts = {"unet": un, "vae": vn, "text_encoder": tn}
    mi = {"_class_name": "StableDiffusionXLPipeline" if t2 else "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
          "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
          "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
          "vae": ["diffusers", "AutoencoderKL"]}
    if t2:
        t2c, t2n = te(*t2, pad=1); dump(f"{f}/text_encoder_2/config.json", t2c); counts["text_encoder_2"] = t2n
        mi.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"], tokenizer_2=["transformers", "CLIPTokenizer"])
    else:
        mi.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    dump(f"{f}/scheduler/scheduler_config.json", sched(pred))
    dump(f"{f}/model_index.json", mi)
    print(name, counts)
