"""The training page: engine-side validation messages, model detection, saving, presets."""

import tomllib

import torch
from safetensors.torch import save_file

from app.main_window import MainWindow
from app.theme import ERROR
from trainer.families.ldm_layout import save_original_checkpoint
from trainer.models.tiny import build_tiny_components
from trainer.shared import config as config_mod


def _window(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj", create=True)
    return window, window.training_page


def test_inline_validation_uses_the_configs_own_messages(qtbot, tmp_path):
    _, page = _window(qtbot, tmp_path)
    page.editors["optimizer.lr"].editor.setText("fast")
    assert "optimizer.lr" in page.problem.text() and not page.save_button.isEnabled()
    page.editors["optimizer.lr"].editor.setText("2e-4")
    page.targets["te"].setChecked(True)
    page.editors["optimizer.text_encoder_lr"].editor.setText("0")
    assert "text_encoder_lr" in page.problem.text()
    page.editors["optimizer.text_encoder_lr"].editor.setText("5e-5")
    assert page.problem.text() == "" and page.save_button.isEnabled()


def test_saved_settings_are_the_runs_config(qtbot, tmp_path):
    window, page = _window(qtbot, tmp_path)
    page.editors["lora.rank"].editor.setValue(8)
    page.targets["conv"].setChecked(True)
    page.editors["schedule.max_steps"].editor.setValue(300)
    page.save()
    cfg = config_mod.load(tmp_path / "proj" / "config.toml")
    assert (cfg.lora.rank, cfg.lora.targets, cfg.schedule.max_steps) == (8, "full", 300)
    assert cfg.dataset.path == str(tmp_path / "proj" / "dataset")
    assert window.run_page.config == tmp_path / "proj" / "config.toml"
    assert "300 steps" in page.estimate.text()


def test_base_model_is_checked_by_the_engine(qtbot, tmp_path):
    _, page = _window(qtbot, tmp_path)
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 8), "lora_unet_x.lora_up.weight":
               torch.zeros(8, 4)}, str(lora))
    with qtbot.waitSignal(page.model_checked, timeout=60_000) as checked:
        page.model.setCurrentText(str(lora))
    assert not checked.args[0]["ok"] and "is a LoRA adapter, not a base model" in page.arch.text()
    model = save_original_checkpoint(build_tiny_components("sdxl"), "sdxl", tmp_path / "xl.safetensors")
    with qtbot.waitSignal(page.model_checked, timeout=60_000) as checked:
        page.model.setCurrentText(str(model))
    assert checked.args[0]["ok"] and page.arch.text().startswith("SDXL")
    assert page.editors["dataset.resolution"].value() == 1024   # SDXL trains at its own resolution
    page.editors["dataset.resolution"].editor.setValue(896)      # ... unless the user chose one
    page.model.setCurrentText("")
    with qtbot.waitSignal(page.model_checked, timeout=60_000):
        page.model.setCurrentText(str(model))
    assert page.editors["dataset.resolution"].value() == 896


def test_preview_prompts_are_fields_saved_as_the_engines_syntax(qtbot, tmp_path):
    _, page = _window(qtbot, tmp_path)
    page.prompts.set_prompts(["zkx, portrait --n blurry --w 768"])
    page.prompts.add_row("zkx, full body")
    table = page.prompts.table
    assert [table.item(0, c).text() for c in range(3)] == ["zkx, portrait", "blurry", "768"]
    table.item(1, 4).setText("abc")   # steps: not a number
    assert "sampling.prompts" in page.problem.text() and not page.save_button.isEnabled()
    table.item(1, 4).setText("12")
    page.save()
    cfg = config_mod.load(tmp_path / "proj" / "config.toml")
    assert [p.replace("  ", " ") for p in cfg.sampling.prompts][0].startswith("zkx, portrait --n blurry --w 768")
    assert cfg.sampling.prompts[1].startswith("zkx, full body") and "--s 12" in cfg.sampling.prompts[1]


