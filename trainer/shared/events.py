"""The JSON-lines protocol between the engine and its front ends.

One JSON object per line on the engine's stdout, each with `"v": 1` and `"type"`. Images travel as file
paths, never pixels. This module must not import torch: the GUI decodes events with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

PROTOCOL_VERSION = 1


@dataclass
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self) -> dict:
        return {"v": PROTOCOL_VERSION, "type": self.type, **asdict(self)}

    def encode(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, default=str)


@dataclass
class Started(Event):
    type: ClassVar[str] = "started"
    run_dir: str
    total_steps: int
    arch: str = ""
    device: str = ""
    config: dict = field(default_factory=dict)
    resumed_from: int = 0


@dataclass
class Progress(Event):
    """Training steps; `serve` reuses it for denoising steps of a job (then `job` is set, loss/lr are 0)."""
    type: ClassVar[str] = "progress"
    step: int
    total: int
    epoch: int = 0
    loss: float = 0.0
    lr: float = 0.0
    it_s: float = 0.0
    eta_s: float = 0.0
    job: str = ""


@dataclass
class Sample(Event):
    type: ClassVar[str] = "sample"
    path: str
    prompt: str
    seed: int
    step: int
    index: int = 0


@dataclass
class Checkpoint(Event):
    type: ClassVar[str] = "checkpoint"
    path: str
    step: int


@dataclass
class Warning(Event):  # noqa: A001 - the protocol's name for it
    type: ClassVar[str] = "warning"
    message: str
    hint: str = ""


@dataclass
class Error(Event):
    type: ClassVar[str] = "error"
    message: str
    hint: str = ""
    kind: str = ""
    job: str = ""      # serve: the request that failed (the engine keeps serving)


@dataclass
class Done(Event):
    """The last event of a run. `dataset caption --model` ends with one too (adapter empty)."""
    type: ClassVar[str] = "done"
    adapter: str
    step: int = 0
    stopped_early: bool = False


@dataclass
class Caption(Event):
    """`dataset caption --model`: one image captioned (written) or left alone (skipped, with the reason)."""
    type: ClassVar[str] = "caption"
    path: str
    caption: str = ""
    status: str = "written"
    reason: str = ""
    done: int = 0
    total: int = 0


@dataclass
class CaptionSummary(Event):
    """`dataset caption --model`: the counts, just before `done`; stopped: a stop came before the end."""
    type: ClassVar[str] = "caption_summary"
    written: int
    skipped: int
    stopped: bool = False


@dataclass
class Ready(Event):
    """`serve`: a base model is loaded and requests are welcome."""
    type: ClassVar[str] = "ready"
    model: str
    arch: str = ""
    device: str = ""
    width: int = 0
    height: int = 0


@dataclass
class Image(Event):
    """`serve`: one generated image, written to `path` (PNG with A1111 parameters)."""
    type: ClassVar[str] = "image"
    path: str
    seed: int
    job: str = ""
    index: int = 0
    parameters: str = ""
    caption: str = ""


@dataclass
class JobDone(Event):
    """`serve`: a request is finished; cancelled when a cancel came first; `result` for merge/combine."""
    type: ClassVar[str] = "job_done"
    job: str
    images: int = 0
    cancelled: bool = False
    result: dict = field(default_factory=dict)


@dataclass
class Validation(Event):
    """Validation loss on held-out images at fixed timesteps and noise: comparable from step to step, so it
    rises when the LoRA starts to overfit, which the training loss hides."""
    type: ClassVar[str] = "validation"
    step: int
    loss: float
    images: int = 0


EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in (Started, Progress, Sample, Checkpoint, Warning,
                                                                 Error, Done, Caption, CaptionSummary,
                                                                 Validation, Ready, Image, JobDone)}


class ProtocolError(ValueError):
    """A line on the engine's stdout that is not a valid event."""


def decode(line: str) -> Event:
    """Parse one line into its Event; unknown extra fields are ignored so newer engines stay readable."""
    try:
        data: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {line[:200]!r}") from exc
    if not isinstance(data, dict) or data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"not a v{PROTOCOL_VERSION} event: {line[:200]!r}")
    cls = EVENT_TYPES.get(data.get("type", ""))
    if cls is None:
        raise ProtocolError(f"unknown event type {data.get('type')!r}")
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ProtocolError(f"{cls.type} event missing fields: {exc}") from exc
