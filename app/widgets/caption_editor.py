"""The caption of one image: its preview (with its loss mask), the text, a token counter and tag chips.

Edits are saved atomically (trainer.shared.fsutil) shortly after typing stops; undo/redo is Ctrl+Z / Ctrl+Shift+Z.
A caption that is not UTF-8 is shown read-only and never rewritten (the engine's reading rule:
trainer.shared.captions).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from app.theme import ERROR
from app.widgets.image_preview import ImagePreview
from app.widgets.rows import row
from app.widgets.tag_chips import TagChips
from trainer.shared.captions import caption_path, read_caption, split_tags
from trainer.shared.fsutil import atomic_write_text

SAVE_DELAY_MS = 600


class CaptionEditor(QWidget):
    saved = Signal(Path)   # the caption file just written

    def __init__(self, parent=None):
        super().__init__(parent)
        self.current: Path | None = None   # the image whose caption is shown
        self.preview = ImagePreview()   # with the loss mask over it, where the image has one
        self.caption = QPlainTextEdit()
        self.caption.setPlaceholderText("caption: comma-separated tags or a sentence")
        self.caption.setMaximumHeight(120)
        self.state = QLabel("")
        self.tokens = QLabel("")
        self.family: dict | None = None    # the base model's family facts: tokenizer, token limit, chunks
        self.token_limit: int | None = None
        self.chips = TagChips()
        self.chips.tags_edited.connect(self._tags_edited)
        self.save_timer = QTimer(self, singleShot=True, interval=SAVE_DELAY_MS)
        self.save_timer.timeout.connect(self.save)
        self.caption.textChanged.connect(self._text_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.preview, QLabel("Caption"), self.caption, row(self.tokens, self.state), self.chips):
            layout.addWidget(widget)

    def show_image(self, path: Path | None) -> None:
        self.save()
        self.current = Path(path) if path else None
        if self.current is None:
            return
        self.preview.show_image(self.current)
        self.reload()

    def clear(self) -> None:
        self.current = None

    def reload(self) -> None:
        """Read the current image's caption again (a bulk edit or auto-caption may have changed it)."""
        if self.current is None:
            return
        path = caption_path(self.current)
        caption = read_caption(path)
        self.caption.blockSignals(True)
        self.caption.setPlainText(caption.text)
        self.caption.blockSignals(False)
        self.caption.setReadOnly(bool(caption.problem))
        self.state.setText(f"{path.name} is not UTF-8: re-save it as UTF-8 to edit it here" if caption.problem
                           else "" if path.exists() else "no caption yet")
        self.caption.document().clearUndoRedoStacks()
        self.caption.document().setModified(False)
        self._show_count()
        self.chips.set_tags(split_tags(self.caption.toPlainText()))

    def set_family(self, family: dict | None, limit: int | None = None) -> None:
        """The base model's family facts (from the engine's model check) and dataset.max_token_length:
        what the token count is measured against."""
        self.family, self.token_limit = family, limit
        self._show_count()

    def set_known_tags(self, tags: list[str]) -> None:
        self.chips.completer.model().setStringList(tags)

    def save(self) -> None:
        self.save_timer.stop()
        if self.current is None or self.caption.isReadOnly() or not self.caption.document().isModified():
            return
        path = caption_path(self.current)
        atomic_write_text(path, self.caption.toPlainText().strip() + "\n")
        self.caption.document().setModified(False)
        self.state.setText("saved")
        self.saved.emit(path)

    def _text_changed(self) -> None:
        self._show_count()
        self.chips.set_tags(split_tags(self.caption.toPlainText()))
        self.save_timer.start()

    def _show_count(self) -> None:
        from app.tokens import count_tokens, token_summary  # the tokenizer loads on the first caption shown

        tokenizer = self.family["tokenizer"] if self.family else "tokenizer"
        text, over = token_summary(count_tokens(self.caption.toPlainText(), tokenizer), self.family,
                                   self.token_limit)
        self.tokens.setText(text)
        self.tokens.setStyleSheet(f"color: {ERROR};" if over else "")

    def _tags_edited(self, tags: list[str]) -> None:
        """A chip removed or a tag added: edit the text as one undoable step, then save."""
        cursor = self.caption.textCursor()
        cursor.select(cursor.SelectionType.Document)
        cursor.insertText(", ".join(tags))
        self.save()
