"""What the engine says, as the app shows it: an error and its hint as one text, and events routed to a page's
handlers. Every page formats and dispatches through here, so an error reads the same wherever it appears.

The engine reports a problem in two shapes: an `error` event (`message`, `hint`) from the long commands,
and `error: MESSAGE` / `  hint: HINT` on stderr from the one-shot ones (trainer.shared.errors.UserError).
Both end up as `with_hint(message, hint)`.
"""

from __future__ import annotations

HINT_PREFIX = "  hint: "   # how UserError prints its hint under the message on stderr


def with_hint(message: str, hint: str = "") -> str:
    """An error as the user reads it: what went wrong, then what to do."""
    return f"{message}\nWhat to do: {hint}" if hint else message


def event_text(event) -> str:
    """An `error` or `warning` event as one text."""
    return with_hint(event.message, getattr(event, "hint", ""))


def stderr_text(stderr: str) -> str:
    """A one-shot command's failure from its stderr: the engine prints `error: ...` (and maybe a hint) last,
    earlier lines are logs. Without an `error:` line, the last line is the best there is."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            message = [lines[i].removeprefix("error:").strip(), *lines[i + 1:]]
            hints = [n for n, text in enumerate(message) if text.startswith(HINT_PREFIX)]
            if not hints:
                return "\n".join(message)
            hint = "\n".join(message[hints[-1]:]).removeprefix(HINT_PREFIX)
            return with_hint("\n".join(message[:hints[-1]]), hint)
    return lines[-1] if lines else ""


def dispatch(target, event) -> None:
    """Hand EVENT to `target._on_<type>(event)`; a type the target has no handler for is not its business
    (a newer engine may send more types than this app knows)."""
    handler = getattr(target, f"_on_{event.type}", None)
    if handler is not None:
        handler(event)
