"""Training behaviour: the loss on an overfit case goes down, v-prediction and min-SNR train, resume is exact."""

import torch
from safetensors.torch import load_file

from tests.support.engine import make_dataset, tiny_config, train_in_process
from trainer.families.ddpm import Ddpm  # the SD families' objective: its loss is what these tests break


def _fixed_eval_loss(run_dir, cfg) -> float:
    """Mean loss over fixed (noise, timestep) draws, for the adapter saved in run_dir (or none)."""
    from trainer.lora.inject import load_adapter_state_dict
    from trainer.models.load import load_base_model
    from trainer.run.batches import Batches
    from trainer.run.caching import fill_latent_cache
    from trainer.run.encode import encode_text
    from trainer.run.loop import load_records
    from trainer.run.runtime import add_adapters
    from trainer.run.state import latest_snapshot, load_state

    model = load_base_model(cfg.model.path)
    add_adapters(cfg, model)
    if run_dir is not None:
        load_adapter_state_dict(model.unet, load_state(latest_snapshot(run_dir)).adapters["unet"])
    data = Batches(cfg, load_records(cfg))
    fill_latent_cache(data, model.vae, None)
    gen = torch.Generator().manual_seed(99)
    losses = []
    with torch.no_grad():
        for i, item in enumerate(data.records):
            mean = data.latent_cache[(i, False)].chunk(2)[0][None] * model.vae.config.scaling_factor
            hidden, _ = encode_text(model, [item.caption], "cpu")
            for t in (100, 400, 700):
                noise = torch.randn(mean.shape, generator=gen)
                ts = torch.tensor([t])
                noisy = model.noise_scheduler.add_noise(mean, noise, ts)
                pred = model.unet(noisy, ts, hidden).sample
                losses.append(torch.mean((pred - noise) ** 2).item())
    return sum(losses) / len(losses)


def test_loss_goes_down_on_an_overfit_case(tmp_path):
    data = make_dataset(tmp_path / "one", count=1)
    cfg = tiny_config(data, schedule__max_steps=60, schedule__batch_size=1, optimizer__lr=3e-3,
                      lora__rank=8, lora__alpha=8.0, lora__targets="attention+ff")
    before = _fixed_eval_loss(None, cfg)
    train_in_process(cfg, tmp_path / "run")
    after = _fixed_eval_loss(tmp_path / "run", cfg)
    assert after < 0.8 * before, (before, after)


def test_v_prediction_with_min_snr_and_noise_offset_trains(tmp_path, dataset_dir):
    cfg = tiny_config(dataset_dir, model__path="demo:sd2", loss__min_snr_gamma=5.0, loss__noise_offset=0.05,
                      schedule__max_steps=4, lora__dora=True, schedule__lr_scheduler="cosine",
                      schedule__warmup_steps=1)
    adapter, sink = train_in_process(cfg, tmp_path / "run")
    assert sink.of_type("started")[0].arch == "sd2"
    tensors = load_file(str(adapter))
    assert any(k.endswith(".dora_scale") for k in tensors)
    from safetensors import safe_open

    with safe_open(str(adapter), "pt") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sd_v2_768_v" and meta["ss_v2"] == "True"
    assert meta["modelspec.prediction_type"] == "v"


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, dataset_dir):
    cfg = tiny_config(dataset_dir, schedule__max_steps=3, schedule__gradient_accumulation=2,
                      schedule__batch_size=2)
    _, sink = train_in_process(cfg, tmp_path / "run")
    assert [e.step for e in sink.of_type("progress")] == [1, 2, 3]


def test_epochs_set_the_step_count(tmp_path, dataset_dir):
    cfg = tiny_config(dataset_dir, schedule__epochs=2, schedule__batch_size=4)  # 6 images -> 2 batches/epoch
    _, sink = train_in_process(cfg, tmp_path / "run")
    assert sink.of_type("started")[0].total_steps == 4
    assert [e.epoch for e in sink.of_type("progress")] == [1, 1, 2, 2]


