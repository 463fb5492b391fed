"""The Test page against a fake `serve`: generate, off vs on, X/Y grids, errors, "Test this checkpoint"."""

import json
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QDialogButtonBox

from app.engine_client import EngineProcess
from app.run_page import RunPage
from app.test_page import TestPage
from trainer.shared import config as config_mod

FAKE = [sys.executable, str(Path(__file__).with_name("fake_serve.py"))]


@pytest.fixture
def page(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVE_LOG", str(tmp_path / "requests.jsonl"))
    widget = TestPage(EngineProcess(engine=FAKE), out_root=tmp_path / "tests")
    qtbot.addWidget(widget)
    yield widget
    widget.shutdown()
    if widget.engine.running:
        widget.engine.wait(5000)


def requests(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]


def lora_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    path.write_bytes(b"x")   # the fake engine never reads it
    return path


def wait_idle(qtbot, page, action) -> None:
    with qtbot.waitSignal(page.jobs_finished, timeout=20_000):
        action()


def test_generate_sends_the_strength_and_shows_the_settings_under_the_image(qtbot, page, tmp_path):
    row = page.loras.add(lora_file(tmp_path, "style"))
    row.set_weight(0.8)
    page.settings_form.prompt.setPlainText("a red fox")
    wait_idle(qtbot, page, page.generate)
    sent = requests(tmp_path)[-1]
    assert sent["cmd"] == "generate" and sent["prompt"] == "a red fox" and sent["model"] == "demo:sd15"
    assert sent["loras"] == [{"path": str(tmp_path / "style.safetensors"), "weight": 0.8, "te_weight": None}]
    assert page.results.image_count() == 1
    assert "strength 0.8" in page.results.caption(0, 0)
    assert not page.cancel_button.isEnabled()
    pid = page.engine.proc.processId()
    row.set_weight(0.3)
    wait_idle(qtbot, page, page.generate)
    assert page.engine.proc.processId() == pid      # the same engine: the base is not loaded again
    assert requests(tmp_path)[-1]["loras"][0]["weight"] == 0.3 and page.results.image_count() == 2


def test_advanced_text_encoder_strength_is_sent_separately(qtbot, page, tmp_path):
    page.show()   # on screen, so isVisible() below says what a user sees
    qtbot.waitExposed(page)
    before = page.loras.add(lora_file(tmp_path, "early"))
    qtbot.waitUntil(before.isVisible)   # a row added to a shown list appears on the next event-loop pass
    assert before.slider.isVisible() and not before.te.isVisible()
    page.advanced.setChecked(True)
    row = page.loras.add(lora_file(tmp_path, "style"))
    qtbot.waitUntil(row.isVisible)
    assert before.te.isVisible() and row.te.isVisible()   # rows there before Advanced, and rows added after
    before.enabled.setChecked(False)
    row.te.setValue(0.25)
    wait_idle(qtbot, page, page.generate)
    assert requests(tmp_path)[-1]["loras"][0]["te_weight"] == 0.25


def test_off_vs_on_uses_one_seed_and_shows_both_side_by_side(qtbot, page, tmp_path):
    page.loras.add(lora_file(tmp_path, "style"))
    page.settings_form.seed.setValue(-1)   # random: the page picks one seed for both
    wait_idle(qtbot, page, page.off_vs_on)
    off, on = requests(tmp_path)[-2:]
    assert off["loras"] == [] and on["loras"] and off["seed"] == on["seed"] >= 0
    assert page.results.image_count() == 2
    assert page.results.caption(0, 0).startswith("0 LoRA") and page.results.caption(0, 1).startswith("1 LoRA")


def test_xy_grid_of_checkpoints_by_strengths_is_saved_as_one_png_plus_singles(qtbot, page, tmp_path):
    for step in (100, 200):
        page.loras.add(lora_file(tmp_path / "checkpoints", f"mylora-step{step:06d}"))
    page.xy_strengths.setText("0, 0.5, 1")
    wait_idle(qtbot, page, page.xy_grid)
    sent = requests(tmp_path)
    assert len(sent) == 6 and len({r["seed"] for r in sent}) == 1
    assert [(len(r["loras"]), r["loras"][0]["weight"]) for r in sent[:3]] == [(1, 0.0), (1, 0.5), (1, 1.0)]
    assert page.results.image_count() == 6
    grid = QImage(str(page.last_grid))
    assert grid.width() > 3 * 64 and grid.height() > 2 * 64
    assert len(list(page.last_grid.parent.glob("xy-*-r*c*.png"))) == 6
    assert str(page.last_grid) in page.status.text()


def test_xy_prompts_by_strengths_and_bad_input(qtbot, page, tmp_path):
    page.loras.add(lora_file(tmp_path, "style"))
    page.xy_mode.setCurrentIndex(1)
    page.xy_strengths.setText("0, x")
    page.xy_grid()
    assert "'x' is not a strength" in page.status.text()
    page.xy_strengths.setText("0.5, 1")
    page.xy_prompts.setPlainText("a cat\na dog\n")
    wait_idle(qtbot, page, page.xy_grid)
    assert [r["prompt"] for r in requests(tmp_path)] == ["a cat", "a cat", "a dog", "a dog"]
    assert page.results.model_.verticalHeaderItem(1).text() == "a dog"


def test_an_engine_error_shows_message_and_hint_and_the_page_stays_usable(qtbot, page, tmp_path):
    page.loras.add(tmp_path / "missing.safetensors")
    wait_idle(qtbot, page, page.generate)
    assert "LoRA not found" in page.status.text() and "give the path" in page.status.text()
    page.loras.clear()
    wait_idle(qtbot, page, page.generate)
    assert page.results.image_count() == 1


def test_test_this_checkpoint_from_the_run_page(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    checkpoint = lora_file(run_dir / "checkpoints", "mylora-step000002")
    lora_file(run_dir, "mylora")
    cfg = config_mod.TrainConfig()
    cfg.model.path = "demo:sdxl"
    cfg.sampling.prompts = ["tok, a portrait"]
    config_mod.save(cfg, run_dir / "config.toml")
    (run_dir / "samples").mkdir()
    QImage(32, 32, QImage.Format.Format_RGB32).save(str(run_dir / "samples" / "step000002_p00.png"))
    from app.main_window import MainWindow

    window = MainWindow(engine=EngineProcess(engine=FAKE), data_dir=tmp_path / "data")
    qtbot.addWidget(window)
    window.show_run(run_dir)
    gallery = window.run_page.gallery
    gallery.selectionModel().select(gallery.model_.index(0, 0), gallery.selectionModel().SelectionFlag.Select)
    window.run_page.test_button.click()
    page = window.test_page
    assert window.tabs.currentWidget() is page
    assert page.model.text() == "demo:sdxl"
    assert [row.path for row in page.loras.rows] == [checkpoint]
    assert page.settings_form.prompt.toPlainText() == "tok, a portrait"
    assert page.out_dir() == run_dir / "tests"
    assert page.run_adapters.count() == 2


def test_run_page_without_adapters_says_so(qtbot, tmp_path):
    page = RunPage(EngineProcess(engine=FAKE))
    qtbot.addWidget(page)
    page.prepare(tmp_path / "empty")
    with qtbot.assertNotEmitted(page.test_requested):
        page.test_checkpoint()
    assert "No adapter" in page.status.text()


def test_merge_and_combine_dialogs_send_their_request_and_show_the_result(qtbot, page, tmp_path):
    from app.dialogs.merge_dialog import MergeDialog

    page.loras.add(lora_file(tmp_path, "a"))
    one = MergeDialog("combine", page.loras.requests(), "demo:sd15", tmp_path, page)
    assert not one.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    page.loras.add(lora_file(tmp_path, "b")).set_weight(0.5)
    combine = MergeDialog("combine", page.loras.requests(), "demo:sd15", tmp_path, page)
    combine.rank.setValue(16)
    wait_idle(qtbot, page, lambda: page.send(combine.payload("combine-1")))
    sent = requests(tmp_path)[-1]
    assert sent["cmd"] == "combine" and sent["rank"] == 16 and [d["weight"] for d in sent["loras"]] == [1.0, 0.5]
    assert "combine wrote" in page.status.text()
    bake = MergeDialog("bake", page.loras.requests(), "/models/base.safetensors", tmp_path, page)
    wait_idle(qtbot, page, lambda: page.send(bake.payload("bake-1")))
    sent = requests(tmp_path)[-1]
    assert sent["cmd"] == "bake" and sent["model"] == "/models/base.safetensors" and sent["dtype"] == "fp16"
    assert sent["out"].endswith(".safetensors") and "bake wrote" in page.status.text()
