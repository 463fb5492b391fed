"""Training methods of issue 17's second part (timestep shift, long captions, EMA, masked loss, per-block
ranks, starting from a LoRA file; AdaLoRA is in test_adalora.py): each through the CLI on the tiny model, exported and verified."""

import pytest
import torch
from safetensors.torch import load_file

from tests.support.engine import make_dataset, run_cli
from tests.support.runs import adapter_metadata, train_verified
from tests.support.ui_formulas import modules_of
from trainer.export.verify import verify_file
from trainer.families.ddpm import draw_timesteps
from trainer.shared.config import LossConfig


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A shared dataset, the plain one-step reference run's modules, and a function to run a variant."""
    root = tmp_path_factory.mktemp("methods")
    make_dataset(root / "data", count=4)
    _, plain = train_verified(root, "plain")
    return root, modules_of(load_file(str(plain))), lambda name, *sets, **kw: train_verified(root, name, *sets, **kw)


# --- timestep shift ---------------------------------------------------------------------------------------

def test_timestep_shift_moves_the_drawn_timesteps_toward_noise_inside_the_window():
    plain = draw_timesteps(20000, torch.Generator().manual_seed(0), LossConfig())
    shifted = draw_timesteps(20000, torch.Generator().manual_seed(0), LossConfig(timestep_shift=3.0))
    assert plain.float().mean() == pytest.approx(500, abs=10)
    # s = 3: the window's middle (u = 0.5) lands at 0.75, the mean of s·u/(1+(s−1)u) is about 0.68
    assert shifted.float().median() == pytest.approx(750, abs=15) and shifted.float().mean() > 650
    windowed = draw_timesteps(5000, torch.Generator().manual_seed(0),
                              LossConfig(timestep_shift=3.0, min_timestep=200, max_timestep=400))
    assert windowed.min() >= 200 and windowed.max() <= 399 and windowed.float().median() > 330


def test_timestep_shift_changes_what_a_run_learns(runs):
    root, plain, run = runs
    _, adapter = run("shift", "loss.timestep_shift=3")
    shifted = modules_of(load_file(str(adapter)))
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert not torch.equal(shifted[module]["lora_up.weight"], plain[module]["lora_up.weight"])


# --- long captions ----------------------------------------------------------------------------------------

LONG = ", ".join(f"tag{i} red circle" for i in range(20))  # 109 tokens: two chunks


@pytest.fixture(scope="module", params=["demo:sd15", "demo:sdxl"])
def tiny_model(request):
    from trainer.models.load import load_base_model

    return load_base_model(request.param)


@torch.no_grad()
def test_long_captions_encode_in_75_token_chunks_and_short_ones_as_before(tiny_model):
    from trainer.run.encode import encode_text, pad_chunks

    model = tiny_model
    tok = model.tokenizers[0]
    assert len(tok(LONG, add_special_tokens=False).input_ids) > 75
    short, short_pooled = encode_text(model, ["a red circle"], "cpu", max_tokens=225)
    old, old_pooled = encode_text(model, ["a red circle"], "cpu", max_tokens=75)
    assert short.shape[1] == 77 and torch.equal(short, old)
    if short_pooled is not None:  # SDXL's pooled projection
        assert torch.equal(short_pooled, old_pooled)
    long, long_pooled = encode_text(model, [LONG], "cpu", max_tokens=225)
    truncated, truncated_pooled = encode_text(model, [LONG], "cpu", max_tokens=75)
    assert long.shape[1] == 154  # two chunks of 77 hidden states
    assert torch.allclose(long[:, :77], truncated, atol=1e-5)  # the first chunk is the caption's first 75 tokens
    assert not torch.allclose(long[:, 77:], encode_text(model, [""], "cpu")[0], atol=1e-3)  # the rest is read
    if long_pooled is not None:
        assert torch.allclose(long_pooled, truncated_pooled, atol=1e-5)  # pooled: the first chunk's, as kohya
    # a batch mixing both encodes as the two padded with the empty caption's chunk (what the text cache does)
    together, _ = encode_text(model, ["a red circle", LONG], "cpu", max_tokens=225)
    apart = pad_chunks(model, [short[0], long[0]], encode_text(model, [""], "cpu")[0][0])
    assert torch.allclose(together, apart, atol=1e-5)


