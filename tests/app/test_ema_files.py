"""EMA files (lora.ema_decay writes NAME.ema.safetensors beside the adapter and each checkpoint) are a choice of
their adapter in the GUI, never an adapter of their own in a list."""

import sys
from pathlib import Path

import pytest

from app.dialogs.export_dialog import ExportDialog
from app.engine_client import EngineProcess
from app.run_page import RunPage
from app.test_page import TestPage
from trainer.shared.run_folder import adapters_in, checkpoint_name, ema_path, final_adapters

FAKE_SERVE = [sys.executable, str(Path(__file__).with_name("fake_serve.py"))]
FAKE_ENGINE = [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run that kept an EMA: the final adapter and one checkpoint, each with its EMA file (the engine's names)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for adapter in (run / "mylora.safetensors", run / "checkpoints" / checkpoint_name("mylora", 2)):
        adapter.write_bytes(b"x")
        ema_path(adapter).write_bytes(b"x")
    return run


def test_run_folder_lists_adapters_without_their_ema_files(run_dir):
    assert [p.name for p in adapters_in(run_dir)] == ["mylora.safetensors", "mylora-step000002.safetensors"]
    assert [p.name for p in final_adapters(run_dir)] == ["mylora.safetensors"]


def test_export_offers_the_ema_version_as_a_choice_with_its_own_name(qtbot, run_dir):
    dialog = ExportDialog(run_dir)
    qtbot.addWidget(dialog)
    items = [dialog.adapter.itemText(i) for i in range(dialog.adapter.count())]
    assert items == ["mylora.safetensors", "mylora.safetensors · EMA (averaged weights)",
                     "mylora-step000002.safetensors", "mylora-step000002.safetensors · EMA (averaged weights)"]
    assert dialog.name.text() == "mylora"
    dialog.adapter.setCurrentIndex(1)
    assert dialog.name.text() == "mylora-ema"
    assert dialog.command()[1] == str(run_dir / "mylora.ema.safetensors")
    dialog.name.setText("mine")           # a name the user typed stays
    dialog.adapter.setCurrentIndex(0)
    assert dialog.name.text() == "mine" and dialog.command()[1] == str(run_dir / "mylora.safetensors")


def test_test_page_lists_ema_versions_but_add_all_checkpoints_skips_them(qtbot, run_dir, tmp_path):
    page = TestPage(EngineProcess(engine=FAKE_SERVE), out_root=tmp_path / "tests")
    qtbot.addWidget(page)
    page.set_run(run_dir)
    assert page.run_adapters.count() == 4
    page.add_all_checkpoints()
    assert [row.path.name for row in page.loras.rows] == ["mylora.safetensors", "mylora-step000002.safetensors"]
    page.shutdown()


def test_test_this_checkpoint_without_a_selection_picks_the_final_adapter_not_its_ema(qtbot, run_dir):
    page = RunPage(EngineProcess(engine=FAKE_ENGINE))
    qtbot.addWidget(page)
    page.prepare(run_dir)
    with qtbot.waitSignal(page.test_requested) as asked:
        page.test_checkpoint()
    assert asked.args[0] == str(run_dir / "mylora.safetensors")