def test_presets_load_and_save_as_sparse_overlays(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    _, page = _window(qtbot, tmp_path)
    page.apply_preset(str(config_mod.PRESETS_DIR / "demo.toml"))
    assert page.editors["dataset.resolution"].value() == 64
    page.editors["lora.rank"].editor.setValue(12)
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("mine", True))
    page.save_preset()
    saved = tomllib.loads((tmp_path / "app" / "presets" / "mine.toml").read_text())
    assert saved["lora"]["rank"] == 12 and "model" not in saved and "path" not in saved.get("dataset", {})
    assert page.preset.currentText() == "mine"
    config_mod.load(tmp_path / "app" / "presets" / "mine.toml")  # the engine accepts it


def test_memory_line_follows_the_settings_and_warns_when_it_cannot_fit(qtbot, tmp_path):
    window, page = _window(qtbot, tmp_path)
    window.show()
    page.show()
    page.editors["performance.weight_dtype"].set_value("fp8")
    qtbot.waitUntil(lambda: "GB RAM" in page.memory.text(), timeout=60_000)
    assert "frozen weights fp8" in page.memory.text()
    page._planned({"summary": "≈ 9.7 GB GPU · ≈ 7.8 GB RAM", "weight_dtype": "bf16",
                   "warnings": ["needs ≈ 9.7 GB of GPU memory but 7.5 GB is free: turn on gradient checkpointing"]},
                  "")
    assert "7.5 GB is free" in page.memory.text() and ERROR in page.memory.styleSheet()


def _total_steps_train_reports(config, run_dir) -> int:
    """Start the real engine on CONFIG and read `total_steps` from its `started` event (then stop it)."""
    import json
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "trainer", "train", str(config), "--out", str(run_dir),
                             "--events", "jsonl"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            event = json.loads(line)
            assert event["type"] != "error", event
            if event["type"] == "started":
                return event["total_steps"]
        raise AssertionError("the engine ended without a started event")
    finally:
        proc.kill()
        proc.wait()


def test_step_estimate_is_what_train_reports(qtbot, tmp_path):
    """Repeats from an `N_name` folder count; an image set aside with "Exclude selected" does not (the
    estimate once counted it, and ignored the repeats)."""
    from PIL import Image

    window, page = _window(qtbot, tmp_path)
    shapes = tmp_path / "proj" / "dataset" / "10_shapes"
    shapes.mkdir(parents=True)
    for name, size in (("a", (64, 64)), ("b", (64, 64)), ("c", (64, 64)), ("wide", (128, 64))):
        Image.new("RGB", size, (200, 30, 30)).save(shapes / f"{name}.png")
        (shapes / f"{name}.txt").write_text("zkx, shape", encoding="utf-8")
    dataset_page = window.dataset_page
    dataset_page.reload()                      # the grid shows the images training uses, subfolders too
    grid = dataset_page.grid
    assert grid.model_.rowCount() == 4
    grid.select_path(shapes / "c.png")
    with qtbot.waitSignal(page.scanner.settled, timeout=10_000):   # counted again, on a worker thread
        dataset_page.exclude_selected()        # tells the training page through `dataset_changed`
    assert (shapes / ".excluded" / "c.png").exists() and grid.model_.rowCount() == 3
    page.editors["dataset.resolution"].editor.setValue(64)
    page.editors["schedule.batch_size"].editor.setValue(2)
    page.editors["schedule.epochs"].editor.setValue(2)
    page.save()
    expected = _total_steps_train_reports(tmp_path / "proj" / "config.toml", tmp_path / "run")
    # 2 square images x 10 repeats = 10 batches of 2, the wide one x 10 = 5 more; 2 epochs
    assert expected == 30
    assert page.estimate.text().startswith(f"≈ {expected} steps: 2 epochs of 15 steps (3 images)")


