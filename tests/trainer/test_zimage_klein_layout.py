"""Z-Image's and FLUX.2's single-file layouts <-> diffusers: weights, fp8 sidecars, the FLUX.2 VAE, LoRA.

Full-weight maps must be lossless (bit for bit both ways, fp8 scales included) and agree with diffusers'
own converters; a LoRA trained on diffusers' split q/k/v must export into klein's fused layers with the
same deltas up to the fp32 rounding of the products, and diffusers must read our exports back to those
deltas. Bounds are the textbook ones for a length-k fp32 dot product, as in test_bfl_layout.py.
"""

import json

import pytest
import torch

from trainer.models import dit_detect, flux2_layout, fused_layout, zimage_layout
from trainer.models.assets import CONFIGS

U = 2.0 ** -24  # fp32 unit roundoff
FP8 = torch.float8_e4m3fn


def _config(name: str, sub: str = "transformer") -> dict:
    return json.loads((CONFIGS / name / sub / "config.json").read_text())


def _tiny(name: str, seed: int = 0):
    from diffusers import Flux2Transformer2DModel, ZImageTransformer2DModel

    torch.manual_seed(seed)
    cls = ZImageTransformer2DModel if name == "tiny-zimage" else Flux2Transformer2DModel
    model = cls.from_config(_config(name))
    with torch.no_grad():  # diffusers zero-initialises some layers and pad tokens; random everywhere tests more
        for p in model.parameters():
            p.normal_()
    return model


def _bound(scale: float, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |fl(scale * (up @ down)) - exact| in fp32: gamma_k for the length-k dot product,
    one rounding for the scale's cast and one for the product by it (or for pre-scaling `up`)."""
    k = up.shape[1]
    gamma = k * U / (1 - k * U)
    return (gamma + 2 * U) * abs(scale) * (up.double().abs() @ down.double().abs())


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)  # torch.equal has no fp8 kernel; bytes compare any dtype


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(_bits(a[k]), _bits(b[k])) for k in a)


# ---- full weights ---------------------------------------------------------------------------------------


def test_tiny_zimage_round_trips_bit_for_bit():
    state = _tiny("tiny-zimage").state_dict()
    original = zimage_layout.to_original(state, prefix=zimage_layout.PREFIX)
    bare = {k.removeprefix(zimage_layout.PREFIX): v for k, v in original.items()}
    assert bare["layers.1.attention.qkv.weight"].shape == (96, 32)  # to_q | to_k | to_v
    assert torch.equal(bare["noise_refiner.0.attention.qkv.weight"][32:64],
                       state["noise_refiner.0.attention.to_k.weight"])
    assert "context_refiner.1.adaLN_modulation.0.weight" not in bare and "x_embedder.weight" in bare
    assert zimage_layout.is_original(original) and not zimage_layout.is_original(state)
    assert zimage_layout.depths(original) == {"layers": 2, "noise_refiner": 2, "context_refiner": 2}
    # ComfyUI's NextDiT object carries an unused norm_final: files saved from it are read without it
    original[zimage_layout.PREFIX + "norm_final.weight"] = torch.ones(32)
    assert _equal(zimage_layout.to_diffusers(original), state)


def test_tiny_klein_round_trips_bit_for_bit():
    state = _tiny("tiny-flux2-klein").state_dict()
    bfl = flux2_layout.to_original(state)
    assert bfl["double_blocks.1.txt_attn.qkv.weight"].shape == (96, 32)
    assert torch.equal(bfl["single_blocks.0.linear1.weight"],
                       state["single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight"])  # fused in both
    assert torch.equal(bfl["final_layer.adaLN_modulation.1.weight"][:32], state["norm_out.linear.weight"][32:])
    assert bfl["double_blocks.0.img_attn.norm.query_norm.scale"].shape == (16,)
    assert flux2_layout.depth(bfl) == (2, 2, False)
    back = flux2_layout.to_diffusers({flux2_layout.PREFIX + k: v for k, v in bfl.items()})
    assert _equal(back, state)


