"""Every preset loads and validates, stacks on the others, and says what it is for."""

import pytest

from trainer.shared import config as config_mod

PRESETS = sorted(config_mod.PRESETS_DIR.glob("*.toml"))
KINDS = ["sd15-character", "sd15-style", "sdxl-character", "sdxl-style"]
TIERS = ["vram-6gb", "vram-8gb", "vram-12gb", "vram-16gb", "vram-24gb", "sdxl-vram-8gb", "sdxl-vram-12gb",
         "sdxl-vram-16gb", "sdxl-vram-24gb", "cpu"]


def test_the_issue_asks_for_these_presets():
    assert {p.stem for p in PRESETS} >= set(KINDS + TIERS + ["demo"])


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_validates_and_explains_itself(path):
    config_mod.validate(config_mod.load_preset(path.stem))
    header = path.read_text(encoding="utf-8").split("schema_version")[0]
    assert header.count("\n#") + header.startswith("#") >= 5, f"{path.name} needs a header saying why"


@pytest.mark.parametrize("kind", KINDS)
def test_kind_and_tier_stack(kind):
    tiers = [t for t in TIERS if t.startswith("sdxl") == kind.startswith("sdxl") or t == "cpu"]
    for tier in tiers:
        cfg = config_mod.load_preset(tier, base=config_mod.load_preset(kind))
        assert cfg.dataset.resolution == (1024 if kind.startswith("sdxl") else 512)


def test_kind_presets_cite_their_sources():
    for kind in KINDS:
        text = (config_mod.PRESETS_DIR / f"{kind}.toml").read_text(encoding="utf-8")
        assert "kohya-ss/sd-scripts" in text and "[K" in text


def test_train_stacks_presets_from_the_command_line(tmp_path):
    from trainer.commands.dispatch import build_parser
    from trainer.commands.train import resolve_config

    args = build_parser().parse_args(["train", "--demo", "--preset", "sdxl-character", "--preset",
                                      "sdxl-vram-8gb"])
    cfg = resolve_config(args)
    assert cfg.lora.rank == 4 and cfg.schedule.batch_size == 2   # the demo's own values win over presets
    assert cfg.performance.gradient_checkpointing and cfg.loss.min_snr_gamma == 5.0
