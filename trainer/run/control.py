"""Commands from the front end on stdin (`{"cmd": "stop" | "sample" | "save"}`), and signals, turned into
flags that the loop polls between steps. Nothing here touches the model: the loop acts at a safe point."""

from __future__ import annotations

import json
import signal
import sys
import threading

COMMANDS = ("stop", "sample", "save")


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

    def listen_stdin(self, stream=None, on_request=None) -> threading.Thread:
        """Flags for stop/sample/save; any other command (a dict, e.g. `serve`'s generate requests) goes to
        on_request, and so does {"cmd": "eof"} when the stream closes."""
        self.listening = True
        thread = threading.Thread(target=self._read, args=(stream or sys.stdin, on_request), daemon=True,
                                  name="stdin-commands")
        thread.start()
        return thread

    def _read(self, stream, on_request=None) -> None:
        for line in stream:
            try:
                data = json.loads(line)
                cmd = data.get("cmd")
            except (json.JSONDecodeError, AttributeError):
                continue
            if cmd in self._flags:
                self.request(cmd)
            elif on_request is not None:
                on_request(data)
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