def test_a_converted_model_loads_and_computes_the_same():
    model, fresh = _tiny("tiny-flux2-klein", seed=1), _tiny("tiny-flux2-klein", seed=2)
    fresh.load_state_dict(flux2_layout.to_diffusers(flux2_layout.to_original(model.state_dict())), strict=True)
    args = dict(hidden_states=torch.randn(1, 16, 128), encoder_hidden_states=torch.randn(1, 5, 96),
                timestep=torch.tensor([0.5]), img_ids=torch.zeros(1, 16, 4), txt_ids=torch.zeros(1, 5, 4))
    with torch.no_grad():
        assert torch.equal(model(**args).sample, fresh(**args).sample)


def test_maps_agree_with_diffusers_single_file_converters():
    from diffusers.loaders.single_file_utils import (
        convert_flux2_transformer_checkpoint_to_diffusers,
        convert_z_image_transformer_checkpoint_to_diffusers,
    )

    z = zimage_layout.to_original(_tiny("tiny-zimage").state_dict(), prefix=zimage_layout.PREFIX)
    z[zimage_layout.PREFIX + "norm_final.weight"] = torch.ones(32)  # both drop it
    assert _equal(zimage_layout.to_diffusers(z), convert_z_image_transformer_checkpoint_to_diffusers(dict(z)))
    k = flux2_layout.to_original(_tiny("tiny-flux2-klein").state_dict())
    assert _equal(flux2_layout.to_diffusers(k), convert_flux2_transformer_checkpoint_to_diffusers(dict(k)))


def _fp8_copy(bfl: dict) -> dict:
    """BFL's fp8 layout: block linears in e4m3fn with a scalar weight_scale and input_scale; the rest as is.
    One layer gets a per-row scale and a ComfyUI note, the other shapes of sidecar found in the wild."""
    out = {}
    for key, value in bfl.items():
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and value.dim() == 2 and "_blocks." in key:
            scale = value.abs().amax() / 448
            out[key] = (value / scale).to(FP8)
            out[f"{module}.weight_scale"], out[f"{module}.input_scale"] = scale.float(), torch.tensor(0.02)
        else:
            out[key] = value
    w = out["double_blocks.1.img_attn.qkv.weight"].float()
    out["double_blocks.1.img_attn.qkv.weight_scale"] = torch.rand(w.shape[0]) + 0.5
    out["double_blocks.1.img_attn.qkv.comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'),
                                                                   dtype=torch.uint8)
    return out


def test_fp8_copies_keep_their_scales_through_the_maps():
    fp8 = _fp8_copy(flux2_layout.to_original(_tiny("tiny-flux2-klein").state_dict()))
    split = flux2_layout.to_diffusers(fp8)
    q, k = "transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_k_proj"
    assert torch.equal(split[f"{q}.weight_scale"], fp8["double_blocks.0.img_attn.qkv.weight_scale"])
    assert torch.equal(split[f"{k}.input_scale"], fp8["double_blocks.0.txt_attn.qkv.input_scale"])
    assert split["transformer_blocks.1.attn.to_v.weight_scale"].shape == (32,)  # per-row scale: cut by rows
    assert torch.equal(split["transformer_blocks.1.attn.to_v.comfy_quant"],
                       fp8["double_blocks.1.img_attn.qkv.comfy_quant"])
    for block, part, rows in ((0, "to_k", slice(32, 64)), (1, "to_v", slice(64, 96))):
        fused = f"double_blocks.{block}.img_attn.qkv.weight"
        piece = f"transformer_blocks.{block}.attn.{part}.weight"
        whole = fused_layout.dequantize(fp8[fused], fused_layout.scale_of(fp8, fused), torch.float32)
        assert torch.equal(fused_layout.dequantize(split[piece], fused_layout.scale_of(split, piece),
                                                   torch.float32), whole[rows])
    assert _equal(flux2_layout.to_original(split), fp8)


