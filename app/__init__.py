"""LoRA Studio's desktop GUI (PySide6). From the engine it imports only trainer.shared.config and trainer.shared.events;
training runs in a child process (`python -m trainer train ... --events jsonl`)."""