def test_advanced_form_edits_the_training_method_keys_and_they_round_trip(qtbot, tmp_path, monkeypatch):
    """Issue 17's keys in the Advanced form: decays keep their digits, lists take plain commas, the LoRA to start
    from has a Browse button, token lengths step by whole chunks; all saved and shown again on reopening."""
    from PySide6.QtWidgets import QFileDialog, QPushButton

    window, page = _window(qtbot, tmp_path)
    page.advanced.setChecked(True)   # opened, as a user does: a closed group's buttons do nothing
    editors = page.editors
    assert editors["lora.block_ranks"].editor.text() == "" and "empty" in editors["lora.block_ranks"].editor.placeholderText()
    editors["lora.ema_decay"].editor.setText("0.9999")
    editors["sampling.use_ema"].editor.setChecked(True)
    editors["lora.block_ranks"].editor.setText("8, 16, 32")
    editors["lora.block_alphas"].editor.setText("[4, 8, 16]")
    editors["optimizer.block_lr"].editor.setText("0.5, 1, 1")
    editors["loss.timestep_shift"].editor.setValue(2.5)
    editors["loss.masked"].editor.setChecked(True)
    # whole chunks of the family's text encoder, once the engine has said which family the model is
    qtbot.waitUntil(lambda: editors["dataset.max_token_length"].editor.singleStep() == 75, timeout=60_000)
    editors["dataset.max_token_length"].editor.stepDown()
    start = tmp_path / "earlier.safetensors"
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(start), ""))
    editors["lora.init_from"].findChild(QPushButton).click()
    assert page.problem.text() == ""
    page.save()
    saved = config_mod.load(tmp_path / "proj" / "config.toml")
    assert saved.lora.ema_decay == 0.9999 and saved.sampling.use_ema
    assert (saved.lora.block_ranks, saved.lora.block_alphas, saved.optimizer.block_lr) == ([8, 16, 32], [4, 8, 16],
                                                                                          [0.5, 1, 1])
    assert (saved.loss.timestep_shift, saved.loss.masked, saved.dataset.max_token_length) == (2.5, True, 150)
    assert saved.lora.init_from == str(start)
    editors["lora.block_ranks"].editor.setText("8, 16")   # the config's own check names the key
    assert "lora.block_ranks" in page.problem.text() and not page.save_button.isEnabled()

    with qtbot.waitSignal(window.closed, timeout=10_000):
        window.close()   # gives the project up for the next window (once its background work ended)
    again = MainWindow(data_dir=tmp_path / "app2")
    qtbot.addWidget(again)
    again.open_project(tmp_path / "proj")
    shown = again.training_page.editors
    assert shown["lora.ema_decay"].editor.text() == "0.9999"
    assert shown["lora.block_ranks"].editor.text() == "[8, 16, 32]"
    assert shown["dataset.max_token_length"].editor.value() == 150
    assert again.training_page.current_config() == saved


def test_adalora_keys_round_trip(qtbot, tmp_path):
    _, page = _window(qtbot, tmp_path)
    page.editors["lora.algorithm"].editor.setCurrentText("adalora")
    page.editors["lora.adalora_init_rank"].editor.setValue(24)
    page.editors["lora.adalora_warmup"].editor.setValue(0.15)
    page.editors["lora.adalora_final"].editor.setValue(0.25)
    cfg = page.current_config()
    assert (cfg.lora.algorithm, cfg.lora.adalora_init_rank, cfg.lora.adalora_warmup, cfg.lora.adalora_final) == (
        "adalora", 24, 0.15, 0.25)
    page.editors["lora.ema_decay"].editor.setText("0.999")
    assert "lora.ema_decay" in page.problem.text()


def test_settings_that_change_nothing_are_greyed_out_saying_what_they_wait_for(qtbot, tmp_path):
    _, page = _window(qtbot, tmp_path)
    lokr, te_lr = page.editors["lora.lokr_factor"], page.editors["optimizer.text_encoder_lr"]
    assert not lokr.isEnabled() and 'lora.algorithm = "lokr"' in lokr.toolTip()
    assert not te_lr.isEnabled() and "text encoder" in te_lr.toolTip()
    page.editors["lora.algorithm"].set_value("lokr")
    page.targets["te"].setChecked(True)
    assert lokr.isEnabled() and te_lr.isEnabled() and lokr.toolTip() == ""
    assert not page.editors["lora.dora"].isEnabled()       # plain LoRA's options wait for plain LoRA
    lokr.set_value(8)
    page.editors["lora.algorithm"].set_value("lora")
    assert lokr.isEnabled()  # it holds a value of its own: still there to undo
