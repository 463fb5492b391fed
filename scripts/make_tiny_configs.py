"""Regenerate assets/configs/tiny-*: LoRA Studio's own tiny SD1.5/SD2/SDXL-architecture configs. Run from the repo root."""
import json
import os

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig


def write(folder, name, cfg):
    os.makedirs(f"{folder}/{name}", exist_ok=True)
    json.dump(cfg, open(f"{folder}/{name}/config.json" if name!="scheduler" else f"{folder}/{name}/scheduler_config.json","w"), indent=2, sort_keys=True)

def unet_cfg(**kw):
    m = UNet2DConditionModel(**kw)
    c = dict(m.config); c["_class_name"]="UNet2DConditionModel"
    return {k:v for k,v in c.items() if not k.startswith("_") or k=="_class_name"}

def vae_cfg():
    c = dict(AutoencoderKL(block_out_channels=(8,16,16,16), down_block_types=("DownEncoderBlock2D",)*4,
        up_block_types=("UpDecoderBlock2D",)*4, latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=64).config)
    c["_class_name"]="AutoencoderKL"
    return {k:v for k,v in c.items() if not k.startswith("_") or k=="_class_name"}

def sched(pred="epsilon"):
    return {"_class_name":"DDPMScheduler","beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear",
            "num_train_timesteps":1000,"prediction_type":pred,"clip_sample":False,"set_alpha_to_one":False,
            "steps_offset":1,"timestep_spacing":"leading","trained_betas":None,"variance_type":"fixed_small"}

def te(hidden=32, act="quick_gelu", proj=None, cls="CLIPTextModel"):
    c = CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
        vocab_size=49408, max_position_embeddings=77, projection_dim=proj or hidden, hidden_act=act,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1).to_dict()
    c["architectures"]=[cls]
    for k in ["transformers_version","_name_or_path","return_dict","output_hidden_states","torch_dtype","dtype"]:
        c.pop(k,None)
    return c

root="assets/configs"
# tiny SD1.5: same block types and attention layout as SD1.5, far fewer channels
f=f"{root}/tiny-sd15"
write(f,"unet",unet_cfg(block_out_channels=(32,64), layers_per_block=1, sample_size=8,
    down_block_types=("CrossAttnDownBlock2D","DownBlock2D"), up_block_types=("UpBlock2D","CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32))
write(f,"vae",vae_cfg()); write(f,"scheduler",sched()); write(f,"text_encoder",te())
# tiny SD2: linear proj, per-block heads, OpenCLIP-style gelu text encoder
f=f"{root}/tiny-sd2"
write(f,"unet",unet_cfg(block_out_channels=(32,64), layers_per_block=1, sample_size=8,
    down_block_types=("CrossAttnDownBlock2D","DownBlock2D"), up_block_types=("UpBlock2D","CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=(2,4), use_linear_projection=True, norm_num_groups=32))
write(f,"vae",vae_cfg()); write(f,"scheduler",sched("v_prediction")); write(f,"text_encoder",te(act="gelu"))
# tiny SDXL: two text encoders, text_time added conditioning, transformer depth per block
f=f"{root}/tiny-sdxl"
write(f,"unet",unet_cfg(block_out_channels=(32,64), layers_per_block=1, sample_size=8,
    down_block_types=("DownBlock2D","CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D","UpBlock2D"),
    transformer_layers_per_block=(1,2), attention_head_dim=(2,4), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=96,
    cross_attention_dim=80, norm_num_groups=32))
write(f,"vae",vae_cfg()); write(f,"scheduler",sched()); write(f,"text_encoder",te())
# the second encoder is wider than the first, as in SDXL (768 vs 1280): single-file loaders tell them apart by width
write(f,"text_encoder_2",te(hidden=48,act="gelu",proj=48,cls="CLIPTextModelWithProjection"))
for name, cls, extra in [("tiny-sd15","StableDiffusionPipeline",{}),("tiny-sd2","StableDiffusionPipeline",{}),
                         ("tiny-sdxl","StableDiffusionXLPipeline",{"text_encoder_2":["transformers","CLIPTextModelWithProjection"],"tokenizer_2":["transformers","CLIPTokenizer"]})]:
    mi={"_class_name":cls,"_diffusers_version":"0.42.1","scheduler":["diffusers","DDPMScheduler"],
        "text_encoder":["transformers","CLIPTextModel"],"tokenizer":["transformers","CLIPTokenizer"],
        "unet":["diffusers","UNet2DConditionModel"],"vae":["diffusers","AutoencoderKL"]}
    if cls=="StableDiffusionPipeline": mi.update({"safety_checker":[None,None],"feature_extractor":[None,None],"requires_safety_checker":False})
    mi.update(extra)
    json.dump(mi, open(f"{root}/{name}/model_index.json","w"), indent=2, sort_keys=True)
