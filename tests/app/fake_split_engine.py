"""A stand-in engine whose every line reaches the app in two pipe reads: it writes half a line, flushes,
sleeps, then writes the rest (the cut falls inside a multi-byte character, too).

`... --events jsonl` (a long command): one `warning` event on stdout and one log line on stderr, then
`done`. Anything else (a one-shot command): one `--progress` line on stderr, then the JSON answer on stdout.
"""

import json
import sys
import time

PAUSE_S = 0.3   # long enough that the app has read the first half before the second is written


def in_two_reads(stream, text: str) -> None:
    data = (text + "\n").encode("utf-8")
    cut = data.index("é".encode()) + 1   # inside the two bytes of "é"
    stream.buffer.write(data[:cut])
    stream.buffer.flush()
    time.sleep(PAUSE_S)
    stream.buffer.write(data[cut:])
    stream.buffer.flush()


def main() -> int:
    if "--events" in sys.argv:
        in_two_reads(sys.stdout, json.dumps({"v": 1, "type": "warning", "message": "café", "hint": ""},
                                            ensure_ascii=False))
        in_two_reads(sys.stderr, "log: café")
        print(json.dumps({"v": 1, "type": "done", "adapter": "x.safetensors"}), flush=True)
        return 0
    in_two_reads(sys.stderr, json.dumps({"done": 1, "total": 2, "file": "café.png"}, ensure_ascii=False))
    print(json.dumps({"imported": 1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
