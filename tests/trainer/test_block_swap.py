"""performance.blocks_to_swap on the tiny DiTs. On a CPU a real move is a no-op, so the runs here use a fake
device side: a block's weights "on the device" are fresh copies, and while the block is away its parameters
hold NaN. A forward or backward that ran a swapped block without its weights brought back would turn the
loss, the adapter and the previews into NaN, so a run equal bit for bit to the same run without swap shows
that every use of a swapped weight was preceded by its load."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.support.engine import make_dataset, tiny_config, train_in_process
from trainer.run import block_swap, runtime
from trainer.shared.errors import ConfigError

DEMOS = {"demo:flux1": 4, "demo:zimage": 2, "demo:flux2-klein": 4}  # swappable blocks of each tiny model


class FakeDevice(block_swap.Transfer):
    """Copies stand for the device; NaN stands for "not here". Counts the blocks whose copies are alive."""

    def __init__(self, device):
        super().__init__("cpu")
        self.alive: dict[int, int] = {}   # id of a copy's source list -> live copies
        self.most_blocks_alive = 0

    def away(self, home: torch.Tensor) -> torch.Tensor:
        return torch.full_like(home, float("nan"))

    def start(self, homes: list[torch.Tensor]) -> list[torch.Tensor]:
        copies = [h.clone() for h in homes]
        key = id(homes[0])
        self.alive[key] = len(copies)
        for copy in copies:  # freed when no parameter, no swap table and no autograd node holds it
            weakref.finalize(copy, self._freed, key)
        self.most_blocks_alive = max(self.most_blocks_alive, sum(1 for n in self.alive.values() if n))
        return copies

    def _freed(self, key: int) -> None:
        self.alive[key] -= 1


@pytest.fixture
def swaps(monkeypatch) -> list:
    """Every BlockSwap a run builds, each on a FakeDevice."""
    made = []

    def with_fake_device(cfg, model, device, transfer=None):
        swap = block_swap.setup_block_swap(cfg, model, device, FakeDevice(device))
        if swap is not None:
            swap.calls = []  # (block, phase) of every call of a swapped block, counted apart from the swap
            for i in swap.swapped:
                swap.blocks[i].register_forward_pre_hook(lambda _m, _a, i=i: swap.calls.append((i, _phase())))
            made.append(swap)
        return swap

    monkeypatch.setattr(runtime, "setup_block_swap", with_fake_device)
    return made


def _phase() -> str:
    return "forward" if torch._C._current_graph_task_id() == -1 else "backward"


def _run(tmp_path, name: str, spec: str, swap: int):
    cfg = tiny_config(make_dataset(tmp_path / "data", count=2), model__path=spec, schedule__max_steps=2,
                      schedule__batch_size=1, performance__gradient_checkpointing=True,
                      performance__blocks_to_swap=swap, sampling__every_n_steps=2, sampling__at_start=False,
                      sampling__steps=2, sampling__prompts=["a red circle"], dataset__max_token_length=32)
    adapter, sink = train_in_process(cfg, tmp_path / name)
    losses = [e.loss for e in sink.of_type("progress")]
    image = np.asarray(Image.open(sink.of_type("sample")[0].path))
    return load_file(adapter), losses, image


@pytest.mark.parametrize("spec, count", [("demo:flux1", 2), ("demo:zimage", 1), ("demo:flux2-klein", 2)])
def test_a_swapped_run_equals_the_resident_run_bit_for_bit(spec, count, tmp_path, swaps):
    want_adapter, want_losses, want_image = _run(tmp_path, "resident", spec, 0)
    got_adapter, got_losses, got_image = _run(tmp_path, "swapped", spec, count)
    assert got_losses == want_losses and not any(np.isnan(want_losses))
    assert got_adapter.keys() == want_adapter.keys()
    assert all(torch.equal(got_adapter[k], want_adapter[k]) for k in want_adapter)
    assert np.array_equal(got_image, want_image)  # the preview ran through the same hooks

    swap = swaps[-1]
    swapped = list(swap.swapped)
    assert swapped == list(range(DEMOS[spec] - count, DEMOS[spec]))  # the last blocks
    # one block running and the next one copying, never more, by the swap's count and by the copies alive
    assert swap.peak <= 2 and swap.transfer.most_blocks_alive <= 2
    loads = [(i, phase) for kind, i, phase in swap.events if kind == "load"]
    assert sorted(loads) == sorted(swap.calls)  # a load before every call: forward, recompute, preview
    steps, preview_steps = 2, 2  # (klein's previews call it twice a step: guidance)
    for i in swapped:
        assert loads.count((i, "backward")) == steps
        assert loads.count((i, "forward")) >= steps + preview_steps
    assert not swap.loaded and not swap.handles  # the run's end dropped what was left and removed its hooks


def test_lora_parameters_never_move(tmp_path, swaps):
    _run(tmp_path, "run", "demo:flux1", 2)
    swap = swaps[-1]
    moved = {id(p) for pairs in swap.homes.values() for p, _ in pairs}
    lora = [p for i in swap.swapped for n, p in swap.blocks[i].named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad and id(p) not in moved for p in lora)
    assert all(not p.requires_grad for pairs in swap.homes.values() for p, _ in pairs)


@pytest.mark.parametrize("spec, count, message", [
    ("demo:flux1", 4, "is 4; this FLUX.1 transformer has 4 swappable blocks"),
    ("demo:zimage", 2, "is 2; this Z-Image transformer has 2 swappable blocks"),
    ("demo:sd15", 1, "is 1; SD 1.x's unet is not block-swapped"),
])
def test_a_count_the_model_cannot_give_is_refused_by_name(spec, count, message, tmp_path):
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=spec, schedule__max_steps=1,
                      performance__gradient_checkpointing=True, performance__blocks_to_swap=count,
                      dataset__max_token_length=75 if spec == "demo:sd15" else 32)
    with pytest.raises(ConfigError) as raised:
        train_in_process(cfg, tmp_path / "run")
    assert "'performance.blocks_to_swap'" in raised.value.message and message in raised.value.message


def test_block_swap_without_gradient_checkpointing_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError) as raised:
        tiny_config(make_dataset(tmp_path / "data", count=1), model__path="demo:flux1",
                    performance__blocks_to_swap=1)
    assert "'performance.blocks_to_swap'" in raised.value.message
    assert "gradient_checkpointing = true" in raised.value.hint


def test_block_swap_with_compile_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"'performance.blocks_to_swap' is 2 while performance.compile is true"):
        tiny_config(make_dataset(tmp_path / "data", count=1), model__path="demo:flux1", performance__compile=True,
                    performance__gradient_checkpointing=True, performance__blocks_to_swap=2)


def test_fp8_weights_wait_and_travel_as_fp8(tmp_path):
    from trainer.models.load import load_base_model
    from trainer.run.runtime import add_adapters

    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path="demo:flux1",
                      performance__weight_dtype="fp8", performance__gradient_checkpointing=True,
                      performance__blocks_to_swap=1)
    model = load_base_model("demo:flux1", weight_dtype="fp8")
    add_adapters(cfg, model)
    swap = block_swap.setup_block_swap(cfg, model, "cpu")
    homes = [home for _, home in swap.homes[3]]
    fp8 = sum(h.numel() for h in homes if h.dtype == torch.float8_e4m3fn)
    stored_fp8 = [p for n, p in swap.blocks[3].named_parameters() if n.endswith("weight.original")]
    assert fp8 == sum(p.numel() for p in stored_fp8) > 0  # every fp8-stored weight, as it is stored
    assert swap.ram_bytes == sum(h.numel() * h.element_size() for h in homes)
    swap.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the real copies need a CUDA GPU")
def test_on_a_gpu_swapped_weights_wait_pinned_and_the_run_matches(tmp_path, monkeypatch):
    """The real Transfer: side-stream copies from pinned RAM. fp32 weights and no autocast, so the two runs
    differ at most by the order of a reduction (assert_close's fp32 tolerances)."""
    made = []
    original = block_swap.setup_block_swap
    monkeypatch.setattr(runtime, "setup_block_swap", lambda *a, **k: made.append(original(*a, **k)) or made[-1])
    sets = dict(performance__device="cuda", performance__weight_dtype="fp32", performance__mixed_precision="no")
    runs = {}
    for swap in (0, 2):
        cfg = tiny_config(make_dataset(tmp_path / "data", count=2), model__path="demo:flux1", schedule__max_steps=2,
                          schedule__batch_size=1, performance__gradient_checkpointing=True,
                          performance__blocks_to_swap=swap, dataset__max_token_length=32, **sets)
        adapter, sink = train_in_process(cfg, tmp_path / f"run{swap}")
        runs[swap] = load_file(adapter), [e.loss for e in sink.of_type("progress")]
    swap = made[-1]
    homes = [home for pairs in swap.homes.values() for _, home in pairs]
    assert all(h.device.type == "cpu" and h.is_pinned() for h in homes)
    assert swap.peak <= 2 and {p for kind, _, p in swap.events if kind == "load"} == {"forward", "backward"}
    torch.testing.assert_close(runs[2][1], runs[0][1])
    for key, tensor in runs[0][0].items():
        torch.testing.assert_close(runs[2][0][key], tensor)
