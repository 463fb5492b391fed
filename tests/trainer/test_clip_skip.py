"""model.clip_skip: training, the text cache and previews condition on the layer A1111's "Clip skip" means,
and the adapter says which (ss_clip_skip)."""

from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from tests.support.engine import make_dataset, run_cli
from trainer.models.load import load_base_model
from trainer.run.encode import encode_text


@pytest.mark.parametrize("spec", ["demo:sd15", "demo:sdxl"])
def test_clip_skip_2_matches_diffusers_reference(spec):
    """diffusers' pipelines implement A1111's clip skip (their clip_skip=1 is A1111's 2); ours must agree."""
    from trainer.run.sampling import build_pipeline

    model = load_base_model(spec)
    pipe = build_pipeline(model, "euler_a")
    encoder = model.text_encoders[0]
    # diffusers reaches for the wrapper transformers 5 removed (a plain attribute, not a submodule)
    encoder.text_model = SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
    try:
        reference = pipe.encode_prompt(prompt="a red circle", device="cpu", num_images_per_prompt=1,
                                       do_classifier_free_guidance=False, clip_skip=1)[0]
    finally:
        del encoder.text_model
    ours, _ = encode_text(model, ["a red circle"], "cpu", clip_skip=2)
    plain, _ = encode_text(model, ["a red circle"], "cpu", clip_skip=1)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not torch.allclose(ours, plain, atol=1e-3)


def _train(tmp_path, name, clip_skip):
    out = tmp_path / name
    code, events, stderr = run_cli(
        "train", "--demo", "--out", str(out), "--events", "jsonl", "--set", f"dataset.path={tmp_path / 'data'}",
        "--set", f"model.clip_skip={clip_skip}", "--set", "schedule.max_steps=1",
        "--set", "sampling.every_n_steps=1", "--set", "sampling.steps=2", "--set", "saving.every_n_steps=0")
    assert code == 0, stderr
    return out, events


def test_clip_skip_changes_training_and_previews_and_is_recorded(tmp_path):
    make_dataset(tmp_path / "data", count=4)
    plain_dir, plain = _train(tmp_path, "skip1", 1)
    skip_dir, skipped = _train(tmp_path, "skip2", 2)
    loss = {name: [e.loss for e in events if e.type == "progress"] for name, events in
            (("plain", plain), ("skip", skipped))}
    assert loss["plain"] != loss["skip"]  # same seed, data and noise: only the conditioning differs
    baseline = [Image.open(skip_dir / "samples" / "step000000_p00.png"),
                Image.open(plain_dir / "samples" / "step000000_p00.png")]
    assert baseline[0].tobytes() != baseline[1].tobytes()  # the untouched model, conditioned differently
    assert "Clip skip: 2" in baseline[0].text["parameters"]
    assert "Clip skip" not in baseline[1].text["parameters"]
    with safe_open(str(skip_dir / "demo-lora.safetensors"), "pt") as f:
        assert f.metadata()["ss_clip_skip"] == "2"
