"""The wizard's decisions without Qt: memory tier from the GPU, repeats and epochs from the image count."""

from pathlib import Path

from app.wizard.plan import Gpu, SystemInfo, make_plan, repeats_and_epochs

RTX_3070 = SystemInfo([Gpu("RTX 3070", 8.0, 7.6, True)])
RTX_4090 = SystemInfo([Gpu("RTX 4090", 24.0, 23.1, True)])
GTX_1660 = SystemInfo([Gpu("GTX 1660", 6.0, 5.5, False)])


def _plan(kind, arch, images, system, model="/models/base.safetensors", prediction="epsilon"):
    """The wizard's plan with the family facts the engine's `inspect --json` reports for such a model."""
    from trainer.families.registry import get

    facts = get(arch).facts(prediction)
    return make_plan(kind, facts, model, Path("/data/set"), images, system, trigger="zkx")


def test_sdxl_on_8gb_gets_kohyas_low_memory_recipe():
    plan = _plan("style", "sdxl", 40, RTX_3070)
    cfg = plan.config
    assert plan.tier == "sdxl-vram-8gb" and plan.presets == ["sdxl-style", "sdxl-vram-8gb"]
    assert (cfg.lora.rank, cfg.schedule.batch_size, cfg.performance.gradient_checkpointing) == (8, 1, True)
    assert cfg.dataset.resolution == 1024 and not cfg.lora.train_text_encoder


def test_sd15_tiers_follow_free_memory():
    assert _plan("character", "sd1", 20, RTX_4090).config.schedule.batch_size == 4
    small = _plan("character", "sd1", 20, GTX_1660)
    assert small.tier == "vram-6gb" and small.config.schedule.batch_size == 1
    assert small.config.performance.gradient_checkpointing


def test_character_run_lands_near_two_thousand_image_views():
    plan = _plan("character", "sd1", 20, RTX_3070)
    cfg = plan.config
    assert (cfg.dataset.repeats, cfg.schedule.epochs) == (10, 10)
    assert plan.steps == 20 * 10 * 10 // cfg.schedule.batch_size
    assert 1500 <= 20 * cfg.dataset.repeats * cfg.schedule.epochs <= 3000


def test_many_images_train_fewer_epochs_without_repeats():
    repeats, epochs, why = repeats_and_epochs("style", 500)
    assert (repeats, epochs) == (1, 8) and "500 images" in why


def test_no_gpu_picks_the_cpu_tier_and_says_so():
    plan = _plan("character", "sd1", 12, SystemInfo())
    assert plan.tier == "cpu" and plan.config.performance.device == "cpu"
    assert any("many hours" in w for w in plan.warnings)
    assert plan.seconds > _plan("character", "sd1", 12, RTX_4090).seconds * 50


def test_sdxl_on_a_6gb_card_warns():
    plan = _plan("character", "sdxl", 20, GTX_1660)
    assert plan.tier == "sdxl-vram-8gb" and any("SDXL needs about 8 GB" in w for w in plan.warnings)
    assert any(c.key == "performance.mixed_precision" and "fp16" in c.value for c in plan.choices)


def test_sd2_768_trains_at_768_and_the_512_base_at_512():
    assert _plan("style", "sd2", 30, RTX_4090, prediction="v_prediction").config.dataset.resolution == 768
    assert _plan("style", "sd2", 30, RTX_4090, prediction="epsilon").config.dataset.resolution == 512


def test_flux_plans_from_its_own_facts_and_warns_under_its_memory():
    plan = _plan("character", "flux1", 20, RTX_4090)
    assert plan.presets == ["flux1-character", "flux1-vram-24gb"]
    cfg = plan.config
    assert (cfg.dataset.resolution, cfg.dataset.max_token_length, cfg.performance.weight_dtype) == (1024, 512, "fp8")
    assert plan.seconds > _plan("character", "sdxl", 20, RTX_4090).seconds   # the larger model is slower
    small = _plan("style", "flux1", 20, RTX_3070)
    assert small.tier == "flux1-vram-12gb" and any("FLUX.1 needs about 11 GB" in w for w in small.warnings)


def test_the_small_dit_tiers_swap_blocks_and_say_why():
    rtx_3060 = SystemInfo([Gpu("RTX 3060", 12.0, 11.4, True)])
    for arch, system, tier in (("flux1", rtx_3060, "flux1-vram-12gb"), ("zimage", RTX_3070, "zimage-vram-8gb"),
                               ("flux2-klein", RTX_3070, "klein-vram-8gb")):
        plan = _plan("character", arch, 20, system)
        assert plan.tier == tier and plan.config.performance.blocks_to_swap > 0
        why = {c.key: c.why for c in plan.choices}
        assert "CPU RAM" in why["performance.blocks_to_swap"] and "block swap needs it" in \
            why["performance.gradient_checkpointing"]
    assert "performance.blocks_to_swap" not in {c.key for c in _plan("character", "flux1", 20, RTX_4090).choices}
    demo = _plan("character", "flux1", 20, rtx_3060, model="demo:flux1")
    assert demo.config.performance.blocks_to_swap == 0  # the tiny model has 4 blocks: nothing to swap


def test_a_memory_tier_that_caps_the_resolution_keeps_its_cap():
    """FLUX.1 on 12 GB trains at 512 px (its tier's figure), not at the family's native 1024."""
    rtx_3060 = SystemInfo([Gpu("RTX 3060", 12.0, 11.4, True)])
    plan = _plan("style", "flux1", 30, rtx_3060)
    assert plan.tier == "flux1-vram-12gb" and plan.config.dataset.resolution == 512
    assert any(c.key == "dataset.resolution" and "1024" in c.why for c in plan.choices)
    assert _plan("style", "flux1", 30, RTX_4090).config.dataset.resolution == 1024
    demo = _plan("style", "flux1", 30, rtx_3060, model="demo:flux1")
    assert not any(c.key == "dataset.resolution" for c in demo.choices)  # 64 px: the demo's, not the tier's
