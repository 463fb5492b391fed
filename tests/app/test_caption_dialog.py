"""The dataset page's Auto-caption action: the request it sends, results streaming into the grid, cancel,
and the engine's refusal shown as its message."""

import json
import sys
from pathlib import Path

from PIL import Image

from app.dataset_page import DatasetPage

FAKE = [sys.executable, str(Path(__file__).with_name("fake_captioner.py"))]


def _settled(qtbot, page):
    """After captioning the page re-checks the dataset; let that child finish before the page goes."""
    qtbot.waitUntil(lambda: page.health.count() and page.health.item(0).text() != "checking…", timeout=30_000)


def _page(qtbot, tmp_path, count=4):
    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(folder / f"img{i}.png")
    model = tmp_path / "tagger"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx")
    page = DatasetPage(engine=FAKE)
    qtbot.addWidget(page)
    page.set_folder(folder)
    return page, folder, model


def test_selection_is_captioned_and_shows_up_in_the_grid_and_editor(qtbot, tmp_path):
    page, folder, model = _page(qtbot, tmp_path)
    page.grid.select_path(folder / "img1.png")
    dialog = page.auto_caption()
    dialog.model.setText(str(model))
    assert dialog.threshold.isVisibleTo(dialog), "an ONNX tagger shows its thresholds"
    dialog.threshold.setValue(0.5)
    dialog.trigger.setText("zkx")
    request = dialog.request()
    assert request.only == [folder / "img1.png"]
    args = request.args()
    assert args[args.index("--threshold") + 1] == "0.5" and "--trigger" in args and "--events" in args
    with qtbot.waitSignal(dialog.done, timeout=30_000) as done:
        dialog.start()
    assert done.args[0] and "1 captions written" in done.args[1]
    assert (folder / "img1.txt").read_text(encoding="utf-8") == "caption of img1"
    assert not (folder / "img0.txt").exists()
    assert page.grid.items[str(folder / "img1.png")].text() == "✓ img1.png"
    assert page.editor.caption.toPlainText() == "caption of img1"
    _settled(qtbot, page)


def test_cancel_keeps_the_captions_already_written(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_CAPTION_MODE", "slow")
    page, folder, model = _page(qtbot, tmp_path, count=8)
    dialog = page.auto_caption()
    dialog.model.setText(str(model))
    dialog.scope.setCurrentIndex(1)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.results.count() >= 1, timeout=30_000)
    with qtbot.waitSignal(dialog.done, timeout=30_000) as done:
        dialog.cancel()
    written = sorted(p.name for p in folder.glob("*.txt"))
    assert done.args[1].startswith("Cancelled") and 1 <= len(written) < 8
    assert all((folder / name).read_text(encoding="utf-8").startswith("caption of") for name in written)
    _settled(qtbot, page)


def test_engine_refusal_is_shown_with_its_hint(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_CAPTION_MODE", "error")
    page, _folder, model = _page(qtbot, tmp_path)
    dialog = page.auto_caption()
    dialog.model.setText(str(model))
    with qtbot.waitSignal(dialog.done, timeout=30_000) as done:
        dialog.start()
    assert not done.args[0] and "no supported captioning model" in dialog.status.text()
    assert "selected_tags.csv" in dialog.status.text() and dialog.start_button.isEnabled()
    _settled(qtbot, page)


def test_folder_without_a_model_cannot_start(qtbot, tmp_path):
    page, _folder, _model = _page(qtbot, tmp_path)
    dialog = page.auto_caption()
    dialog.model.setText(str(tmp_path))
    assert not dialog.start_button.isEnabled() and "choose a folder" in dialog.kind.text()


def test_real_engine_tags_the_whole_dataset_and_the_health_report_refreshes(qtbot, tmp_path):
    from tests.support.caption_models import build_tagger
    from trainer.data.captioning.tagger import CHARACTER, GENERAL

    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (300, 300), (i * 60, 20, 20)).save(folder / f"img{i}.png")
    model = build_tagger(tmp_path / "tagger", [("solo", GENERAL, 0.8), ("blue_sky", GENERAL, 0.2),
                                               ("nano", CHARACTER, 0.9)])
    page = DatasetPage()
    qtbot.addWidget(page)
    page.set_folder(folder)
    dialog = page.auto_caption()
    dialog.model.setText(str(model))
    dialog.scope.setCurrentIndex(1)
    dialog.trigger.setText("zkx")
    with qtbot.waitSignal(page.check_finished, timeout=90_000) as checked:
        dialog.start()
    assert "3 captions written" in dialog.status.text()
    assert (folder / "img2.txt").read_text(encoding="utf-8").strip() == "zkx, nano, solo"
    assert checked.args[0]["tag_frequency"]["zkx"] == 3
    assert all(item.text().startswith("✓") for item in page.grid.items.values())


def _vlm_folder(tmp_path, model_type="qwen2_5_vl"):
    model = tmp_path / "vlm"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    return model


def test_a_vision_language_model_shows_its_prompt_settings_and_sends_them(qtbot, tmp_path):
    page, folder, _model = _page(qtbot, tmp_path)
    dialog = page.auto_caption()
    dialog.model.setText(str(_vlm_folder(tmp_path)))
    assert dialog.prompt.isVisibleTo(dialog) and not dialog.threshold.isVisibleTo(dialog)
    assert "vision-language model" in dialog.kind.text()
    dialog.prompt.setText("Describe the sky only.")
    dialog.length.setCurrentIndex(dialog.length.findData("long"))
    dialog.max_tokens.setValue(50)
    args = dialog.request().args()
    assert args[args.index("--prompt") + 1] == "Describe the sky only."
    assert args[args.index("--length") + 1] == "long" and args[args.index("--max-tokens") + 1] == "50"
    assert "--preview" not in args and "--tags-model" not in args
    (tmp_path / "f").mkdir()
    dialog.model.setText(str(_vlm_folder(tmp_path / "f", "florence2")))
    assert "Florence-2" in dialog.kind.text() and "<MORE_DETAILED_CAPTION>" in dialog.prompt.placeholderText()
    dialog.model.setText(str(_model))
    assert not dialog.prompt.isVisibleTo(dialog), "a tagger takes no prompt"


def test_preview_captions_the_selected_image_and_writes_nothing(qtbot, tmp_path):
    page, folder, _model = _page(qtbot, tmp_path)
    page.grid.select_path(folder / "img2.png")
    dialog = page.auto_caption()
    dialog.model.setText(str(_vlm_folder(tmp_path)))
    dialog.prompt.setText("Describe the sky only.")
    assert dialog.preview_button.text() == "Preview on img2.png"
    dialog.preview_button.click()
    assert not dialog.start_button.isEnabled()  # one model at a time
    qtbot.waitUntil(lambda: dialog.preview_job is None, timeout=30_000)
    assert dialog.preview_text.text() == "preview of img2 (Describe the sky only.)"
    assert not list(folder.glob("*.txt")) and dialog.results.count() == 0
    assert page.grid.items[str(folder / "img2.png")].text() == "img2.png"
    assert dialog.start_button.isEnabled() and dialog.preview_button.isEnabled()

