"""The New LoRA wizard, walked page by page for a character and for a style, with a faked 8 GB and 24 GB GPU.

The engine is real: it checks the images, plans and writes the captions, and the run starts on the tiny model.
"""

import tomllib

import pytest
from PIL import Image
from PySide6.QtWidgets import QWizard

from app import settings
from app.main_window import MainWindow
from app.wizard.plan import Gpu, SystemInfo
from app.wizard.train_pages import CaptionsPage, SettingsPage

GPU_8GB = SystemInfo([Gpu("NVIDIA GeForce RTX 3070", 8.0, 7.6, True)])
GPU_24GB = SystemInfo([Gpu("NVIDIA GeForce RTX 4090", 24.0, 23.1, True)])
POSES = ["standing", "sitting", "running", "waving", "jumping", "sleeping"]
PLACES = ["park", "street", "beach", "kitchen", "forest", "office"]


def _character_images(folder):
    folder.mkdir()
    for i, (pose, place) in enumerate(zip(POSES, PLACES)):
        Image.new("RGB", (320, 320), (40 * i, 90, 200 - 30 * i)).save(folder / f"bot{i}.png")
        (folder / f"bot{i}.txt").write_text(f"robot, red eyes, antenna, {pose}, {place} background", encoding="utf-8")
    return folder


def _style_images(folder):
    folder.mkdir()
    for i, subject in enumerate(["a cat", "a boat", "a house", "a tree", "a cup", "a hill"]):
        Image.new("RGB", (320, 256), (200, 30 * i, 60)).save(folder / f"art{i}.png")
        (folder / f"art{i}.txt").write_text(f"watercolor, {subject}, soft light", encoding="utf-8")
    return folder


def _next(qtbot, wizard, page_type=None):
    before = wizard.currentPage()
    qtbot.waitUntil(lambda: before.isComplete(), timeout=30_000)
    wizard.next()
    qtbot.waitUntil(lambda: wizard.currentPage() is not before, timeout=30_000)
    if page_type is not None:
        assert isinstance(wizard.currentPage(), page_type)


def _walk(qtbot, window, kind, system, source, trigger="zkx", class_word="", model=""):
    wizard = window.new_lora(system)
    settings.put(settings.RECENT_MODELS, [])
    wizard.kind_page.style.setChecked(kind == "style")
    wizard.kind_page.name.setText(f"my {kind}")
    _next(qtbot, wizard)
    if model:  # typed into "My model file", as a user names a checkpoint
        wizard.model_page.own.setChecked(True)
        wizard.model_page.model.setCurrentText(model)
    else:
        wizard.model_page.demo.setChecked(True)
    assert "RTX" in wizard.model_page.gpu.text()
    _next(qtbot, wizard)
    wizard.images_page.import_paths([source])
    qtbot.waitUntil(lambda: "6 images" in wizard.images_page.report.text(), timeout=60_000)
    _next(qtbot, wizard, CaptionsPage)
    page = wizard.captions_page
    qtbot.waitUntil(lambda: page.preview.rowCount() == 6, timeout=30_000)
    page.trigger.setText(trigger)
    page.class_word.setText(class_word)
    qtbot.waitUntil(lambda: page.preview.item(0, 2) and page.preview.item(0, 2).text().startswith(trigger),
                    timeout=30_000)
    _next(qtbot, wizard, SettingsPage)
    return wizard


@pytest.fixture
def window(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path / "app")
    settings.put(settings.PROJECTS_DIR, str(tmp_path / "projects"))
    qtbot.addWidget(window)
    yield window
    if window.run_page.engine.running:
        window.run_page.engine.kill()
        window.run_page.engine.wait(10_000)


def _finish_and_see_it_start(qtbot, window, wizard):
    _next(qtbot, wizard)   # prompts
    assert wizard.prompts_page.lines()
    _next(qtbot, wizard)   # summary
    assert "Estimated duration" in wizard.summary_page.subTitle()
    with qtbot.waitSignal(window.run_page.engine.event, timeout=90_000,
                          check_params_cb=lambda e: e.type == "started"):
        wizard.button(QWizard.WizardButton.FinishButton).click()
    assert window.tabs.currentWidget() is window.run_page
    run_config = tomllib.loads((window.run_page.run_dir / "config.toml").read_text(encoding="utf-8"))
    window.run_page.engine.kill()
    window.run_page.engine.wait(10_000)
    return run_config


