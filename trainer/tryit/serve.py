"""`lora-studio serve`: a long-lived engine for the GUI's Test page (and scripts) on the JSON-lines protocol.

Requests on stdin, one JSON object per line:
  {"cmd": "load", "model": "demo:sd15"}                 load (or switch) the base model -> `ready`
  {"cmd": "generate", "id": "j1", "prompt": ..., "loras": [{"path": ..., "weight": 0.8}], "out": DIR, ...}
                                                        -> `progress` (job), `image` per picture, `job_done`
  {"cmd": "combine", "id": ..., "loras": [...], "out": F, "rank": N}   -> `job_done` with the result
  {"cmd": "bake", "id": ..., "model": BASE, "loras": [...], "out": F}  -> `job_done` with the result
  {"cmd": "cancel"}   drop every request received so far (the running one stops at its next step)
  {"cmd": "stop"}     exit after the running request (queued ones are dropped), with a `done` event
  end of input        exit once every queued request is done, with a `done` event
Events on stdout as in `train --events jsonl` (trainer/events.py). A failed request gets an `error` event
with its id; the engine keeps serving. The base stays loaded between requests; LoRAs are peft adapters
switched per request, so only a different `model` reloads anything.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import traceback
from pathlib import Path

from trainer.shared import events as ev
from trainer.shared.errors import UserError
from trainer.shared.save_errors import save_failure

log = logging.getLogger("trainer")
WEIGHT_DTYPES = ("auto", "fp32", "bf16", "fp16", "fp8")
# what each request may hold besides "cmd" and "id" (generate: trainer.shared.generate_params.Request), and
# which of it is required; a request is checked whole when it arrives, so a bad one changes nothing
FIELDS = {"load": {"model": str, "weight_dtype": str}, "cancel": {}, "eof": {},
          "combine": {"loras": list, "out": str, "rank": (int, type(None)), "overwrite": bool},
          "bake": {"model": str, "loras": list, "out": str, "dtype": str, "overwrite": bool}}
REQUIRED = {"load": ("model",), "combine": ("loras", "out"), "bake": ("model", "loras", "out")}
CHOICES = {"weight_dtype": WEIGHT_DTYPES, "dtype": ("fp16", "bf16", "fp32")}


def request_problem(data: dict) -> str:
    """Why a request cannot be queued, or "" when it can (its files are looked at when it runs)."""
    from trainer.shared.generate_params import Request, lora_problem

    cmd, job = data["cmd"], data.get("id", "")
    if not isinstance(job, (str, int)) or isinstance(job, bool):
        return f"request field 'id' is {job!r}, not a string"
    if cmd != "generate" and cmd not in FIELDS:
        return f"unknown command {cmd[:40]!r}; commands: load, generate, combine, bake, cancel, stop"
    try:
        if cmd == "generate":
            if not isinstance(data.get("model", ""), str):
                return f"generate: field 'model' is {str(data['model'])[:80]!r}, not a string"
            Request.from_dict({k: v for k, v in data.items() if k != "model"}).check()
            return ""
        for item in data.get("loras", []) if isinstance(data.get("loras"), list) else []:
            lora_problem(item)
    except ValueError as exc:
        return f"{cmd}: {exc}"
    return _fields_problem(cmd, data)


def _fields_problem(cmd: str, data: dict) -> str:
    fields = FIELDS[cmd]
    for key, value in data.items():
        if key in ("cmd", "id"):
            continue
        if key not in fields:
            return f"{cmd}: unknown field {key!r}; known: {', '.join(fields) or 'none'}"
        if not isinstance(value, fields[key]) or (isinstance(value, bool) and fields[key] is not bool):
            return f"{cmd}: field {key!r} is {str(value)[:80]!r}, of the wrong type"
        if key in CHOICES and value not in CHOICES[key]:
            return f"{cmd}: field {key!r} is {value!r}; allowed: {', '.join(CHOICES[key])}"
    missing = [key for key in REQUIRED.get(cmd, ()) if not data.get(key)]
    return f"{cmd}: field {missing[0]!r} is missing" if missing else ""


class Server:
    def __init__(self, sink, weight_dtype: str = "auto", lora_dirs: list[Path] = ()):
        self.sink, self.weight_dtype, self.lora_dirs = sink, weight_dtype, list(lora_dirs)
        self.generator = None
        self.requests: queue.Queue = queue.Queue()
        self._received = 0
        self._cancel_upto = 0           # requests numbered up to this one are cancelled
        self._lock = threading.Lock()

    def receive(self, data: dict) -> None:
        """Called on the stdin thread: a bad request is answered at once and changes nothing; cancel acts
        at once, everything else waits its turn."""
        if problem := request_problem(data):
            self.sink.emit(ev.Error(message=problem, kind="BadRequest", job=str(data.get("id", "")),
                                    hint="see docs/try-it.md for the requests and their fields"))
            return
        with self._lock:
            if data.get("cmd") == "cancel":
                self._cancel_upto = self._received
                return
            self._received += 1
            self.requests.put((self._received, data))

    def cancelled(self, number: int) -> bool:
        return number <= self._cancel_upto

    def run(self, control) -> None:
        while not control.stop_requested:
            try:
                number, data = self.requests.get(timeout=0.2)
            except queue.Empty:
                continue
            if data.get("cmd") in ("eof", "stop"):
                return
            self.handle(number, data)

    def handle(self, number: int, data: dict) -> None:
        job = str(data.get("id", number))
        if self.cancelled(number):
            self.sink.emit(ev.JobDone(job=job, cancelled=True))
            return
        try:
            handler = {"load": self.load, "generate": self.generate, "combine": self.combine,
                       "bake": self.bake}.get(data.get("cmd"))
            if handler is None:
                raise UserError(f"unknown command {data.get('cmd')!r}",
                                "commands: load, generate, combine, bake, cancel, stop")
            handler(number, job, data)
        except (UserError, ValueError, TypeError) as exc:
            self.sink.emit(ev.Error(message=getattr(exc, "message", str(exc)), hint=getattr(exc, "hint", ""),
                                    kind=type(exc).__name__, job=job))
        except Exception as exc:  # a bug in one request must not take the loaded model down with it
            if failure := save_failure(exc):  # a full or read-only disk: the request's fault, not ours
                self.sink.emit(ev.Error(message=failure.message, hint=failure.hint, kind=type(failure).__name__,
                                        job=job))
                return
            traceback.print_exc(file=sys.stderr)
            self.sink.emit(ev.Error(message=f"{type(exc).__name__}: {exc}", kind="bug", job=job,
                                    hint="this is a bug in LoRA Studio; the log has the details"))

    def load(self, number: int, job: str, data: dict) -> None:
        from trainer.tryit.engine import Generator, load_base

        model = data.get("model")
        if not model:
            raise UserError("no base model given", 'send {"cmd": "load", "model": "demo:sd15"} first')
        weight_dtype = data.get("weight_dtype", self.weight_dtype)
        current = self.generator
        if current is None or current.model.source != model or weight_dtype != self.weight_dtype:
            self.generator = None   # free the old base before loading the new one
            self.weight_dtype = weight_dtype
            self.generator = Generator(load_base(model, weight_dtype), lora_dirs=self.lora_dirs)
        g = self.generator
        size = g.default_size()
        self.sink.emit(ev.Ready(model=model, arch=g.model.arch, device=str(g.device), width=size, height=size))

    def generate(self, number: int, job: str, data: dict) -> None:
        from trainer.shared.generate_params import Request, short_settings
        from trainer.tryit.engine import Cancelled

        data = dict(data)
        if data.get("model") and (self.generator is None or self.generator.model.source != data["model"]):
            self.load(number, job, {"model": data["model"]})
        data.pop("model", None)
        if self.generator is None:
            raise UserError("no base model loaded", 'send {"cmd": "load", "model": ...} or give "model"')
        req = self.generator.settled(Request.from_dict(data))
        count = 0

        def on_image(image) -> None:
            nonlocal count
            count += 1
            self.sink.emit(ev.Image(path=str(image.path), seed=image.seed, job=job, index=image.index,
                                    parameters=image.parameters, caption=short_settings(req, image.seed,
                                                                                        req.loras)))

        try:
            self.generator.generate(req, on_image=on_image,
                                    on_step=lambda s, t: self.sink.emit(ev.Progress(step=s, total=t, job=job)),
                                    cancelled=lambda: self.cancelled(number))
        except Cancelled:
            self.sink.emit(ev.JobDone(job=job, images=count, cancelled=True))
            return
        self.sink.emit(ev.JobDone(job=job, images=count))

    def combine(self, number: int, job: str, data: dict) -> None:
        from trainer.tryit.combine import combine_files
        from trainer.tryit.loras import lora_from_dict

        result = combine_files([lora_from_dict(d) for d in data.get("loras", [])], Path(data["out"]),
                               data.get("rank"), bool(data.get("overwrite")))
        self.sink.emit(ev.JobDone(job=job, result=result))

    def bake(self, number: int, job: str, data: dict) -> None:
        from trainer.tryit.bake import bake_checkpoint
        from trainer.tryit.loras import lora_from_dict

        result = bake_checkpoint(data["model"], [lora_from_dict(d) for d in data.get("loras", [])],
                                 Path(data["out"]), data.get("dtype", "fp16"), bool(data.get("overwrite")),
                                 on_progress=lambda s, t: self.sink.emit(ev.Progress(step=s, total=t, job=job)))
        self.sink.emit(ev.JobDone(job=job, result=result))


def serve(model: str | None, weight_dtype: str = "auto", lora_dirs: list[Path] = ()) -> int:
    from trainer.run.control import Control
    from trainer.run.sink import EventSink, claim_stdout_for_events

    sink = EventSink(claim_stdout_for_events(), progress_bar=False)
    control = Control()
    control.install_signal_handlers()
    server = Server(sink, weight_dtype, lora_dirs)
    if model:
        server.receive({"cmd": "load", "model": model, "id": "load"})
    control.listen_stdin(on_request=server.receive, flags=("stop",), on_error=lambda message: sink.emit(
        ev.Error(message=message, kind="BadRequest", hint="one JSON object per line, e.g. {\"cmd\": \"stop\"}")))
    try:
        server.run(control)
    except KeyboardInterrupt:
        pass
    sink.emit(ev.Done(adapter=""))
    sink.close()
    return 0
