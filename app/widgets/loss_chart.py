"""A small live loss chart: raw loss as faint dots, a smoothed line on top, and the validation loss (held-out
images) as a second, orange line when the run has one (painted, no chart library)."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

SMOOTHING = 0.9  # TensorBoard-style exponential moving average
VALIDATION_COLOR = QColor(230, 120, 20)


class LossChart(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.points: list[tuple[int, float]] = []
        self.smoothed: list[float] = []
        self.validation: list[tuple[int, float]] = []
        self.setMinimumSize(260, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def clear(self) -> None:
        self.points.clear()
        self.smoothed.clear()
        self.validation.clear()
        self.update()

    def add_point(self, step: int, loss: float) -> None:
        if not math.isfinite(loss) or loss < 0:
            return
        last = self.smoothed[-1] if self.smoothed else loss
        self.points.append((step, loss))
        self.smoothed.append(SMOOTHING * last + (1 - SMOOTHING) * loss)
        self.update()

    def add_validation_point(self, step: int, loss: float) -> None:
        if math.isfinite(loss) and loss >= 0:
            self.validation.append((step, loss))
            self.update()

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QRectF(self.rect()).adjusted(48, 10, -10, -26)
        p.fillRect(self.rect(), self.palette().base())
        p.setPen(QPen(self.palette().mid().color()))
        p.drawRect(area)
        if len(self.points) < 2:
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss appears here once training starts")
            return
        values = [v for _, v in self.points + self.validation]
        lo, hi = min(values), max(values)
        s0, s1 = self.points[0][0], max([self.points[-1][0], *(s for s, _ in self.validation)])

        def at(step: float, value: float) -> QPointF:
            x = area.left() + (step - s0) / max(s1 - s0, 1) * area.width()
            y = area.bottom() - (value - lo) / max(hi - lo, 1e-12) * area.height()
            return QPointF(x, y)

        p.setPen(QPen(QColor(120, 160, 220, 110), 3))
        # one drawPoints/drawPolyline call each: PySide6 6.12 crashes on thousands of per-point calls
        p.drawPoints(QPolygonF([at(step, value) for step, value in self.points]))
        p.setPen(QPen(QColor(30, 100, 200), 2))
        p.drawPolyline(QPolygonF([at(step, value) for (step, _), value in zip(self.points, self.smoothed)]))
        if self.validation:
            self._paint_validation(p, area, at)
        p.setPen(QPen(self.palette().text().color()))
        p.drawText(QRectF(0, area.top() - 6, 46, 14), Qt.AlignmentFlag.AlignRight, f"{hi:.3f}")
        p.drawText(QRectF(0, area.bottom() - 8, 46, 14), Qt.AlignmentFlag.AlignRight, f"{lo:.3f}")
        p.drawText(QRectF(area.left(), area.bottom() + 4, area.width(), 16), Qt.AlignmentFlag.AlignLeft,
                   f"step {s0}")
        p.drawText(QRectF(area.left(), area.bottom() + 4, area.width(), 16), Qt.AlignmentFlag.AlignRight,
                   f"step {s1}  ·  loss {self.points[-1][1]:.4f} (smoothed {self.smoothed[-1]:.4f})")

    def _paint_validation(self, p: QPainter, area: QRectF, at) -> None:
        line = QPolygonF([at(step, value) for step, value in self.validation])
        p.setPen(QPen(VALIDATION_COLOR, 2))
        p.drawPolyline(line)
        p.setPen(QPen(VALIDATION_COLOR, 6))
        p.drawPoints(line)
        p.drawText(QRectF(area.left(), area.top() + 2, area.width() - 6, 16), Qt.AlignmentFlag.AlignRight,
                   f"validation {self.validation[-1][1]:.4f}")
