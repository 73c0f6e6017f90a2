"""ipywidgets explorers (episodes, IPMT layers, AMFormer mask perturbations) that work without ipympl."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fsslab.viz.amformer import PERTURBATIONS, perturb_mask, plot_perturbation
from fsslab.viz.episodes import show_episode, weak_supports
from fsslab.viz.ipmt import num_layers, plot_ipmt_overview

try:  # ipywidgets is a notebook extra: the rest of fsslab.viz must import without it
    import ipywidgets as widgets
except ImportError:  # pragma: no cover - exercised only on installs without the notebook extra
    widgets = None


def _require_widgets() -> Any:
    if widgets is None:
        raise ImportError("the explorers need ipywidgets: pip install 'fsslab[notebooks]'")
    return widgets


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (rendered with Agg, so no GUI backend or browser is needed)."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)  # attach an Agg canvas: figures built without pyplot have none that can draw
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


class FigureExplorer:
    """Controls + a rendered figure. ``box`` is what a notebook displays; ``figure`` and ``data`` hold the current
    figure and the values it was drawn from, so tests can set ``controls[name].value`` and check the update."""

    def __init__(self, controls: Mapping[str, Any], draw: Callable[..., tuple[Figure, dict[str, Any]]],
                 dpi: int = 80) -> None:
        w = _require_widgets()
        self.controls = dict(controls)
        self.figure: Figure | None = None
        self.data: dict[str, Any] = {}
        self.error: str | None = None
        self._draw, self._dpi = draw, dpi
        self.image = w.Image(format="png")
        self.message = w.HTML()
        self.box = w.VBox([w.HBox(list(self.controls.values())), self.message, self.image])
        self.box.explorer = self  # keep the explorer alive as long as the displayed box
        for control in self.controls.values():
            control.observe(lambda _change: self.refresh(), names="value")
        self.refresh()

    def values(self) -> dict[str, Any]:
        """Current value of every control."""
        return {name: c.value for name, c in self.controls.items()}

    def refresh(self) -> None:
        """Redraw from the current control values; an error is shown in the box instead of being raised, so a bad
        combination in the UI does not kill the widget (``error`` keeps the message for tests)."""
        try:
            self.figure, self.data = self._draw(**self.values())
            self.image.value = figure_png(self.figure, self._dpi)
            self.error, self.message.value = None, ""
        except (KeyError, IndexError, ValueError) as err:
            self.error = f"{type(err).__name__}: {err}"
            self.message.value = f"<span style='color:#b00'>{self.error}</span>"

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display hook
        from IPython.display import display
        display(self.box)


def episode_explorer(dataset: Sequence[Mapping[str, Any]], class_names: Sequence[str] | None = None,
                     weak_fn: Callable[[torch.Tensor, str], torch.Tensor] | str | None = None,
                     weak_kinds: Sequence[str] = ("box", "scribble"), dpi: int = 80) -> FigureExplorer:
    """Browse a dataset's episodes with a slider; ``weak_fn(support_masks [K,H,W], kind)`` adds weak supports
    (``weak_fn="default"``: the box and scribble labels of ``fsslab.data.weak``).

    ``dataset[i]`` must return one episode sample (the batch contract without the batch dimension).
    """
    if weak_fn == "default":
        weak_fn = lambda masks, kind: weak_supports(masks, (kind,))[kind]
    w = _require_widgets()
    if len(dataset) == 0:
        raise ValueError("episode_explorer got an empty dataset")
    controls = {"episode": w.IntSlider(value=0, min=0, max=len(dataset) - 1, description="episode",
                                       continuous_update=False)}
    if weak_fn is not None:
        controls["weak"] = w.Checkbox(value=True, description="weak supports")

    def draw(episode: int, weak: bool = False) -> tuple[Figure, dict[str, Any]]:
        sample = dataset[episode]
        weak_masks = {k: weak_fn(sample["support_masks"], k) for k in weak_kinds} if weak and weak_fn else None
        fig = show_episode(sample, class_names=class_names, weak_masks=weak_masks)
        return fig, {"sample": sample, "weak_masks": weak_masks}

    return FigureExplorer(controls, draw, dpi)


def ipmt_explorer(run_fn: Callable[[int, int], tuple[Mapping[str, Any], Mapping[str, Any]]], n_episodes: int,
                  shots: Sequence[int] = (1, 5), dpi: int = 80) -> FigureExplorer:
    """IPMT explorer: episode, layer, shot-count and support sliders over ``plot_ipmt_overview`` (which shows
    the model's final prediction with its IoU beside the layer's activations).

    run_fn(episode, shot) -> (episode batch or sample, trace): typically builds the episode with ``shot`` supports
    and runs ``model(batch, trace=True)`` (``fsslab.engine.trace_runner``). Results are cached, so moving the
    layer slider does not re-run it. The support slider spans the supports of the chosen shot count (1..K; at
    one shot it is disabled).
    """
    w = _require_widgets()
    cache: dict[tuple[int, int], tuple[Mapping[str, Any], Mapping[str, Any]]] = {}

    def run(episode: int, shot: int) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        if (episode, shot) not in cache:
            cache[(episode, shot)] = run_fn(episode, shot)
        return cache[(episode, shot)]

    _, first_trace = run(0, shots[0])
    layers = num_layers(first_trace)
    controls = {
        "episode": w.IntSlider(value=0, min=0, max=max(0, n_episodes - 1), description="episode",
                               continuous_update=False),
        "layer": w.IntSlider(value=layers, min=1, max=layers, description="layer", continuous_update=False),
        "shot": w.SelectionSlider(options=list(shots), value=shots[0], description="shots"),
        "support": w.IntSlider(value=1, min=1, max=shots[0], description="support #", continuous_update=False,
                               disabled=shots[0] == 1),
    }
    support = controls["support"]

    def follow_shots(change: dict[str, Any]) -> None:
        # registered before the explorer's own observers: the range is right before the figure is redrawn
        with support.hold_trait_notifications():
            support.max = change["new"]
            support.value = min(support.value, change["new"])
            support.disabled = change["new"] == 1

    controls["shot"].observe(follow_shots, names="value")

    def draw(episode: int, layer: int, shot: int, support: int) -> tuple[Figure, dict[str, Any]]:
        batch, trace = run(episode, shot)
        if not 1 <= support <= shot:
            raise IndexError(f"support {support} out of range for {shot} shot(s)")
        fig = plot_ipmt_overview(trace, batch, layer=layer - 1, index=0, shot=support - 1)
        return fig, {"batch": batch, "trace": trace, "layer": layer - 1, "support": support - 1}

    explorer = FigureExplorer(controls, draw, dpi)
    explorer.cache = cache
    return explorer


def mask_perturbation_analyser(score_fn: Callable[[Mapping[str, Any], torch.Tensor], float],
                               episodes: Sequence[Mapping[str, Any]], seed: int = 0,
                               predict_fn: Callable[[Mapping[str, Any]], torch.Tensor] | None = None,
                               dpi: int = 80) -> FigureExplorer:
    """AMFormer's discriminator under controlled mask corruption: episode, perturbation kind and strength.

    score_fn(sample, mask [H,W] 0/1) -> D's score for that mask as the query's segmentation.
    episodes: samples (the batch contract without the batch dimension); ``predict_fn(sample) -> [H,W]`` adds
    the model's prediction and its score. The ground truth is perturbed with ``perturb_mask`` (seeded).
    """
    w = _require_widgets()
    if len(episodes) == 0:
        raise ValueError("mask_perturbation_analyser got no episodes")
    predictions: dict[int, torch.Tensor] = {}
    controls = {
        "episode": w.IntSlider(value=0, min=0, max=len(episodes) - 1, description="episode", continuous_update=False),
        "kind": w.Dropdown(options=list(PERTURBATIONS), value=PERTURBATIONS[0], description="perturbation"),
        "strength": w.FloatSlider(value=0.3, min=0.0, max=1.0, step=0.05, description="strength",
                                  continuous_update=False),
    }

    def draw(episode: int, kind: str, strength: float) -> tuple[Figure, dict[str, Any]]:
        sample = episodes[episode]
        gt = (sample["query_mask"] == 1).long()
        perturbed = perturb_mask(sample["query_mask"], kind, strength, seed)
        scores = {"ground truth": float(score_fn(sample, gt))}
        prediction = None
        if predict_fn is not None:
            if episode not in predictions:
                predictions[episode] = predict_fn(sample)
            prediction = predictions[episode]
            scores["prediction"] = float(score_fn(sample, prediction))
        scores[f"{kind} {strength:.2f}"] = float(score_fn(sample, perturbed))
        fig = plot_perturbation(sample, perturbed, scores, prediction=prediction, label=f"{kind} ({strength:.2f})")
        return fig, {"perturbed": perturbed, "scores": scores, "prediction": prediction}

    return FigureExplorer(controls, draw, dpi)
