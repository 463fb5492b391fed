"""Commands from the front end on stdin (`{"cmd": "stop" | "sample" | "save"}`), and signals, turned into
flags that the loop polls between steps. Nothing here touches the model: the loop acts at a safe point."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator

COMMANDS = ("stop", "sample", "save")
MAX_LINE = 1 << 20   # characters in one stdin line: a request names files and prompts, far below this
log = logging.getLogger("trainer")


def bounded_lines(stream, limit: int = MAX_LINE) -> Iterator[tuple[str, str]]:
    """(line, "") for each line of STREAM, or ("", why) for one longer than LIMIT characters, which is
    skipped in LIMIT-sized pieces: one endless line must not fill the memory."""
    while line := stream.readline(limit + 1):
        if len(line) > limit and not line.endswith("\n"):
            while (rest := stream.readline(limit)) and not rest.endswith("\n"):
                pass
            yield "", f"a stdin line longer than {limit:,} characters was ignored"
            continue
        yield line, ""


def parse_command(line: str, flags: tuple = COMMANDS, only_flags: bool = True) -> tuple[dict | None, str]:
    """(the command, "") for a valid line; (None, "") for a blank one; (None, why) for anything else.
    A command is a JSON object whose "cmd" is a string; a flag command takes no other field but "id"."""
    if not line.strip():
        return None, ""
    try:
        data = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return None, f"a stdin line is not JSON ({exc}): {line[:80]!r}"
    if not isinstance(data, dict) or not isinstance(data.get("cmd"), str):
        return None, f'a stdin line is not a command: {line[:80].strip()!r}; send {{"cmd": "{flags[0]}"}}'
    cmd = data["cmd"]
    if cmd in flags:
        extra = sorted(set(data) - {"cmd", "id"})
        return (None, f"command {cmd!r} takes no field {extra[0]!r}") if extra else (data, "")
    if only_flags:
        return None, f"unknown command {cmd[:40]!r}; commands: {', '.join(flags)}"
    return data, ""


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")  # Python's json would read NaN and Infinity


class Control:
    def __init__(self):
        self._flags = {name: threading.Event() for name in COMMANDS}
        self.listening = False  # a front end can ask for samples/saves at any step

    def request(self, name: str) -> None:
        self._flags[name].set()

    def take(self, name: str) -> bool:
        """True once per request: reading the flag clears it (stop stays set)."""
        flag = self._flags[name]
        if not flag.is_set():
            return False
        if name != "stop":
            flag.clear()
        return True

    @property
    def stop_requested(self) -> bool:
        return self._flags["stop"].is_set()

    def listen_stdin(self, stream=None, on_request=None, on_error=None, flags=COMMANDS) -> threading.Thread:
        """FLAGS (stop/sample/save) set flags; any other command goes to on_request (a dict, e.g. `serve`'s
        generate requests), and so does {"cmd": "eof"} when the stream closes. A line that is not a command
        goes to on_error (a sentence) and changes nothing else; without on_request, an unknown command is
        such a line."""
        self.listening = True
        if stream is None:  # bytes that are not UTF-8 must not end the reading thread with a decode error
            raw = getattr(sys.stdin, "buffer", None)
            stream = io.TextIOWrapper(raw, encoding="utf-8", errors="replace") if raw else sys.stdin
        thread = threading.Thread(target=self._read, args=(stream, on_request, on_error, flags),
                                  daemon=True, name="stdin-commands")
        thread.start()
        return thread

    def _read(self, stream, on_request, on_error, flags) -> None:
        on_error = on_error or (lambda message: log.warning("%s", message))
        for line, problem in bounded_lines(stream):
            try:  # nothing a front end sends may end this thread: then stop and end of input go unheard
                data, problem = (None, problem) if problem else parse_command(line, flags, on_request is None)
                if problem:
                    on_error(problem)
                elif data is not None and data["cmd"] in flags:
                    self.request(data["cmd"])
                elif data is not None:
                    on_request(data)
            except Exception as exc:  # a bug in a handler: say so and keep listening
                log.exception("stdin command failed")
                on_error(f"the command could not be handled ({type(exc).__name__}: {exc}); this is a bug")
        if on_request is not None:
            on_request({"cmd": "eof"})

    def install_signal_handlers(self) -> None:
        """First Ctrl+C / SIGTERM: stop cleanly (save first). Second: abort at once."""

        def handler(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.request("stop")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not in the main thread (e.g. embedded in tests)
                pass