def test_parts_with_different_scales_are_not_fused_silently():
    split = flux2_layout.to_diffusers(_fp8_copy(flux2_layout.to_original(_tiny("tiny-flux2-klein").state_dict())))
    split["transformer_blocks.0.attn.to_k.weight_scale"] = torch.tensor(3.0)
    with pytest.raises(ValueError, match="re-quantising"):
        flux2_layout.to_original(split)
    fp8 = _fp8_copy(flux2_layout.to_original(_tiny("tiny-flux2-klein").state_dict()))
    fp8["double_blocks.0.img_attn.qkv.weight_scale"] = torch.ones(3, 1)  # 32 x 32 blocks: cannot follow a split
    with pytest.raises(ValueError, match="block-wise"):
        flux2_layout.to_diffusers(fp8)


def test_foreign_and_missing_keys_are_refused_not_dropped():
    z = zimage_layout.to_original(_tiny("tiny-zimage").state_dict())
    with pytest.raises(ValueError, match="vae.encoder.conv_in.weight"):
        zimage_layout.to_diffusers(dict(z, **{"vae.encoder.conv_in.weight": torch.zeros(1)}))
    del z["layers.0.feed_forward.w2.weight"]
    with pytest.raises(KeyError, match="layers.0.feed_forward.w2.weight"):
        zimage_layout.to_diffusers(z)
    k = flux2_layout.to_original(_tiny("tiny-flux2-klein").state_dict())
    del k["single_blocks.1.norm.key_norm.scale"]
    with pytest.raises(KeyError, match="single_blocks.1.norm.key_norm.scale"):
        flux2_layout.to_diffusers(k)


def test_real_size_layouts_plan_from_shapes_alone():
    from diffusers import Flux2Transformer2DModel, ZImageTransformer2DModel

    with torch.device("meta"):
        z = ZImageTransformer2DModel.from_config(_config("zimage"))
        k = Flux2Transformer2DModel.from_config(_config("flux2-klein-9b"))
    for model, lay in ((z, zimage_layout), (k, flux2_layout)):
        shapes = {n: tuple(v.shape) for n, v in model.state_dict().items()}
        original = lay.to_original(shapes)
        assert lay.to_diffusers(original) == shapes
    assert original["double_blocks.7.img_attn.qkv.weight"] == (3 * 4096, 4096)


# ---- the FLUX.2 VAE ------------------------------------------------------------------------------------


def test_flux2_vae_round_trips_and_agrees_with_diffusers_ldm_converter():
    from diffusers import AutoencoderKLFlux2
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    torch.manual_seed(0)
    vae = AutoencoderKLFlux2.from_config(_config("tiny-flux2-klein", "vae"))
    state = vae.state_dict()
    bfl = flux2_layout.vae_to_original(state)
    assert bfl["encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    assert {"encoder.quant_conv.weight", "decoder.post_quant_conv.weight", "decoder.up.3.upsample.conv.weight",
            "bn.running_mean", "bn.running_var"} <= bfl.keys()
    assert bfl["bn.running_var"].shape == (128,)  # 32 latent channels x the 2x2 patch
    assert _equal(flux2_layout.vae_to_diffusers(bfl), state)
    # diffusers has no single-file FLUX.2 VAE converter; its LDM converter agrees on everything but the
    # quant convolutions' place (top level there) and the batch-norm statistics (FLUX.2 only)
    ldm = {k.replace("encoder.quant_conv", "quant_conv").replace("decoder.post_quant_conv", "post_quant_conv"): v
           for k, v in bfl.items() if not k.startswith("bn.")}
    assert _equal(convert_ldm_vae_checkpoint(ldm, dict(vae.config)),
                  {k: v for k, v in state.items() if not k.startswith("bn.")})


