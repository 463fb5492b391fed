"""A project is a folder: project.toml, the training config, the dataset (or a reference to it), the runs."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from trainer.shared.fsutil import atomic_write_text

PROJECT_FILE = "project.toml"


class ProjectError(Exception):
    pass


@dataclass
class Project:
    folder: Path
    name: str
    dataset: Path

    @property
    def config_path(self) -> Path:
        return self.folder / "config.toml"

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    @classmethod
    def create(cls, folder: Path, dataset: Path | None = None) -> Project:
        folder = Path(folder)
        if (folder / PROJECT_FILE).exists():
            return cls.open(folder)
        folder.mkdir(parents=True, exist_ok=True)
        project = cls(folder, folder.name, Path(dataset) if dataset else folder / "dataset")
        project.dataset.mkdir(parents=True, exist_ok=True)
        project.save()
        return project

    @classmethod
    def open(cls, folder: Path) -> Project:
        path = Path(folder) / PROJECT_FILE
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
        except FileNotFoundError:
            raise ProjectError(f"{folder} is not a LoRA Studio project (no {PROJECT_FILE})") from None
        except (tomllib.TOMLDecodeError, KeyError) as exc:
            raise ProjectError(f"{path} is damaged: {exc}") from None
        dataset = Path(data.get("dataset", "dataset"))
        return cls(Path(folder), data.get("name", Path(folder).name),
                   dataset if dataset.is_absolute() else Path(folder) / dataset)

    def save(self) -> None:
        dataset = self.dataset
        if dataset.is_relative_to(self.folder):
            dataset = dataset.relative_to(self.folder)
        text = tomli_w.dumps({"project": {"name": self.name, "dataset": str(dataset)}})
        atomic_write_text(self.folder / PROJECT_FILE, text)
