"""Draw a support label by hand: box drags and scribble strokes → the 0/1 label map a few-shot model reads.

``SupportSketch`` holds what was drawn on one support image, in image pixels, and turns it into a label with
``fsslab.data.weak``'s encodings (``box_to_label``: the filled box is the object; ``strokes_to_label``: the
strokes are the object, the rest background), the same labels ``fsslab predict --box/--scribble`` builds. It
knows nothing of widgets: a drawing widget (``fsslab.viz.draw_widget``) forwards mouse presses, moves and
releases to ``press``/``move``/``release`` in its own (canvas) pixels and ``scale`` maps them to the image, so
the logic is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fsslab.data.weak import box_to_label, strokes_to_label

MODES = ("box", "scribble")
BOX_RGB = (250, 153, 13)  # fsslab.viz.palette.BOX, as 0..255
SCRIBBLE_RGB = (26, 179, 77)  # fsslab.viz.palette.SCRIBBLE


def box_from_drag(start: tuple[float, float], end: tuple[float, float], shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) spanned by a drag from ``start`` to ``end`` (image pixels,
    any direction), clipped to an (H, W) image; None when it covers no whole pixel inside the image."""
    height, width = shape
    xs = sorted((start[0], end[0]))
    ys = sorted((start[1], end[1]))
    x0, x1 = max(0, int(np.floor(xs[0]))), min(width, int(np.floor(xs[1])) + 1)
    y0, y1 = max(0, int(np.floor(ys[0]))), min(height, int(np.floor(ys[1])) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def rasterize_strokes(strokes: Sequence[Sequence[tuple[float, float]]], shape: tuple[int, int],
                      width: int = 5) -> np.ndarray:  # fmt: skip
    """bool [H,W]: polylines through each stroke's points (image pixels), ``width`` pixels wide, round ends;
    a stroke of one point is a dot."""
    canvas = np.zeros(shape, np.uint8)
    for stroke in strokes:
        if not stroke:
            continue
        points = np.round(np.asarray(stroke, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        if len(points) > 1:
            cv2.polylines(canvas, [points], False, 1, thickness=max(1, int(width)), lineType=cv2.LINE_8)
        for x, y in points[[0, -1], 0]:
            cv2.circle(canvas, (int(x), int(y)), max(0, int(width) // 2), 1, thickness=-1)
    return canvas.astype(bool)


class SupportSketch:
    """What a student drew on one support image of ``shape`` (H, W): one box (``mode="box"``: a new drag
    replaces it) or any number of strokes (``mode="scribble"``: they add up). Each mode keeps its own drawing:
    switching the mode shows (and labels with) that mode's drawing, and switching back finds the other one
    as it was left; ``kept()`` names the modes that hold a drawing.

    Events come in display pixels: ``scale`` display pixels per image pixel (a canvas showing the image 3×
    enlarged has ``scale=3``). ``label()`` is the support label (uint8 0/1, 255 off the strokes with
    ``unlabeled="ignore"``); ``empty`` says whether there is none yet.
    """

    def __init__(self, shape: tuple[int, int], mode: str = "box", width: int = 5, scale: float = 1.0,
                 unlabeled: str = "background") -> None:  # fmt: skip
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (height, width) of an image, got {shape}")
        if scale <= 0 or width < 1:
            raise ValueError(f"scale must be > 0 and width >= 1, got scale {scale}, width {width}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.width, self.scale, self.unlabeled = int(width), float(scale), unlabeled
        self.mode = "box"
        self.box: tuple[int, int, int, int] | None = None
        self.strokes: list[list[tuple[float, float]]] = []
        self._start: tuple[float, float] | None = None  # where the current drag started (image pixels)
        self._current: tuple[float, float] | None = None
        self.set_mode(mode)

    # ----- state -----------------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Switch between "box" and "scribble". Nothing is discarded: the label is now the new mode's drawing
        (none yet: ``empty``), and the other mode's drawing waits until the mode is switched back. A drag in
        progress is abandoned."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != self.mode and self.drawing:
            if self.mode == "scribble":
                self.strokes.pop()  # the unfinished stroke
            self._start = self._current = None
        self.mode = mode

    def clear(self, mode: str | None = None) -> None:
        """Erase the drawing of ``mode`` (default: the current mode; "all": both)."""
        mode = self.mode if mode is None else mode
        if mode not in (*MODES, "all"):
            raise ValueError(f"mode must be one of {MODES} or 'all', got {mode!r}")
        if mode in ("box", "all"):
            self.box = None
        if mode in ("scribble", "all"):
            self.strokes = []
        self._start = self._current = None

    def kept(self) -> list[str]:
        """The modes that hold a drawing (the current one included)."""
        return [m for m in MODES if (self.box is not None if m == "box" else any(self.strokes))]

    @property
    def drawing(self) -> bool:
        """True between a press and its release."""
        return self._start is not None

    @property
    def empty(self) -> bool:
        """True when the current mode has no drawing (the other mode's drawing does not count)."""
        return self.mode not in self.kept()

    def _to_image(self, x: float, y: float) -> tuple[float, float]:
        return float(x) / self.scale, float(y) / self.scale

    # ----- events (display pixels) --------------------------------------------------------------------------
    def press(self, x: float, y: float) -> None:
        self._start = self._current = self._to_image(x, y)
        if self.mode == "scribble":
            self.strokes.append([self._start])

    def move(self, x: float, y: float) -> None:
        """A mouse move: extends the stroke or the box being dragged; ignored when no button is down."""
        if not self.drawing:
            return
        self._current = self._to_image(x, y)
        if self.mode == "scribble":
            self.strokes[-1].append(self._current)

    def release(self, x: float | None = None, y: float | None = None) -> bool:
        """End the drag (at (x, y), or where the last move was); True when the label changed."""
        if not self.drawing:
            return False
        if x is not None and y is not None:
            self.move(x, y)
        start, end = self._start, self._current
        self._start = self._current = None
        if self.mode == "box":
            box = box_from_drag(start, end, self.shape)  # type: ignore[arg-type]
            if box is None or (box[2] - box[0]) * (box[3] - box[1]) < 4:  # a click, not a drag: keep the old box
                return False
            self.box = box
        return True

    def drag(self, points: Sequence[tuple[float, float]]) -> bool:
        """A whole press-move-release gesture through ``points`` (display pixels), as a mouse would make it."""
        if not points:
            raise ValueError("a drag needs at least one point")
        self.press(*points[0])
        for point in points[1:]:
            self.move(*point)
        return self.release()

    # ----- results ---------------------------------------------------------------------------------------------
    def pending_box(self) -> tuple[int, int, int, int] | None:
        """The box of the drag in progress (for a live outline), else the finished box."""
        if self.mode != "box":
            return None
        if self.drawing:
            return box_from_drag(self._start, self._current, self.shape)  # type: ignore[arg-type]
        return self.box

    def strokes_mask(self) -> np.ndarray:
        return rasterize_strokes(self.strokes, self.shape, self.width)

    def label(self) -> np.ndarray:
        """The support label, uint8 [H,W]: the filled box or the strokes as 1; ValueError when nothing is drawn."""
        if self.empty:
            raise ValueError("nothing drawn yet: drag a box or draw a scribble on the support image")
        if self.mode == "box":
            return box_to_label(self.shape, self.box)  # type: ignore[arg-type]
        return strokes_to_label(self.strokes_mask(), unlabeled=self.unlabeled)

    def describe(self) -> str:
        """One line: what is drawn and how many object pixels the label has."""
        if self.empty:
            return f"{self.mode}: nothing drawn yet"
        pixels = int((self.label() == 1).sum())
        total = self.shape[0] * self.shape[1]
        what = f"box {self.box}" if self.mode == "box" else f"{len(self.strokes)} stroke(s), {self.width} px wide"
        return f"{what}: {pixels} object pixels of {total} ({100 * pixels / total:.1f}%)"

    def render(self, image: np.ndarray, scale: int | None = None) -> np.ndarray:
        """RGB uint8 of ``image`` enlarged ``scale`` times (nearest; default: the sketch's scale, rounded) with
        the box outline or the label's stroke pixels drawn on it (a picture of what was drawn, for figures)."""
        if image.shape[:2] != self.shape:
            raise ValueError(f"image {image.shape[:2]} is not the sketch's {self.shape}")
        factor = max(1, round(scale if scale is not None else self.scale))
        out = np.repeat(np.repeat(np.ascontiguousarray(image[..., :3], np.uint8), factor, 0), factor, 1)
        if self.mode == "scribble" and any(self.strokes):  # exactly the label's pixels, enlarged
            out[np.repeat(np.repeat(self.strokes_mask(), factor, 0), factor, 1)] = SCRIBBLE_RGB
        box = self.pending_box()
        if box is not None:
            x0, y0, x1, y1 = box
            cv2.rectangle(out, (x0 * factor, y0 * factor), (x1 * factor - 1, y1 * factor - 1), BOX_RGB,
                          thickness=max(1, factor))  # fmt: skip
        return out


__all__ = ["MODES", "SupportSketch", "box_from_drag", "rasterize_strokes"]