# ---- detection -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_shapes():
    """{name: {key: shape}} of the real models in the layouts users have, from meta models."""
    from diffusers import Flux2Transformer2DModel, FluxTransformer2DModel, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from trainer.models.bfl_layout import diffusers_to_bfl

    def shapes(model):
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    with torch.device("meta"):
        out = {"zimage": zimage_layout.to_original(shapes(ZImageTransformer2DModel.from_config(_config("zimage")))),
               "flux2-dev": flux2_layout.to_original(shapes(Flux2Transformer2DModel())),
               "flux1-dev": diffusers_to_bfl(shapes(FluxTransformer2DModel.from_config(_config("flux1-dev"))))}
        for name in ("flux2-klein-4b", "flux2-klein-9b"):
            out[name] = flux2_layout.to_original(shapes(Flux2Transformer2DModel.from_config(_config(name))))
        for name, folder in (("qwen3-4b", "zimage"), ("qwen3-8b", "flux2-klein-9b")):
            model = Qwen3ForCausalLM(Qwen3Config.from_pretrained(str(CONFIGS / folder / "text_encoder")))
            out[name] = {k: s for k, s in shapes(model).items() if k != "lm_head.weight" or "8b" in name}
    return out


def test_detection_tells_the_models_apart(real_shapes):
    expect = {"zimage": ("zimage", "qwen3-4b"), "flux2-klein-4b": ("flux2-klein-4b", "qwen3-4b"),
              "flux2-klein-9b": ("flux2-klein-9b", "qwen3-8b"), "flux2-dev": ("flux2-dev", "mistral-small-3.2"),
              "flux1-dev": ("flux1-dev", "t5xxl"), "qwen3-4b": ("qwen3-4b", ""), "qwen3-8b": ("qwen3-8b", "")}
    for name, (variant, encoder) in expect.items():
        kind = dit_detect.identify(real_shapes[name])
        assert (kind.variant, kind.text_encoder, kind.layout) == (variant, encoder, "original"), name
    prefixed = {"model.diffusion_model." + k: s for k, s in real_shapes["flux2-klein-4b"].items()}
    assert dit_detect.identify(prefixed).prefix == "model.diffusion_model."
    schnell = {k: s for k, s in real_shapes["flux1-dev"].items() if not k.startswith("guidance_in.")}
    assert dit_detect.identify(schnell).variant == "flux1-schnell"
    assert dit_detect.identify(zimage_layout.to_diffusers(real_shapes["zimage"])).layout == "diffusers"
    assert dit_detect.identify({"encoder.conv_in.weight": (128, 3, 3, 3)}) is None


def test_detection_tells_the_vaes_apart():
    from diffusers import AutoencoderKL, AutoencoderKLFlux2

    with torch.device("meta"):
        flux2 = AutoencoderKLFlux2.from_config(_config("flux2-klein-4b", "vae"))
        flux1 = AutoencoderKL.from_config(_config("zimage", "vae"))
    shapes = {k: tuple(v.shape) for k, v in flux2.state_dict().items()}
    assert dit_detect.identify(flux2_layout.vae_to_original(shapes)).variant == "flux2-vae"
    assert dit_detect.identify(shapes).layout == "diffusers"
    assert dit_detect.identify({k: tuple(v.shape) for k, v in flux1.state_dict().items()}).variant == "flux1-ae"


def test_detection_reports_fp8_and_scales():
    fp8 = _fp8_copy(flux2_layout.to_original(_tiny("tiny-flux2-klein").state_dict()))
    shapes = {k: tuple(v.shape) for k, v in fp8.items()}
    kind = dit_detect.identify(shapes, {k: str(v.dtype) for k, v in fp8.items()})
    assert (kind.family, kind.fp8, kind.scaled) == ("flux2", True, True)
    assert dit_detect.identify(shapes).scaled  # without dtypes the sidecars alone say it


# ---- LoRA -----------------------------------------------------------------------------------------------


def _out_features(model) -> dict[str, int]:
    return {n: m.out_features for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _lora(names, out_features, n_in, ranks, scales, seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(r, n_in[n], generator=gen), torch.randn(out_features[n], r, generator=gen), s)
            for n, r, s in zip(names, ranks, scales)}