@pytest.mark.parametrize("tokens", [100, 300])
def test_max_token_length_must_be_whole_chunks_the_family_reads(tmp_path, tokens):
    from tests.support.engine import make_dataset, tiny_config, train_in_process
    from trainer.shared.errors import ConfigError

    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), dataset__max_token_length=tokens)
    with pytest.raises(ConfigError, match=r"dataset.max_token_length' is \d+; SD 1.x allows 75, 150, 225"):
        train_in_process(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("spec", ["demo:sd15", "demo:sdxl"])
def test_long_captions_train_with_the_text_cache_and_preview(tmp_path, spec):
    data = make_dataset(tmp_path / "data", count=4)
    (data / "img_00.txt").write_text(LONG, encoding="utf-8")  # one long caption among short ones
    events, _ = train_verified(tmp_path, "long", f"model.path={spec}", "schedule.batch_size=2", "sampling.every_n_steps=2",
                       "sampling.steps=2", f'sampling.prompts=["{LONG} --n blurry", "short --n {LONG}"]', steps=2)
    assert len([e for e in events if e.type == "sample"]) == 4
    assert len([e for e in events if e.type == "progress"]) == 2


# --- EMA --------------------------------------------------------------------------------------------------

def test_ema_file_lags_the_trained_adapter_and_loads_everywhere(tmp_path):
    make_dataset(tmp_path / "data", count=4)
    events, adapter = train_verified(tmp_path, "ema", "lora.ema_decay=0.9", "saving.every_n_steps=2", "saving.keep_last=1",
                             "optimizer.lr=1e-2", steps=6)
    ema = adapter.with_name("demo-lora.ema.safetensors")
    assert verify_file(ema).ok
    trained, averaged = load_file(str(adapter)), load_file(str(ema))
    assert trained.keys() == averaged.keys()
    ups = [k for k in trained if k.endswith("lora_up.weight")]
    # B starts at zero and grows each step; the average of its recent values is smaller than its last one
    assert sum(averaged[k].norm() for k in ups) < 0.95 * sum(trained[k].norm() for k in ups)
    assert adapter_metadata(ema)["ss_network_dim"] == adapter_metadata(adapter)["ss_network_dim"]
    # checkpoints carry their average too, and keep_last prunes the pair
    names = sorted(p.name for p in (tmp_path / "ema" / "checkpoints").iterdir())
    assert names == ["demo-lora-step000004.ema.safetensors", "demo-lora-step000004.safetensors"]


def test_ema_is_kept_across_a_resume_and_previews_can_use_it(tmp_path, dataset_dir):
    from tests.support.engine import tiny_config, train_in_process

    cfg = tiny_config(dataset_dir, schedule__max_steps=6, lora__ema_decay=0.8, saving__dtype="fp32",
                      optimizer__lr=1e-2)
    straight, _ = train_in_process(cfg, tmp_path / "straight")
    train_in_process(cfg, tmp_path / "cut", stop_at=3)
    resumed, second = train_in_process(cfg, tmp_path / "cut", resume=True)
    assert not second.of_type("warning")
    a, b = load_file(str(straight.with_name("demo-lora.ema.safetensors"))), \
        load_file(str(resumed.with_name("demo-lora.ema.safetensors")))
    assert all(torch.equal(a[k], b[k]) for k in a)

    pixels = {}
    for use_ema in (False, True):
        cfg = tiny_config(dataset_dir, schedule__max_steps=2, lora__ema_decay=0.5, optimizer__lr=5e-2,
                          sampling__every_n_steps=2, sampling__at_start=False, sampling__steps=2,
                          sampling__use_ema=use_ema)
        _, sink = train_in_process(cfg, tmp_path / f"preview-{use_ema}")
        from PIL import Image

        pixels[use_ema] = Image.open(sink.of_type("sample")[0].path).tobytes()
    assert pixels[False] != pixels[True]


# --- per-block rank, alpha and learning rate --------------------------------------------------------------

def test_block_ranks_alphas_and_learning_rates_reach_the_file(runs):
    root, plain, run = runs
    _, adapter = run("blocks", "lora.targets=full", "lora.conv_rank=6", "lora.block_ranks=[2, 3, 5]",
                     "lora.block_alphas=[1.0, 4.0, 2.5]", "optimizer.block_lr=[0, 1, 2]")
    modules = modules_of(load_file(str(adapter)))

    def rank_alpha(name):
        return modules[name]["lora_down.weight"].shape[0], float(modules[name]["alpha"])

    attn = "transformer_blocks_0_attn1_to_q"
    assert rank_alpha(f"lora_unet_down_blocks_0_attentions_0_{attn}") == (2, 1.0)
    assert rank_alpha(f"lora_unet_mid_block_attentions_0_{attn}") == (3, 4.0)
    assert rank_alpha(f"lora_unet_up_blocks_1_attentions_0_{attn}") == (5, 2.5)
    assert rank_alpha("lora_unet_up_blocks_1_resnets_0_conv1") == (6, 2.5)  # conv_rank; the block's alpha
    # block_lr: the down blocks do not move (B stays zero), the up blocks move twice as far as the mid ones'
    assert all(parts["lora_up.weight"].abs().max() == 0 for m, parts in modules.items() if "_down_blocks_" in m)
    assert all(parts["lora_up.weight"].abs().max() > 0 for m, parts in modules.items() if "_up_blocks_" in m)
    up_move = float(modules["lora_unet_up_blocks_1_resnets_0_conv1"]["lora_up.weight"].abs().max())
    mid_move = float(modules["lora_unet_mid_block_resnets_0_conv1"]["lora_up.weight"].abs().max())
    assert up_move == pytest.approx(2 * mid_move, rel=0.05)  # one Adam step moves each weight by about lr


@pytest.mark.parametrize("spec, groups", [("demo:sd15", "[down, mid, up]"), ("demo:flux1", "[double, single]")])
def test_block_lists_take_one_value_per_block_group_of_the_family(tmp_path, spec, groups):
    from tests.support.engine import make_dataset, tiny_config, train_in_process
    from trainer.shared.errors import ConfigError

    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=spec, lora__block_ranks=[4, 8, 8, 4],
                      dataset__max_token_length=75)
    with pytest.raises(ConfigError, match="lora.block_ranks") as err:
        train_in_process(cfg, tmp_path / "run")   # refused before the model loads, naming the family's groups
    assert groups in err.value.message
    with pytest.raises(ConfigError, match="optimizer.block_lr"):
        tiny_config(tmp_path, optimizer__block_lr=[1, -1, 1])


