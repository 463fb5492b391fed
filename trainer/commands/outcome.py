"""The one place where a command's outcome becomes an exit code: a user error is its message (and hint) on
stderr or in an `error` event and exit code 2 (so is the operating system refusing a write: a full disk, a
read-only one; trainer.shared.save_errors); a bug is a traceback and exit code 1; a second Ctrl+C is 130.
Every command reaches the user through `one_shot` or `guarded`, never through its own try/except.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from trainer.shared.errors import UserError
from trainer.shared.save_errors import save_failure

EXIT_OK, EXIT_BUG, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def one_shot(handler: Callable) -> Callable:
    """A command that answers once (inspect, export, plan, ...): a UserError becomes `error: ...` on stderr
    and exit code 2 (the GUI's engine client shows that line)."""
    def run(args) -> int:
        try:
            return handler(args) or EXIT_OK
        except Exception as exc:
            failure = exc if isinstance(exc, UserError) else save_failure(exc)
            if failure is None:
                raise  # a bug: the traceback, exit code 1
            print(f"error: {failure}", file=sys.stderr)
            return EXIT_USER_ERROR
    return run


def is_main_process() -> bool:
    """Rank 0 of a multi-process launch (accelerate launch / torchrun set RANK), or a plain run."""
    return os.environ.get("RANK", "0") == "0"


def guarded(args, body: Callable, interrupted_hint: str) -> int:
    """Run a long command that streams events (train, resume, dataset caption --model): `body(sink,
    control)` returns its exit code (None: 0). Every failure becomes an `error` event and an exit code,
    never a hang; the sink is closed on every path."""
    from trainer.run.control import Control
    from trainer.run.sink import EventSink
    from trainer.shared import events as ev

    jsonl = args.events == "jsonl"
    stream = None
    if jsonl:
        from trainer.run.sink import claim_stdout_for_events

        stream = claim_stdout_for_events()
    sink, control = EventSink(stream, progress_bar=not jsonl and sys.stderr.isatty()), Control()
    sink.enabled = is_main_process()
    control.install_signal_handlers()
    if jsonl:  # a bad line is a warning: an error event would announce the end of the run
        control.listen_stdin(on_error=lambda message: sink.emit(ev.Warning(
            message=message, hint='the engine reads one JSON object per line: {"cmd": "stop" | "sample" | "save"}')))
    try:
        return body(sink, control) or EXIT_OK
    except UserError as exc:
        sink.emit(ev.Error(message=exc.message, hint=exc.hint, kind=type(exc).__name__))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sink.emit(ev.Error(message="interrupted", hint=interrupted_hint, kind="interrupted"))
        return EXIT_INTERRUPTED
    except Exception as exc:
        if failure := save_failure(exc):  # the OS refused a write: a full disk is not a bug
            sink.emit(ev.Error(message=failure.message, hint=failure.hint, kind=type(failure).__name__))
            return EXIT_USER_ERROR
        traceback.print_exc(file=sys.stderr)
        sink.emit(ev.Error(message=f"{type(exc).__name__}: {exc}", kind="bug",
                           hint="this is a bug in LoRA Studio; the log above has the details"))
        return EXIT_BUG
    finally:
        sink.close()