def test_character_on_8gb_prunes_the_subjects_tags_and_starts(qtbot, window, tmp_path):
    wizard = _walk(qtbot, window, "character", GPU_8GB, _character_images(tmp_path / "src"), class_word="robot")
    project = tmp_path / "projects" / "my-character"
    captions = sorted(p.read_text(encoding="utf-8").strip() for p in (project / "dataset").glob("*.txt"))
    assert captions[0] == "zkx, robot, jumping, forest background"   # constant traits pruned, pose kept
    assert all(c.startswith("zkx, robot, ") and "red eyes" not in c for c in captions)
    assert list((tmp_path / "src").glob("*.txt"))[0].read_text(encoding="utf-8").startswith("robot, red eyes")
    cfg = wizard.state.plan.config
    assert wizard.state.plan.tier == "vram-8gb"
    assert (cfg.schedule.batch_size, cfg.performance.gradient_checkpointing) == (2, True)
    assert cfg.lora.train_text_encoder and cfg.dataset.keep_tokens == 2 and not cfg.dataset.flip
    assert cfg.saving.trigger_phrase == "zkx, robot" and cfg.saving.output_name == "my-character"
    shown = {c.key: c.value for c in wizard.state.plan.choices}
    assert shown["lora.rank / lora.alpha"] == "4 / 4" and shown["dataset.repeats / schedule.epochs"] == "120 steps"
    why = {row: wizard.settings_page.table.item(row, 2).text() for row in range(wizard.settings_page.table.rowCount())}
    assert any("7.6 GB free" in text for text in why.values())
    run_cfg = _finish_and_see_it_start(qtbot, window, wizard)
    assert run_cfg["model"]["path"] == "demo:sd15" and run_cfg["schedule"]["max_steps"] == 120
    assert run_cfg["sampling"]["prompts"][0].startswith("zkx robot")


def test_style_on_24gb_keeps_content_and_drops_the_style_words(qtbot, window, tmp_path):
    wizard = _walk(qtbot, window, "style", GPU_24GB, _style_images(tmp_path / "src"), trigger="inkwash")
    assert not wizard.captions_page.class_word.isVisible()
    project = tmp_path / "projects" / "my-style"
    captions = {p.read_text(encoding="utf-8").strip() for p in (project / "dataset").glob("*.txt")}
    assert "inkwash, a cat, soft light" in captions and not any("watercolor" in c for c in captions)
    cfg = wizard.state.plan.config
    assert wizard.state.plan.tier == "vram-24gb"
    assert (cfg.schedule.batch_size, cfg.performance.gradient_checkpointing) == (4, False)
    assert cfg.lora.targets == "full" and not cfg.lora.train_text_encoder and cfg.dataset.flip
    run_cfg = _finish_and_see_it_start(qtbot, window, wizard)
    assert run_cfg["lora"]["targets"] == "full" and "in the style of inkwash" in run_cfg["sampling"]["prompts"][0]


def test_no_images_blocks_the_images_page_with_an_explanation(qtbot, window, tmp_path):
    wizard = window.new_lora(SystemInfo())
    _next(qtbot, wizard)
    assert wizard.model_page.demo.isChecked(), "without CUDA the demo model is preselected"
    assert "No CUDA GPU" in wizard.model_page.gpu.text()
    _next(qtbot, wizard)
    qtbot.waitUntil(lambda: "Add at least one image" in wizard.images_page.report.text(), timeout=30_000)
    assert not wizard.images_page.isComplete()


def test_expert_button_opens_the_training_page_with_the_plan(qtbot, window, tmp_path):
    wizard = _walk(qtbot, window, "style", GPU_8GB, _style_images(tmp_path / "src"))
    wizard.settings_page.expert.emit()
    assert window.tabs.currentWidget() is window.training_page
    assert window.training_page.editors["schedule.batch_size"].value() == 2
    assert (tmp_path / "projects" / "my-style" / "config.toml").exists()