def _in_features(model) -> dict[str, int]:
    return {n: m.in_features for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("ranks, scales", [([4, 4, 4], [1.0, 1.0, 1.0]),       # copies, bit for bit
                                           ([2, 3, 4], [0.5, 1.0, 2.0]),       # mixed: scales folded
                                           ([3, 0, 2], [1.0, 1.0, 0.25])])     # k untrained: zero rows
def test_klein_fused_qkv_delta_is_the_pieces_deltas_stacked(ranks, scales):
    model = _tiny("tiny-flux2-klein")
    outs = _out_features(model)
    trained = [(f"transformer_blocks.1.attn.{p}", r, s) for p, r, s in zip(("to_q", "to_k", "to_v"), ranks, scales)
               if r]
    pieces = _lora([n for n, _, _ in trained], outs, _in_features(model), [r for _, r, _ in trained],
                   [s for _, _, s in trained])
    export = flux2_layout.lora_export(pieces, outs)
    name = "diffusion_model.double_blocks.1.img_attn.qkv"
    assert set(export) == {f"{name}.lora_A.weight", f"{name}.lora_B.weight"}  # no .alpha
    down, up = export[f"{name}.lora_A.weight"], export[f"{name}.lora_B.weight"]
    assert down.shape == (sum(ranks), 32) and up.shape == (96, sum(ranks))
    fused, covered, col = up @ down, torch.zeros(96, dtype=torch.bool), 0
    slots = flux2_layout.lora_slots(pieces, outs)
    for module, (d, u, s) in pieces.items():  # pieces in row order: q, k, v
        rows = slice(slots[module].row_offset, slots[module].row_offset + slots[module].rows)
        tolerance = _bound(s, u, d) + _bound(1.0, up[rows], down)
        assert ((fused[rows] - s * (u @ d)).double().abs() <= tolerance).all()
        block = up[rows, col:col + d.shape[0]]
        assert torch.equal(block, u) if s == 1 else torch.equal(block, u * s)  # copied, or folded once
        assert (up[rows, :col] == 0).all() and (up[rows, col + d.shape[0]:] == 0).all()
        covered[rows], col = True, col + d.shape[0]
    assert (fused[~covered] == 0).all()  # an untrained piece's rows stay exactly untouched


def test_klein_export_reads_back_in_diffusers_and_ours():
    """diffusers' FLUX.2 LoRA loader turns our export back into per-module LoRA with the trained deltas."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_flux2_lora_to_diffusers

    model = _tiny("tiny-flux2-klein")
    names = [n for n in _out_features(model) if n != "norm_out.linear"]
    pieces = _lora(names, _out_features(model), _in_features(model), [2 + i % 3 for i in range(len(names))],
                   [1.0 if i % 2 else 0.5 for i in range(len(names))], seed=3)
    export = flux2_layout.lora_export(pieces, _out_features(model))
    assert not any(k.endswith(".alpha") for k in export) and all(k.startswith("diffusion_model.") for k in export)
    theirs = _convert_non_diffusers_flux2_lora_to_diffusers(dict(export))
    ours = flux2_layout.lora_read(export)
    for module, (down, up, s) in pieces.items():
        a, b = theirs[f"transformer.{module}.lora_A.weight"], theirs[f"transformer.{module}.lora_B.weight"]
        assert torch.equal(a, ours[module][0]) and torch.equal(b, ours[module][1])
        got, want = b @ a, s * (up @ down)
        tolerance = _bound(s, up, down) + _bound(1.0, b, a) + 2 * U * want.abs().double()
        assert ((got - want).double().abs() <= tolerance).all(), module


def test_klein_refuses_the_final_modulation():
    model = _tiny("tiny-flux2-klein")
    with pytest.raises(ValueError, match="norm_out.linear"):
        flux2_layout.lora_slots(["norm_out.linear"], _out_features(model))
    with pytest.raises(ValueError, match="not a FLUX.2 transformer linear"):
        flux2_layout.lora_slots(["transformer_blocks.0.attn.norm_q"], _out_features(model))


def test_klein_export_merges_like_the_split_lora():
    """Merge a LoRA into diffusers' weights and convert to BFL; merge its export into BFL's weights: the
    same weights, to the rounding of the products and of one sum."""
    model = _tiny("tiny-flux2-klein")
    state, outs, ins = model.state_dict(), _out_features(model), _in_features(model)
    names = [n for n in outs if n != "norm_out.linear"]
    pieces = _lora(names, outs, ins, [2] * len(names), [0.5 if "add_" in n else 1.0 for n in names], seed=4)
    merged, bounds = dict(state), {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()}
    for n, (d, u, s) in pieces.items():
        merged[f"{n}.weight"] = state[f"{n}.weight"] + s * (u @ d)
        bounds[f"{n}.weight"] = _bound(s, u, d)
    expected, bfl = flux2_layout.to_original(merged), flux2_layout.to_original(state)
    bounds = flux2_layout.to_original(bounds)
    export = flux2_layout.lora_export(pieces, outs)
    for key in [k for k in export if k.endswith("lora_A.weight")]:
        layer = key.removeprefix("diffusion_model.").removesuffix(".lora_A.weight")
        down, up = export[key], export[key.replace("lora_A", "lora_B")]
        got = bfl[f"{layer}.weight"] + up @ down
        want = expected[f"{layer}.weight"]
        tolerance = bounds[f"{layer}.weight"] + _bound(1.0, up, down) + U * (got.abs() + want.abs()).double() * 2
        assert ((got - want).double().abs() <= tolerance).all(), layer


def test_zimage_export_is_diffusers_names_that_diffusers_reads_unchanged():
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_z_image_lora_to_diffusers

    model = _tiny("tiny-zimage")
    names = list(_out_features(model))
    pieces = _lora(names, _out_features(model), _in_features(model), [2] * len(names),
                   [1.0 if i % 2 else 0.25 for i in range(len(names))], seed=5)
    export = zimage_layout.lora_export(pieces)
    assert "diffusion_model.layers.1.attention.to_k.lora_A.weight" in export
    assert "diffusion_model.all_final_layer.2-1.adaLN_modulation.1.lora_B.weight" in export
    assert not any(k.endswith(".alpha") for k in export)
    theirs = _convert_non_diffusers_z_image_lora_to_diffusers(dict(export))
    for module, (down, up, s) in pieces.items():
        assert torch.equal(theirs[f"transformer.{module}.lora_A.weight"], down)
        b = theirs[f"transformer.{module}.lora_B.weight"]
        assert torch.equal(b, up) if s == 1 else torch.equal(b, up * s)
    back = zimage_layout.lora_read(export)
    assert all(torch.equal(back[m][1], export[zimage_layout.lora_name(m) + ".lora_B.weight"]) for m in pieces)
    with pytest.raises(ValueError, match="not a Z-Image linear"):
        zimage_layout.lora_name("layers.0.attention.norm_q")


def test_zimage_fused_qkv_lora_splits_into_exact_copies():
    """A LoRA in the original fused names (other trainers' files) becomes to_q/to_k/to_v: each keeps the
    whole down and its rows of up, so its delta is exactly those rows of the fused delta."""
    gen = torch.Generator().manual_seed(6)
    down, up = torch.randn(4, 32, generator=gen), torch.randn(96, 4, generator=gen)
    state = {"diffusion_model.layers.1.attention.qkv.lora_down.weight": down,
             "diffusion_model.layers.1.attention.qkv.lora_up.weight": up,
             "diffusion_model.layers.1.attention.qkv.alpha": torch.tensor(2.0),
             "diffusion_model.final_layer.linear.lora_down.weight": down,
             "diffusion_model.final_layer.linear.lora_up.weight": up[:64]}
    pieces = zimage_layout.lora_read(state)
    for i, part in enumerate(("to_q", "to_k", "to_v")):
        d, u, s = pieces[f"layers.1.attention.{part}"]
        assert d is down and torch.equal(u, up[32 * i:32 * (i + 1)]) and s == 0.5
    assert "all_final_layer.2-1.linear" in pieces
    slots = zimage_layout.merge_slots(["layers.1.attention.to_v", "layers.0.feed_forward.w2"],
                                      _out_features(_tiny("tiny-zimage")))
    v = slots["layers.1.attention.to_v"]
    assert (v.kohya, v.row_offset, v.rows, v.fused_rows) == ("layers.1.attention.qkv", 64, 32, 96)
    assert slots["layers.0.feed_forward.w2"].fused_rows is None
