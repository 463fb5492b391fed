"""The speed paths that have a meaning on a CPU: regional torch.compile (with the eager backend, the same
wiring without a C++ build), the fused AdamW kernel, and the choice of SDPA kernels. Their GPU effect is a
row in bench/gpu.py."""

import logging

import torch

from tests.support.engine import tiny_config, train_in_process


def test_compile_trains_the_same_steps_and_reports_its_time(tmp_path, dataset_dir, monkeypatch, caplog):
    from trainer.run import accel

    monkeypatch.setattr(accel, "COMPILE_BACKEND", "eager")
    plain = tiny_config(dataset_dir, schedule__max_steps=3)
    compiled = tiny_config(dataset_dir, schedule__max_steps=3, performance__compile=True)
    _, a = train_in_process(plain, tmp_path / "plain")
    with caplog.at_level(logging.INFO, logger="trainer"):
        _, b = train_in_process(compiled, tmp_path / "compiled")
    assert [e.loss for e in b.of_type("progress")] == [e.loss for e in a.of_type("progress")]
    assert "transformer blocks of the UNet (compiled at the first step)" in caplog.text
    assert "transformer blocks compiled in" in caplog.text


def test_adamw_uses_the_fused_kernel():
    from trainer.run.optim import build_optimizer, param_groups
    from trainer.shared import config as config_mod

    cfg = config_mod.TrainConfig()
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = build_optimizer(cfg, param_groups(cfg, params, []), torch.device("cpu"))
    assert optimizer.defaults["fused"] is True


def test_attention_kernels_prefer_flash_then_memory_efficient_on_cuda_and_leave_the_cpu_alone():
    from torch.nn.attention import SDPBackend

    from trainer.run.accel import preferred_sdpa_backends

    assert preferred_sdpa_backends(torch.device("cuda", 0))[:2] == [SDPBackend.FLASH_ATTENTION,
                                                                    SDPBackend.EFFICIENT_ATTENTION]
    assert preferred_sdpa_backends(torch.device("cuda", 0))[-1] == SDPBackend.MATH  # always has a kernel
    assert preferred_sdpa_backends(torch.device("cpu")) == []