def test_resume_ends_with_the_same_adapter_as_an_uninterrupted_run(tmp_path, dataset_dir):
    cfg = tiny_config(dataset_dir, schedule__max_steps=10, lora__dropout=0.1, dataset__center_crop=False,
                      dataset__flip=True, schedule__lr_scheduler="cosine", saving__dtype="fp32")
    straight, _ = train_in_process(cfg, tmp_path / "straight")

    _, first = train_in_process(cfg, tmp_path / "interrupted", stop_at=4)
    assert first.of_type("done")[0].stopped_early and first.of_type("done")[0].step == 4
    resumed, second = train_in_process(cfg, tmp_path / "interrupted", resume=True)
    assert second.of_type("started")[0].resumed_from == 4
    assert [e.step for e in second.of_type("progress")] == list(range(5, 11))

    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    # bit-identical on CPU: same data order, same RNG streams, same optimizer and schedule state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(tmp_path, dataset_dir, monkeypatch):
    import pytest

    from trainer.run.failures import Diverged

    calls = []
    original = Ddpm.loss

    def failing(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(Ddpm, "loss", failing)
    cfg = tiny_config(dataset_dir, schedule__max_steps=10, saving__every_n_steps=2)
    with pytest.raises(Diverged) as err:
        train_in_process(cfg, tmp_path / "run")
    assert "step 5" in err.value.message and "lower the learning rate" in err.value.hint
    assert "step000004" in err.value.hint
    assert not (tmp_path / "run" / "demo-lora.safetensors").exists()
    good = load_file(str(tmp_path / "run" / "checkpoints" / "demo-lora-step000004.safetensors"))
    assert all(torch.isfinite(t).all() for t in good.values())


def test_after_resume_the_last_good_checkpoint_is_still_named(tmp_path, dataset_dir, monkeypatch):
    """Checkpoints from before an interruption count: the divergence hint names them, keep_last prunes them."""
    import pytest

    from trainer.run.failures import Diverged

    cfg = tiny_config(dataset_dir, schedule__max_steps=10, saving__every_n_steps=2, saving__keep_last=2)
    train_in_process(cfg, tmp_path / "run", stop_at=6)
    original, calls = Ddpm.loss, []

    def failing(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(Ddpm, "loss", failing)
    with pytest.raises(Diverged) as err:
        train_in_process(cfg, tmp_path / "run", resume=True)
    assert "step 8" in err.value.message and "demo-lora-step000006.safetensors" in err.value.hint
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "demo-lora-step000004.safetensors", "demo-lora-step000006.safetensors"]


def test_a_run_that_fails_still_leaves_its_tensorboard_curves(tmp_path, dataset_dir, monkeypatch):
    """The TensorBoard log is closed (flushed) on every way out, a crash included: the curves up to the
    failure are what the user opens to see what went wrong."""
    import pytest
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.run.saving import Saver

    def failing(self, state, control, original=Saver.due):
        if state.pos.step == 3:
            raise RuntimeError("boom after step 3")
        return original(self, state, control)

    monkeypatch.setattr(Saver, "due", failing)
    cfg = tiny_config(dataset_dir, schedule__max_steps=10)
    with pytest.raises(RuntimeError, match="boom"):
        train_in_process(cfg, tmp_path / "run")
    logs = EventAccumulator(str(tmp_path / "run" / "logs"))
    logs.Reload()
    assert [s.step for s in logs.Scalars("loss")] == [1, 2, 3]


def test_reading_the_loss_back_every_few_steps_changes_no_event_and_still_stops_at_the_nan_step(
        tmp_path, dataset_dir, monkeypatch):
    """performance.report_every_n_steps (a GPU reads the loss back every 10 steps, not every step): the
    same progress events, one per step with the same losses; a NaN still names its own step and stops before
    the checkpoint after it is written."""
    import pytest

    from trainer.run.failures import Diverged

    every_step = tiny_config(dataset_dir, schedule__max_steps=6)
    batched = tiny_config(dataset_dir, schedule__max_steps=6, performance__report_every_n_steps=4)
    _, a = train_in_process(every_step, tmp_path / "a")
    _, b = train_in_process(batched, tmp_path / "b")
    assert [(e.step, e.loss) for e in a.of_type("progress")] == [(e.step, e.loss) for e in b.of_type("progress")]
    assert [e.step for e in b.of_type("progress")] == [1, 2, 3, 4, 5, 6]

    calls, original = [], Ddpm.loss

    def nan_at_step_5(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs) * (float("nan") if len(calls) == 5 else 1.0)

    monkeypatch.setattr(Ddpm, "loss", nan_at_step_5)
    cfg = tiny_config(dataset_dir, schedule__max_steps=10, saving__every_n_steps=2,
                      performance__report_every_n_steps=4)
    with pytest.raises(Diverged) as err:
        train_in_process(cfg, tmp_path / "run")
    assert "step 5" in err.value.message and "step000004" in err.value.hint
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == \
        ["demo-lora-step000002.safetensors", "demo-lora-step000004.safetensors"]
