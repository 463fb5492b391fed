"""The dataset as the loop sees it: buckets, the latent cache across epochs and runs, subsets and captions."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.engine import make_dataset, tiny_config, train_in_process
from trainer.run.batches import Batches
from trainer.run.loop import load_records


@pytest.fixture
def vae_calls(monkeypatch):
    from diffusers import AutoencoderKL

    calls = []
    original = AutoencoderKL.encode

    def counting(self, x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    return calls


def test_latent_cache_spares_the_vae_across_epochs_and_runs(tmp_path, vae_calls, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path / "cache"))
    data = make_dataset(tmp_path / "d", count=4)
    cfg = tiny_config(data, schedule__max_steps=6, schedule__batch_size=2)  # 2 batches/epoch: 3 epochs
    train_in_process(cfg, tmp_path / "run1")
    assert sum(vae_calls) == 4, "each image encoded exactly once in the first run"
    vae_calls.clear()
    train_in_process(cfg, tmp_path / "run2")
    assert sum(vae_calls) == 0, "a second run encodes nothing"
    Image.fromarray(np.full((80, 96, 3), 7, np.uint8)).save(data / "img_01.png")
    train_in_process(cfg, tmp_path / "run3")
    assert sum(vae_calls) == 1, "editing one image re-encodes one"


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, vae_calls, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(cache))
    cfg = tiny_config(make_dataset(tmp_path / "d", count=2), schedule__max_steps=1)
    train_in_process(cfg, tmp_path / "a")
    first, second = sorted(cache.rglob("*.safetensors"))
    first.write_bytes(b"garbage")
    raw = bytearray(second.read_bytes())  # a power cut after an unsynced write: header fine, data zeros
    raw[-16:] = bytes(16)
    second.write_bytes(bytes(raw))
    vae_calls.clear()
    train_in_process(cfg, tmp_path / "b")
    assert sum(vae_calls) == 2


def test_images_train_in_buckets_of_their_shape_with_sdxl_conditioning(tmp_path, monkeypatch):
    folder = tmp_path / "wide"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (420, 240), (50 * i, 90, 30)).save(folder / f"w{i}.png")
        (folder / f"w{i}.txt").write_text("tok, wide")
    seen = {}
    from trainer.families.registry import get

    family = get("sdxl")
    original = family.conditioning

    def spy(model, hidden, pooled, batch, latents, dtype):
        out = original(model, hidden, pooled, batch, latents, dtype)
        seen["time_ids"] = [int(v) for v in out["added_cond_kwargs"]["time_ids"][0].tolist()]
        return out

    monkeypatch.setattr(family, "conditioning", spy)
    cfg = tiny_config(folder, model__path="demo:sdxl", dataset__resolution=256, schedule__max_steps=1)
    train_in_process(cfg, tmp_path / "run")
    original_hw, crop, target_hw = seen["time_ids"][:2], seen["time_ids"][2:4], seen["time_ids"][4:]
    assert target_hw == [192, 320]            # (h, w) of the 320x192 bucket, not a square
    assert original_hw == [240, 420]
    assert crop == [0, 8]  # resized to 336x192, 8 px cut from each side


def test_subsets_repeats_and_regularisation_weights(tmp_path):
    root = tmp_path / "k"
    make_dataset(root / "3_zkx", count=2)
    make_dataset(root / "1_reg", count=1)
    cfg = tiny_config(root, loss__prior_loss_weight=0.5, schedule__batch_size=1, performance__cache_latents=False)
    data = Batches(cfg, load_records(cfg))
    plan = data.epoch_plan(0)
    assert len(plan) == 2 * 3 + 1
    for batch in (data._batch(b, 0, k) for k, b in enumerate(plan)):
        reg = data.records[batch.indices[0]].subset.is_reg
        assert batch.loss_weights.tolist() == [0.5 if reg else 1.0]


def test_caption_shuffle_keeps_the_trigger_and_turns_off_the_text_cache(tmp_path):
    cfg = tiny_config(make_dataset(tmp_path / "d", count=2), dataset__shuffle_tags=True, dataset__keep_tokens=1)
    data = Batches(cfg, load_records(cfg))
    assert data.captions_vary
    captions = {data.caption_for(0, random.Random(s)) for s in range(20)}
    assert len(captions) > 1 and all(c.startswith("tok, ") for c in captions)


def test_an_image_with_nan_latents_is_left_out_with_a_warning(tmp_path, monkeypatch):
    import trainer.run.caching as caching

    original = caching.latent_distribution

    def poisoned(vae, pixels):
        out = original(vae, pixels)
        return out * float("nan") if pixels.mean() > 0.2 else out

    monkeypatch.setattr(caching, "latent_distribution", poisoned)
    monkeypatch.setenv("LORA_STUDIO_CACHE", str(tmp_path / "cache"))
    data = make_dataset(tmp_path / "d", count=3)
    Image.new("RGB", (90, 90), (250, 250, 250)).save(data / "img_bright.png")
    cfg = tiny_config(data, schedule__max_steps=2)
    adapter, sink = train_in_process(cfg, tmp_path / "run")
    warnings = [w.message for w in sink.of_type("warning")]
    assert any("img_bright.png" in w and "NaN" in w for w in warnings)
    assert adapter.exists() and torch.isfinite(torch.tensor(sink.of_type("progress")[-1].loss))


def test_a_subset_can_have_its_own_resolution(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root / "wide", count=1, size=300)
    make_dataset(root / "close", count=1, size=300)
    (root / "dataset.toml").write_text('[[subset]]\nfolder = "wide"\n\n[[subset]]\nfolder = "close"\n'
                                       'resolution = 128\n')
    cfg = tiny_config(root, dataset__resolution=256, performance__cache_latents=False)
    data = Batches(cfg, load_records(cfg))
    sizes = {r.subset.name: data.buckets[i] for i, r in enumerate(data.records)}
    assert sizes["wide"][0] * sizes["wide"][1] > sizes["close"][0] * sizes["close"][1]
    assert max(sizes["close"]) <= 256