def test_a_real_sdxl_file_gets_the_sdxl_recipe_and_tier(qtbot, window, tmp_path):
    from trainer.families.ldm_layout import save_original_checkpoint
    from trainer.models.tiny import build_tiny_components

    model = save_original_checkpoint(build_tiny_components("sdxl"), "sdxl", tmp_path / "xl-base.safetensors")
    wizard = window.new_lora(GPU_8GB)
    wizard.kind_page.name.setText("xl")
    _next(qtbot, wizard)
    wizard.model_page.model.setCurrentText(str(model))
    qtbot.waitUntil(lambda: wizard.model_page.isComplete(), timeout=60_000)
    assert "SDXL" in wizard.model_page.info.text() and wizard.state.arch == "sdxl"
    _next(qtbot, wizard)
    wizard.images_page.import_paths([_character_images(tmp_path / "src")])
    qtbot.waitUntil(lambda: "6 images" in wizard.images_page.report.text(), timeout=60_000)
    _next(qtbot, wizard, CaptionsPage)
    wizard.captions_page.trigger.setText("zkx")
    _next(qtbot, wizard, SettingsPage)
    plan = wizard.state.plan
    assert plan.tier == "sdxl-vram-8gb" and plan.presets[0] == "sdxl-character"
    cfg = plan.config
    assert (cfg.dataset.resolution, cfg.lora.rank, cfg.model.path) == (1024, 8, str(model))
    assert (cfg.dataset.repeats, cfg.schedule.epochs) == (33, 10)   # 6 images x 33 x 10 ≈ 2000 views
    assert cfg.performance.weight_dtype == "fp8"  # what lets SDXL fit 8 GB (docs/memory.md)
    memory = wizard.settings_page.memory
    qtbot.waitUntil(lambda: "GB RAM" in memory.text(), timeout=60_000)  # the engine's plan for these settings


def test_prompt_rows_are_fields_and_come_back_in_kohya_syntax(qtbot):
    from app.widgets.prompt_table import PromptTable

    table = PromptTable()
    qtbot.addWidget(table)
    table.set_prompts(["zkx robot, city --n blurry --w 768 --s 28", "zkx robot, beach"])
    assert table.table.item(0, 0).text() == "zkx robot, city" and table.table.item(0, 1).text() == "blurry"
    assert table.table.item(0, 2).text() == "768" and table.table.item(1, 2).text() == ""
    table.table.item(1, 6).setText("42")   # the user types a seed into the second row's field
    table.add_row("")                      # an empty row is not a prompt
    assert table.prompts() == ["zkx robot, city --n blurry --w 768 --s 28", "zkx robot, beach --d 42"]


GPU_16GB = SystemInfo([Gpu("NVIDIA GeForce RTX 4080", 16.0, 15.2, True)])


def test_flux_style_plans_from_the_flux_facts_and_trains_to_the_end(qtbot, window, tmp_path):
    """The tiny FLUX.1 through the whole wizard: FLUX recipes and tier, and a run that finishes with samples."""
    wizard = _walk(qtbot, window, "style", GPU_16GB, _style_images(tmp_path / "src"), trigger="inkwash",
                   model="demo:flux1")
    assert wizard.state.plan.tier == "flux1-vram-16gb"
    shown = {c.key: (c.value, c.why) for c in wizard.state.plan.choices}
    assert shown["preset"][0] == "flux1-style + flux1-vram-16gb"
    assert "UNet" not in " ".join(why for _, why in shown.values())  # a transformer, not a UNet
    assert wizard.state.plan.config.dataset.max_token_length == 512  # T5 tokens, not CLIP's 75
    _next(qtbot, wizard)   # prompts
    _next(qtbot, wizard)   # summary
    with qtbot.waitSignal(window.run_page.run_finished, timeout=180_000) as finished:
        wizard.button(QWizard.WizardButton.FinishButton).click()
    assert finished.args[0] is True, window.run_page.status.text()
    assert window.run_page.gallery.image_count() >= 2
    adapter = next((tmp_path / "projects" / "my-style" / "runs").glob("*/my-style.safetensors"))
    from safetensors import safe_open
    with safe_open(adapter, "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "flux1"
        assert any(k.startswith("lora_unet_double_blocks_") for k in f.keys())


def test_the_model_page_names_a_restrictive_licence(qtbot, window, tmp_path):
    """FLUX.2 klein 9B is non-commercial (4B is Apache-2.0): the picker says so once the engine has read it."""
    import torch
    from safetensors.torch import save_file

    def header_only(name: str, shapes: dict):  # detection reads names and shapes only
        save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(tmp_path / name))
        return tmp_path / name

    model = header_only("flux-2-klein-base-9b.safetensors", {"single_stream_modulation.lin.weight": (0, 4096),
                                                             "img_in.weight": (4096, 0), "txt_in.weight": (0, 12288)})
    header_only("qwen_3_8b.safetensors", {"model.embed_tokens.weight": (0, 4096)})
    header_only("flux2-vae.safetensors", {"bn.running_mean": (0,)})
    wizard = window.new_lora(GPU_8GB)
    wizard.kind_page.name.setText("klein")
    _next(qtbot, wizard)
    wizard.model_page.model.setCurrentText(str(model))
    qtbot.waitUntil(lambda: "klein" in wizard.model_page.info.text(), timeout=60_000)
    assert "Non-Commercial" in wizard.model_page.info.text()