# --- start from an existing LoRA file ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """An earlier LoRA (rank 4, alpha 2, attention, text encoder trained) and its diffusers-layout export."""
    root = tmp_path_factory.mktemp("earlier")
    make_dataset(root / "data", count=4)
    _, adapter = train_verified(root, "first", "lora.rank=4", "lora.alpha=2", "lora.train_text_encoder=true",
                        "optimizer.lr=1e-2", steps=2)
    done = run_cli_plain("export", str(adapter), "--format", "diffusers", "--to", str(root / "diffusers"))
    assert done.returncode == 0, done.stderr
    return root, adapter, next((root / "diffusers").rglob("*.safetensors"))


def run_cli_plain(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
def test_training_starts_from_the_file_and_adopts_its_rank(earlier, layout):
    root, adapter, diffusers_file = earlier
    start = adapter if layout == "kohya" else diffusers_file
    # learning rate (about) 0: the adapter written after one step is the file it started from
    events, continued = train_verified(root, f"cont-{layout}", f"lora.init_from={start}", "lora.rank=16",
                               "lora.train_text_encoder=true", "optimizer.lr=0", "optimizer.text_encoder_lr=1e-12")
    assert any("rank 4" in e.message and "lora.rank" in e.message for e in events if e.type == "warning")
    before, after = load_file(str(adapter)), load_file(str(continued))
    assert before.keys() == after.keys()
    # the same update by the UIs' formula (the alphas differ: the config's alpha/rank scale is the new one)
    deltas = {m: p["lora_up.weight"].flatten(1) @ p["lora_down.weight"].flatten(1) * p["alpha"] / 4
              for m, p in modules_of(before).items()}
    for m, p in modules_of(after).items():
        got = p["lora_up.weight"].flatten(1) @ p["lora_down.weight"].flatten(1) * p["alpha"] / 4
        assert torch.allclose(got, deltas[m], atol=1e-6), m


def test_a_file_that_does_not_fit_is_refused_with_its_name(earlier, tmp_path):
    root, adapter, _ = earlier

    def refused(*sets):
        code, _, stderr = run_cli("train", "--demo", "--out", str(tmp_path / "r"), "--set",
                                  f"dataset.path={root / 'data'}", *[a for s in sets for a in ("--set", s)])
        assert code != 0 and (adapter.name in stderr or "not found" in stderr), stderr
        return stderr

    assert "lora.train_text_encoder" in refused(f"lora.init_from={adapter}")        # the file has TE weights
    assert "lora.targets" in refused(f"lora.init_from={adapter}", "lora.train_text_encoder=true",
                                     "lora.targets=attention+ff")                  # modules the file lacks
    assert "SD 1.x" in refused(f"lora.init_from={adapter}", "lora.train_text_encoder=true", "model.path=demo:sdxl")
    assert "not found" in refused(f"lora.init_from={tmp_path / 'missing.safetensors'}")


# --- masked loss ------------------------------------------------------------------------------------------

def _masked_dataset(folder):
    """Four images: two with black masks in masks/, two whose alpha channel is fully transparent."""
    import numpy as np
    from PIL import Image

    make_dataset(folder, count=4)
    (folder / "masks").mkdir()
    for i in (0, 1):
        with Image.open(folder / f"img_{i:02d}.png") as im:
            Image.new("L", im.size, 0).save(folder / "masks" / f"img_{i:02d}.png")
    for i in (2, 3):
        path = folder / f"img_{i:02d}.png"
        with Image.open(path) as im:
            rgba = np.dstack([np.asarray(im.convert("RGB")), np.zeros(im.size[::-1], np.uint8)])
        Image.fromarray(rgba, "RGBA").save(path)
    return folder


def test_masks_come_from_the_masks_folder_or_alpha_and_follow_crop_and_flip(tmp_path):
    import numpy as np
    from PIL import Image

    from trainer.data.masks import load_mask
    from trainer.data.spec import list_images, read_dataset

    folder = make_dataset(tmp_path / "d", count=2, size=64)
    (folder / "masks").mkdir()
    left_white = np.zeros((64, 64), np.uint8)
    left_white[:, :32] = 255
    Image.fromarray(left_white).save(folder / "masks" / "img_00.png")
    records = list_images(read_dataset(folder))
    assert [r.path.name for r in records] == ["img_00.png", "img_01.png"]  # masks/ is not training data
    mask = load_mask(records[0], (64, 64), (0, 0), flip=False)
    assert mask.shape == (1, 8, 8) and mask[0, :, :4].min() == 1 and mask[0, :, 4:].max() == 0
    assert torch.equal(load_mask(records[0], (64, 64), (0, 0), flip=True), mask.flip(-1))
    assert torch.equal(load_mask(records[1], (64, 64), (0, 0), flip=False), torch.ones(1, 8, 8))


def test_masked_loss_without_any_mask_is_warned(tmp_path):
    from trainer.data.masks import no_masks_warning
    from trainer.data.spec import list_images, read_dataset
    from trainer.shared.config import TrainConfig

    records = list_images(read_dataset(make_dataset(tmp_path / "d", count=2)))
    cfg = TrainConfig()
    assert no_masks_warning(cfg, records) is None
    cfg.loss.masked = True
    assert "loss.masked" in no_masks_warning(cfg, records).message


def test_a_broken_mask_is_refused_before_the_model_loads_and_named_by_check(tmp_path):
    data = make_dataset(tmp_path / "d", count=2)
    (data / "masks").mkdir()
    (data / "masks" / "img_00.png").write_text("not an image")
    code, events, _ = run_cli("train", "--demo", "--out", str(tmp_path / "run"), "--events", "jsonl",
                              "--set", f"dataset.path={data}", "--set", "loss.masked=true")
    error = events[-1]
    assert code == 2 and error.type == "error" and "img_00.png" in error.message and "delete it" in error.hint
    assert not any(e.type == "started" for e in events)
    check = run_cli_plain("dataset", "check", str(data))
    assert "1 loss masks are not readable images" in check.stdout and "masks/img_00.png" in check.stdout


def test_masked_loss_counts_only_the_white_part(tmp_path):
    from diffusers import DDPMScheduler

    from trainer.families.ddpm import loss_per_sample

    pred, target = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8)
    target[..., :4] = 3.0  # the left half is far off
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1.0    # ...and ignored
    args = (DDPMScheduler(), torch.tensor([10]), "epsilon", LossConfig())
    assert loss_per_sample(pred, target, *args).item() == pytest.approx(5.0)  # (9 + 1) / 2
    assert loss_per_sample(pred, target, *args, masks=mask).item() == pytest.approx(0.5)


@pytest.mark.parametrize("cached", [True, False])
def test_fully_masked_images_teach_nothing_and_dataset_check_counts_masks(tmp_path, cached):
    _masked_dataset(tmp_path / "data")
    events, adapter = train_verified(tmp_path, "masked", "loss.masked=true", f"dataset.center_crop={str(cached).lower()}",
                             steps=2)
    assert [e.loss for e in events if e.type == "progress"] == [0.0, 0.0]
    assert all(t.abs().max() == 0 for k, t in load_file(str(adapter)).items() if k.endswith("lora_up.weight"))
    if cached:
        done = run_cli_plain("dataset", "check", str(tmp_path / "data"))
        assert done.returncode == 0 and ": 4 images," in done.stdout  # the masks are not training images
        assert "loss masks (loss.masked): 2 from masks/, 2 from the alpha channel, 0 without" in done.stdout
