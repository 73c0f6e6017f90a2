"""A canvas to draw a support label on: drag a box or draw scribbles with the mouse (ipycanvas).

``DrawSupport`` shows the support image enlarged ``scale`` times on a two-layer ``ipycanvas.MultiCanvas`` (the
image below, what is drawn above), forwards the mouse to a ``fsslab.viz.draw.SupportSketch`` and, when a box
or a stroke is finished, calls ``on_change(label)`` with the support label. Everything it computes lives in the
sketch; the canvas only shows it, so tests drive the same handlers with synthetic mouse events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fsslab.viz.draw import BOX_RGB, MODES, SCRIBBLE_RGB, SupportSketch

try:  # notebook extras: the rest of fsslab.viz imports without them
    import ipywidgets as widgets
    from ipycanvas import MultiCanvas, hold_canvas
except ImportError:  # pragma: no cover - exercised only on installs without the notebook extra
    widgets = MultiCanvas = hold_canvas = None


def _require() -> None:
    if MultiCanvas is None or widgets is None:
        raise ImportError("the drawing canvas needs ipycanvas and ipywidgets: pip install 'fsslab[notebooks]'")


def _css(rgb: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*rgb)


class DrawSupport:
    """Draw a box or scribbles on ``image`` (RGB uint8 [H,W,3]); ``box`` is the widget to display.

    ``on_change(label)`` runs after each finished box or stroke, and after ``clear`` with None. ``sketch`` holds
    the drawing (``sketch.label()``, ``sketch.describe()``); ``mode`` is the box/scribble toggle. Switching the
    toggle keeps both drawings: ``on_change`` then gets the new mode's drawing (None when it has none yet, and
    the line under the canvas says that the other drawing is kept).
    """

    def __init__(self, image: np.ndarray, mode: str = "box", scale: int = 3, width: int = 5,
                 on_change: Callable[[np.ndarray | None], Any] | None = None) -> None:  # fmt: skip
        _require()
        self.scale, self.width = int(scale), int(width)
        self.on_change = on_change
        self.mode = widgets.ToggleButtons(options=list(MODES), value=mode, description="draw",
                                          tooltips=["drag a box around the object", "paint strokes on the object"],
                                          style={"button_width": "72px"})
        self.clear_button = widgets.Button(description="clear", icon="eraser")
        self.info = widgets.HTML()
        self.canvas: Any = None
        self._last = (0.0, 0.0)  # the previous mouse position of a stroke (canvas pixels)
        self.canvas_holder = widgets.Box()
        self.box = widgets.VBox([widgets.HBox([self.mode, self.clear_button]), self.canvas_holder, self.info])
        self.box.drawer = self  # keep the drawer alive as long as the displayed box
        self.mode.observe(self._mode_changed, names="value")
        self.clear_button.on_click(lambda _button: self.clear())
        self.set_image(image)

    # ----- the image ------------------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """Show a new support image; the drawing starts over."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            raise ValueError(f"the support image must be RGB uint8 [H,W,3], got {image.dtype} {image.shape}")
        self.image = np.ascontiguousarray(image[..., :3])
        self.sketch = SupportSketch(self.image.shape[:2], self.mode.value, self.width, self.scale)
        height, width = self.image.shape[:2]
        if self.canvas is None or (self.canvas.height, self.canvas.width) != (height * self.scale, width * self.scale):
            self.canvas = MultiCanvas(2, width=width * self.scale, height=height * self.scale)
            self.canvas.on_mouse_down(self.press)
            self.canvas.on_mouse_move(self.move)
            self.canvas.on_mouse_up(self.release)
            self.canvas.on_mouse_out(self.release)
            self.canvas_holder.children = [self.canvas]
        big = np.repeat(np.repeat(self.image, self.scale, 0), self.scale, 1)
        with hold_canvas():
            self.canvas[0].put_image_data(big, 0, 0)
        self.redraw()

    # ----- mouse events (canvas pixels) -------------------------------------------------------------------
    def press(self, x: float, y: float) -> None:
        self.sketch.press(x, y)
        self._last = (x, y)

    def move(self, x: float, y: float) -> None:
        if not self.sketch.drawing:
            return
        self.sketch.move(x, y)
        layer = self.canvas[1]
        with hold_canvas():
            if self.sketch.mode == "scribble":  # extend the stroke: one segment, not a full redraw
                layer.stroke_style, layer.line_width, layer.line_cap = _css(SCRIBBLE_RGB), self.width * self.scale, "round"
                layer.stroke_line(*self._last, x, y)
            else:
                self._draw_overlay()
        self._last = (x, y)

    def release(self, x: float | None = None, y: float | None = None) -> None:
        if not self.sketch.drawing:
            return
        changed = self.sketch.release(x, y)
        self.redraw()
        if changed and self.on_change is not None:
            self.on_change(self.sketch.label())

    def drag(self, points: list[tuple[float, float]]) -> None:
        """Replay a whole gesture (press at the first point, moves, release at the last; canvas pixels), as the
        mouse would: the canvas shows it and ``on_change`` runs."""
        if not points:
            raise ValueError("a drag needs at least one point")
        self.press(*points[0])
        for point in points[1:]:
            self.move(*point)
        self.release()

    # ----- state ------------------------------------------------------------------------------------------------
    def clear(self) -> None:
        """Erase the current mode's drawing (the other mode's stays)."""
        self.sketch.clear()
        self.redraw()
        if self.on_change is not None:
            self.on_change(None)

    def _mode_changed(self, change: dict[str, Any]) -> None:
        had_drawing = bool(self.sketch.kept())
        self.sketch.set_mode(change["new"])
        self.redraw()
        if had_drawing and self.on_change is not None:  # the label is now the new mode's drawing (or none)
            self.on_change(None if self.sketch.empty else self.sketch.label())

    def redraw(self) -> None:
        """Draw the current mode's finished box or strokes on the top layer and say what the label holds (and
        that the other mode's drawing is kept, when there is one)."""
        with hold_canvas():
            self._draw_overlay()
        hint = "drag a box around the object" if self.sketch.mode == "box" else "paint on the object"
        text = self.sketch.describe() if not self.sketch.empty else hint
        other = [m for m in self.sketch.kept() if m != self.sketch.mode]
        if other:
            text += f" · your {other[0]} is kept: switch back to {other[0]} to use it again"
        self.info.value = f"<small>{text}</small>"

    def _draw_overlay(self) -> None:
        layer, s = self.canvas[1], self.scale
        layer.clear()
        box = self.sketch.pending_box()
        if box is not None:
            x0, y0, x1, y1 = box
            layer.stroke_style, layer.line_width = _css(BOX_RGB), max(2, s)
            layer.stroke_rect(x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s)
        if self.sketch.mode == "scribble" and self.sketch.strokes:
            layer.stroke_style, layer.line_width, layer.line_cap = _css(SCRIBBLE_RGB), self.width * s, "round"
            layer.line_join = "round"
            for stroke in self.sketch.strokes:
                points = [(x * s, y * s) for x, y in stroke]  # where the mouse went
                if len(points) == 1:
                    points = points * 2
                layer.stroke_lines(points)


__all__ = ["DrawSupport"]
