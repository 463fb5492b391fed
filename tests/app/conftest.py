"""GUI tests never touch the user's settings or caches."""

import tempfile

import pytest
from PySide6.QtCore import QSettings, QStandardPaths


@pytest.fixture(autouse=True, scope="session")
def isolated_settings():
    QStandardPaths.setTestModeEnabled(True)
    folder = tempfile.mkdtemp(prefix="lora-studio-settings-")
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, folder)
    yield
