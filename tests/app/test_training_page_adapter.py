"""The Training page offers model.training_adapter beside the base model when the engine says it is distilled."""

from safetensors.torch import save_file

from app.main_window import MainWindow
from trainer.families.registry import get
from trainer.shared import config as config_mod

FLUX = get("flux1")


def _flux_files(folder, variant: str):
    folder.mkdir()
    for name, state in FLUX.single_files(FLUX.tiny_components(variant=variant), variant).items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
    return folder / f"flux1-{variant}.safetensors"


def test_a_distilled_model_gets_the_training_adapter_field(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj", create=True)
    page = window.training_page
    dev, schnell = _flux_files(tmp_path / "dev", "dev"), _flux_files(tmp_path / "schnell", "schnell")
    editor = page.editors["model.training_adapter"]
    with qtbot.waitSignal(page.model_checked, timeout=60_000):
        page.model.setCurrentText(str(dev))
    assert not page.form.isRowVisible(editor) and "training adapter" not in page.arch.text()
    with qtbot.waitSignal(page.model_checked, timeout=60_000):
        page.model.setCurrentText(str(schnell))
    assert page.form.isRowVisible(editor) and "step-distilled model: give a training adapter" in page.arch.text()
    adapter = tmp_path / "FLUX.1-schnell-training-adapter.safetensors"
    editor.editor.setText(str(adapter))
    assert "training adapter" not in page.arch.text()
    page.save()
    assert config_mod.load(tmp_path / "proj" / "config.toml").model.training_adapter == str(adapter)
