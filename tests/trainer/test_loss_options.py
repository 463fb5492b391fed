"""Loss and noise options (kohya's names in brackets): each changes the objective the way its paper and kohya
define it, the defaults draw exactly what they always did, and the whole set trains through the CLI."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.support.engine import make_dataset, run_cli
from trainer.families.ddpm import (
    add_noise,
    declares_zero_terminal_snr,
    loss_per_sample,
    prepare_noise_schedule,
    pyramid_noise,
    snr,
)
from trainer.shared.config import LossConfig, TrainConfig
from trainer.shared.errors import ConfigError


@pytest.fixture(scope="module")
def scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _loss(**kw) -> LossConfig:
    return LossConfig(**kw)


def test_default_options_draw_what_they_always_did(scheduler):
    latents = torch.randn(2, 4, 8, 8)
    noisy, noise, t = add_noise(scheduler, latents, torch.Generator().manual_seed(3), _loss())
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(noise, torch.randn(latents.shape, generator=gen))
    assert torch.equal(t, torch.randint(0, 1000, (2,), generator=gen))
    assert torch.equal(noisy, scheduler.add_noise(latents, noise, t))


def test_timesteps_stay_in_the_window(scheduler):
    _, _, t = add_noise(scheduler, torch.zeros(4000, 1, 1, 1), torch.Generator().manual_seed(0),
                        _loss(min_timestep=200, max_timestep=300))
    assert t.min() == 200 and t.max() == 299


def test_input_perturbation_changes_the_input_not_the_target(scheduler):
    latents = torch.randn(2, 4, 8, 8)
    plain = add_noise(scheduler, latents, torch.Generator().manual_seed(1), _loss())
    perturbed = add_noise(scheduler, latents, torch.Generator().manual_seed(1), _loss(input_perturbation=0.1))
    assert torch.equal(plain[1], perturbed[1]) and torch.equal(plain[2], perturbed[2])  # target noise, timesteps
    assert not torch.allclose(plain[0], perturbed[0])


def test_multires_noise_has_unit_std_and_more_low_frequency_energy():
    gen = torch.Generator().manual_seed(0)
    plain = torch.randn(8, 4, 64, 64, generator=gen)
    pyramid = pyramid_noise(plain.clone(), gen, iterations=6, discount=0.8)
    assert pyramid.std() == pytest.approx(1.0, abs=1e-4)
    coarse = torch.nn.functional.avg_pool2d  # 16x16 means: what whole-image colour/light changes look like
    assert coarse(pyramid, 16).var() > 5 * coarse(plain, 16).var()


def test_huber_is_quadratic_for_small_errors_and_linear_for_large(scheduler):
    t = torch.tensor([500])
    constant = _loss(type="huber", huber_c=0.1, huber_schedule="constant")

    def value(error, loss):
        pred = torch.full((1, 1, 2, 2), float(error))
        return loss_per_sample(pred, torch.zeros_like(pred), scheduler, t, "epsilon", loss).item()

    assert value(0.01, constant) == pytest.approx(0.01 ** 2, rel=0.01)   # like L2 near zero
    assert value(10.0, constant) == pytest.approx(2 * 0.1 * 10 - 2 * 0.1 ** 2, rel=0.01)  # linear: 2c|e|
    assert value(10.0, _loss(type="smooth_l1", huber_c=0.1, huber_schedule="constant")) == \
        pytest.approx(value(10.0, constant) / 0.1)
    assert value(10.0, _loss()) == pytest.approx(100.0)  # L2: an outlier counts 50x more than under Huber


def test_huber_threshold_follows_the_noise_level(scheduler):
    from trainer.families.ddpm import huber_c

    c = huber_c(scheduler, torch.tensor([0, 999]), _loss(type="huber", huber_c=0.1, huber_schedule="snr"))
    assert c[0] > 0.9 and c[1] == pytest.approx(0.1, abs=0.01)  # ~L2 at low noise, robust at high noise
    c = huber_c(scheduler, torch.tensor([0, 1000]), _loss(type="huber", huber_c=0.1, huber_schedule="exponential"))
    assert c.tolist() == pytest.approx([1.0, 0.1])


def test_debiased_estimation_weights_by_inverse_sqrt_snr(scheduler):
    t = torch.tensor([100, 800])
    pred = torch.ones(2, 1, 2, 2)
    plain = loss_per_sample(pred, torch.zeros_like(pred), scheduler, t, "epsilon", _loss())
    debiased = loss_per_sample(pred, torch.zeros_like(pred), scheduler, t, "epsilon", _loss(debiased_estimation=True))
    assert torch.allclose(debiased / plain, 1 / snr(scheduler, t).sqrt())


def test_zero_terminal_snr_reaches_pure_noise_and_needs_v_prediction(tmp_path):
    from tests.support.engine import RecordingSink
    from trainer.models.load import load_base_model

    model = load_base_model("demo:sd15", "v_prediction")
    prepare_noise_schedule(model, _loss(zero_terminal_snr=True), RecordingSink())
    assert model.noise_scheduler.alphas_cumprod[-1] == 0 and torch.isfinite(snr(model.noise_scheduler,
                                                                                 torch.tensor([999]))).all()
    with pytest.raises(ConfigError, match="loss.zero_terminal_snr"):
        prepare_noise_schedule(load_base_model("demo:sd15"), _loss(zero_terminal_snr=True), RecordingSink())
    marked = tmp_path / "noob-vpred.safetensors"
    save_file({"v_pred": torch.zeros(0), "ztsnr": torch.zeros(0)}, str(marked))
    assert declares_zero_terminal_snr(str(marked)) and not declares_zero_terminal_snr("demo:sdxl")


def test_prodigy_far_from_lr_1_is_warned():
    from trainer.run.optim import prodigy_lr_warning

    cfg = TrainConfig()
    cfg.optimizer.name = "prodigy"
    assert "optimizer.lr = 0.0001" in prodigy_lr_warning(cfg).message
    cfg.optimizer.lr = 1.0
    assert prodigy_lr_warning(cfg) is None


def test_timestep_window_must_not_be_empty():
    from trainer.shared import config as config_mod

    with pytest.raises(ConfigError, match="loss.min_timestep"):
        config_mod.from_dict({"loss": {"min_timestep": 500, "max_timestep": 500}})


def _train(tmp_path, *sets):
    make_dataset(tmp_path / "data", count=4)
    args = ["train", "--demo", "--out", str(tmp_path / "run"), "--events", "jsonl",
            "--set", f"dataset.path={tmp_path / 'data'}", "--set", "schedule.max_steps=2",
            "--set", "saving.every_n_steps=0"]
    code, events, stderr = run_cli(*args, *[a for s in sets for a in ("--set", s)])
    assert code == 0, stderr
    return events, tmp_path / "run" / "demo-lora.safetensors"


def test_robust_loss_and_noise_options_train_together(tmp_path):
    from trainer.export.verify import verify_file

    events, adapter = _train(tmp_path, "loss.type=huber", "loss.min_timestep=100", "loss.max_timestep=900",
                             "loss.multires_noise_iterations=6", "loss.input_perturbation=0.1",
                             "loss.debiased_estimation=true", "sampling.every_n_steps=0")
    losses = [e.loss for e in events if e.type == "progress"]
    assert len(losses) == 2 and all(0 <= v < 10 for v in losses)
    assert verify_file(adapter).ok


def test_sdxl_v_prediction_with_zero_terminal_snr_trains_and_previews(tmp_path):
    events, adapter = _train(tmp_path, "model.path=demo:sdxl", "model.prediction_type=v_prediction",
                             "loss.zero_terminal_snr=true", "sampling.every_n_steps=2", "sampling.steps=2",
                             "optimizer.name=prodigy")
    assert [e.step for e in events if e.type == "sample"] == [0, 0, 2, 2]
    assert any("Prodigy" in e.message for e in events if e.type == "warning")  # the demo's lr 1e-3
    with safe_open(str(adapter), "pt") as f:
        meta = f.metadata()
    assert meta["ss_zero_terminal_snr"] == "True" and meta["modelspec.prediction_type"] == "v"
