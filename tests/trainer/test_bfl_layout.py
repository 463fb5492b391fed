"""FLUX.1's BFL single-file layout <-> diffusers' FluxTransformer2DModel, for full weights and for LoRA.

The full-weight map must be lossless (a merge writes BFL, a load reads it) and agree with diffusers' own
converter; a LoRA trained on diffusers' split q/k/v (and proj_mlp) must export into kohya's fused BFL
layers with the same delta, up to the fp32 rounding of the matrix products, and diffusers must read the
export back to the same deltas. Bounds are the textbook ones for a length-k fp32 dot product.
"""

import json
from pathlib import Path

import pytest
import torch

from trainer.models.bfl_layout import (
    BFL_PREFIX,
    bfl_to_diffusers,
    depth,
    diffusers_to_bfl,
    fuse_lora,
    is_bfl,
    kohya_bfl_lora_names,
    transformer_keys,
)

CONFIGS = Path(__file__).resolve().parents[2] / "assets" / "configs"
U = 2.0 ** -24  # fp32 unit roundoff


def _config(name: str, **override) -> dict:
    return dict(json.loads((CONFIGS / name / "transformer" / "config.json").read_text()), **override)


def _tiny_transformer(name="tiny-flux1", seed=0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel.from_config(_config(name))
    with torch.no_grad():  # diffusers zero-initialises some layers; random everywhere tests more
        for p in model.parameters():
            p.normal_()
    return model


def _bound(scale: float, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |fl(scale * (up @ down)) - exact| in fp32: gamma_k for the length-k dot product,
    one rounding for the scale's cast and one for the product by it (or for pre-scaling `up`)."""
    k = up.shape[1]
    gamma = k * U / (1 - k * U)
    return (gamma + 2 * U) * abs(scale) * (up.double().abs() @ down.double().abs())


# ---- full weights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-flux1", "tiny-flux1-schnell"])
def test_tiny_model_round_trips_through_bfl_names_exactly(name):
    model = _tiny_transformer(name)
    state = model.state_dict()
    bfl = diffusers_to_bfl(state)
    h = model.config.num_attention_heads * model.config.attention_head_dim
    assert bfl["double_blocks.1.img_attn.qkv.weight"].shape == (3 * h, h)
    assert bfl["single_blocks.1.linear1.weight"].shape == (7 * h, h)
    assert bfl["double_blocks.0.txt_attn.norm.key_norm.scale"].shape == (model.config.attention_head_dim,)
    assert ("guidance_in.in_layer.weight" in bfl) == (name == "tiny-flux1")
    assert is_bfl(bfl) and not is_bfl(state) and depth(bfl) == (2, 2, name == "tiny-flux1")
    back = bfl_to_diffusers({BFL_PREFIX + k: v for k, v in bfl.items()})
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert len(bfl) == len(state) - 2 * 4 * 2 - 2 * 3 * 2  # qkv: 3 weights + 3 biases -> 2; linear1 4 -> 1


def test_stacks_and_swap_are_where_bfl_keeps_them():
    state = _tiny_transformer().state_dict()
    bfl = diffusers_to_bfl(state)
    h = 32
    qkv = bfl["double_blocks.0.txt_attn.qkv.weight"]
    assert torch.equal(qkv[h:2 * h], state["transformer_blocks.0.attn.add_k_proj.weight"])
    linear1 = bfl["single_blocks.1.linear1.bias"]
    assert torch.equal(linear1[3 * h:], state["single_transformer_blocks.1.proj_mlp.bias"])
    ada = bfl["final_layer.adaLN_modulation.1.weight"]  # BFL shift | scale; diffusers scale | shift
    assert torch.equal(ada[:h], state["norm_out.linear.weight"][h:])


def test_a_merged_model_loads_back_into_diffusers():
    model = _tiny_transformer(seed=1)
    fresh = _tiny_transformer(seed=2)
    fresh.load_state_dict(bfl_to_diffusers(diffusers_to_bfl(model.state_dict())), strict=True)
    x = torch.randn(1, 16, 64)
    ids = torch.zeros(16, 3)
    args = dict(hidden_states=x, encoder_hidden_states=torch.randn(1, 5, 32),
                pooled_projections=torch.randn(1, 32), timestep=torch.tensor([0.5]), img_ids=ids,
                txt_ids=torch.zeros(5, 3), guidance=torch.tensor([3.5]))
    with torch.no_grad():
        assert torch.equal(model(**args).sample, fresh(**args).sample)


def _narrow_real_bfl(guidance: bool, prefix: str) -> dict:
    """The real FLUX.1 rows (width 3072, so diffusers' converter, which assumes it, applies) for 2 + 2
    blocks, with 3 columns per matrix so the test stays small: the converters only cut rows."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(
            _config("flux1-dev", num_layers=2, num_single_layers=2, guidance_embeds=guidance))
    shapes = diffusers_to_bfl({k: tuple(v.shape) for k, v in model.state_dict().items()})
    gen = torch.Generator().manual_seed(0)
    return {prefix + k: torch.randn(s[:1] + tuple(min(d, 3) for d in s[1:]), generator=gen)
            for k, s in shapes.items()}


@pytest.mark.parametrize("guidance, prefix", [(True, ""), (False, BFL_PREFIX)])
def test_bfl_to_diffusers_agrees_with_diffusers_converter(guidance, prefix):
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    bfl = _narrow_real_bfl(guidance, prefix)
    ours = bfl_to_diffusers(bfl)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_foreign_keys_are_refused_not_dropped():
    bfl = diffusers_to_bfl(_tiny_transformer().state_dict())
    full = dict({BFL_PREFIX + k: v for k, v in bfl.items()}, **{"vae.encoder.conv_in.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="vae.encoder.conv_in.weight"):
        bfl_to_diffusers(full)
    selected = {k: full[k] for k in transformer_keys(full)}
    assert bfl_to_diffusers(selected).keys() == bfl_to_diffusers(bfl).keys()
    del bfl["single_blocks.0.linear2.bias"]
    with pytest.raises(KeyError, match="single_blocks.0.linear2.bias"):
        bfl_to_diffusers(bfl)


# ---- LoRA -----------------------------------------------------------------------------------------------


def test_kohya_slots_name_the_fused_layer_and_row_offset():
    h = 3072
    slots = kohya_bfl_lora_names(["transformer.transformer_blocks.5.attn.add_v_proj",
                                  "single_transformer_blocks.37.proj_mlp",
                                  "single_transformer_blocks.0.attn.to_k", "norm_out.linear",
                                  "transformer_blocks.0.ff_context.net.2"], h)
    v = slots["transformer.transformer_blocks.5.attn.add_v_proj"]
    assert (v.kohya, v.row_offset, v.rows, v.fused_rows) == ("lora_unet_double_blocks_5_txt_attn_qkv",
                                                             2 * h, h, 3 * h)
    mlp = slots["single_transformer_blocks.37.proj_mlp"]
    assert (mlp.kohya, mlp.row_offset, mlp.rows, mlp.fused_rows) == ("lora_unet_single_blocks_37_linear1",
                                                                     3 * h, 4 * h, 7 * h)
    assert slots["single_transformer_blocks.0.attn.to_k"].row_offset == h
    assert slots["norm_out.linear"].kohya == "lora_unet_final_layer_adaLN_modulation_1"
    assert slots["norm_out.linear"].swap and slots["norm_out.linear"].fused_rows is None
    assert slots["transformer_blocks.0.ff_context.net.2"].kohya == "lora_unet_double_blocks_0_txt_mlp_2"
    with pytest.raises(ValueError, match="norm_q"):
        kohya_bfl_lora_names(["transformer_blocks.0.attn.norm_q"], h)


def _pieces(names, hidden, ranks, scales, n_in, n_out=None, seed=0):
    """Random LoRA pieces [(slot, down, up, scale)] for diffusers modules `names`; `n_out` is the output
    width of a one-to-one layer (a stacked piece's comes from its slot)."""
    gen = torch.Generator().manual_seed(seed)
    slots = kohya_bfl_lora_names(names, hidden)
    return [(slots[n], torch.randn(r, n_in, generator=gen),
             torch.randn(slots[n].rows or n_out, r, generator=gen), s)
            for n, r, s in zip(names, ranks, scales)]


@pytest.mark.parametrize("names, ranks, scales", [
    (["attn.to_q", "attn.to_k", "attn.to_v"], [4, 4, 4], [0.5, 0.5, 0.5]),  # equal: ups copied, alpha = s R
    (["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], [2, 3, 4, 5], [1.0, 0.25, 2.0, 0.7]),  # folded
    (["attn.to_v", "proj_mlp"], [3, 2], [1.0, 1.0]),                             # q, k untrained: zero rows
])
def test_fused_lora_delta_is_the_pieces_deltas_stacked(names, ranks, scales):
    h, n_in = 16, 16
    pieces = _pieces([f"single_transformer_blocks.1.{n}" for n in names], h, ranks, scales, n_in)
    down, up, alpha = fuse_lora(pieces)
    rank = sum(ranks)
    assert down.shape == (rank, n_in) and up.shape == (7 * h, rank)
    fused = (alpha / rank) * (up @ down)
    covered = torch.zeros(7 * h, dtype=torch.bool)
    for slot, d, u, s in pieces:
        rows = slice(slot.row_offset, slot.row_offset + slot.rows)
        tolerance = _bound(s, u, d) + _bound(alpha / rank, up[rows], down)
        assert ((fused[rows] - s * (u @ d)).double().abs() <= tolerance).all()
        covered[rows] = True
    assert (fused[~covered] == 0).all()  # untrained pieces stay exactly untouched
    if len(set(scales)) == 1:
        assert alpha == scales[0] * rank
        first = pieces[0][0]
        assert torch.equal(up[first.row_offset:first.row_offset + first.rows, :ranks[0]], pieces[0][2])


def test_fused_lora_on_a_tiny_model_merges_like_the_split_lora():
    """Merge a LoRA on every linear layer in diffusers names, convert to BFL; merge its kohya export into
    the BFL weights directly: the same weights, to the rounding of the products."""
    model = _tiny_transformer()
    state = model.state_dict()
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    slots = kohya_bfl_lora_names(linears, 32)
    gen = torch.Generator().manual_seed(3)
    by_layer, merged = {}, dict(state)
    piece_bounds = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()}
    for i, name in enumerate(linears):
        n_out, n_in = state[f"{name}.weight"].shape
        r, s = 2 + i % 3, 0.5 if i % 2 else 1.0  # mixed ranks and scales: some layers fold, some copy
        down, up = torch.randn(r, n_in, generator=gen) * 0.1, torch.randn(n_out, r, generator=gen) * 0.1
        merged[f"{name}.weight"] = state[f"{name}.weight"] + s * (up @ down)
        piece_bounds[f"{name}.weight"] = _bound(s, up, down)
        by_layer.setdefault(slots[name].kohya, []).append((slots[name], down, up, s))
    expected, bfl = diffusers_to_bfl(merged), diffusers_to_bfl(state)
    bounds = diffusers_to_bfl(piece_bounds)  # each piece's rounding bound, moved to its BFL rows
    for kohya, pieces in by_layer.items():
        down, up, alpha = fuse_lora(pieces)
        weight = next(k for k in bfl if "lora_unet_" + k.removesuffix(".weight").replace(".", "_") == kohya)
        got = bfl[weight] + (alpha / down.shape[0]) * (up @ down)
        # both sides: the delta's rounding, then one rounding of the sum with the base weight
        tolerance = bounds[weight] + _bound(alpha / down.shape[0], up, down) + U * (
            got.abs().double() + expected[weight].abs().double()) * (1 + 4 * U)
        assert ((got - expected[weight]).double().abs() <= tolerance).all(), kohya


def test_diffusers_reads_the_kohya_export_back_to_the_same_deltas():
    """diffusers' kohya FLUX LoRA loader (which assumes width 3072 and ignores final-layer alphas) turns our
    fused export back into per-module LoRA whose deltas are the trained ones."""
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    h, gen = 3072, torch.Generator().manual_seed(5)
    plan = {"transformer_blocks.0.attn.": (["to_q", "to_k", "to_v"], [4, 4, 4], [0.5] * 3),
            "transformer_blocks.0.attn.add_": (["q_proj", "k_proj", "v_proj"], [2, 3, 4], [1.0, 0.25, 2.0]),
            "single_transformer_blocks.1.": (["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], [4] * 4,
                                             [2.0] * 4),
            "": (["norm_out.linear"], [3], [0.5])}
    pieces, export = {}, {}
    for prefix, (names, ranks, scales) in plan.items():
        group = _pieces([prefix + n for n in names], h, ranks, scales, h, n_out=2 * h, seed=len(export))
        down, up, alpha = fuse_lora(group, fold=prefix == "")
        kohya = group[0][0].kohya
        export.update({f"{kohya}.lora_down.weight": down, f"{kohya}.lora_up.weight": up,
                       f"{kohya}.alpha": torch.tensor(alpha)})
        pieces.update({prefix + n: p for n, p in zip(names, group)})
    loaded = _convert_kohya_flux_lora_to_diffusers(export)
    cols = torch.randperm(h, generator=gen)[:16]  # deltas on a few input columns keep this small
    for name, (_, down, up, s) in pieces.items():
        # diffusers 0.42 leaves final_layer/img_in/... keys without `transformer.` (and so never applies them
        # in load_lora_weights): read either spelling, the arithmetic is what this test is about
        key = f"transformer.{name}" if f"transformer.{name}.lora_A.weight" in loaded else name
        a, b = loaded[f"{key}.lora_A.weight"], loaded[f"{key}.lora_B.weight"]
        got, want = b @ a[:, cols], s * (up @ down[:, cols])
        tolerance = _bound(s, up, down[:, cols]) + _bound(1.0, b, a[:, cols]) + 2 * U * want.abs().double()
        assert ((got - want).double().abs() <= tolerance).all(), name
