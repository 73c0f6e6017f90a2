"""fsslab.viz: matplotlib figures and ipywidgets explorers over episodes, training logs and model traces.

It reads traces (``model(batch, trace=True).trace``, keys in ``trace_keys``) and never runs a model itself:
``fsslab.engine.trace_runner`` and ``predict_fn`` make the functions the explorers call.
"""

from fsslab.viz.amformer import (
                                 PERTURBATIONS,
                                 discriminator_scores,
                                 mask_evolution,
                                 part_diversity,
                                 perturb_mask,
                                 perturbation_scores,
                                 plot_discriminator_scores,
                                 plot_ensemble_effect,
                                 plot_mask_evolution,
                                 plot_mining,
                                 plot_part_attention,
                                 plot_perturbation,
)
from fsslab.viz.curves import bar_miou, plot_results_table, plot_training_curves, read_jsonl
from fsslab.viz.draw import SupportSketch
from fsslab.viz.episodes import (
    outline_mask,
    plot_support_conditions,
    show_class_statistics,
    show_episode,
    show_protocol_comparison,
    weak_supports,
)
from fsslab.viz.ipmt import (
                                 cross_attention_maps,
                                 pca_2d,
                                 plot_cross_attention,
                                 plot_deformable_sampling,
                                 plot_ipmt_overview,
                                 plot_prior_mask,
                                 plot_prototype_activation,
                                 plot_prototype_trajectory,
                                 prototype_activation,
                                 prototype_trajectory,
)
from fsslab.viz.palette import denormalize, overlay_mask
from fsslab.viz.trace_keys import AMFORMER_TRACE, IPMT_TRACE
from fsslab.viz.widgets import FigureExplorer, episode_explorer, ipmt_explorer, mask_perturbation_analyser

__all__ = [
    "AMFORMER_TRACE", "IPMT_TRACE", "PERTURBATIONS", "FigureExplorer", "SupportSketch", "bar_miou", "cross_attention_maps", "denormalize",
    "discriminator_scores", "episode_explorer", "ipmt_explorer", "mask_evolution", "mask_perturbation_analyser", "outline_mask", "overlay_mask", "part_diversity", "pca_2d",
    "perturb_mask", "perturbation_scores", "plot_cross_attention", "plot_deformable_sampling", "plot_discriminator_scores",
    "plot_ensemble_effect", "plot_ipmt_overview", "plot_mask_evolution", "plot_mining", "plot_part_attention",
    "plot_perturbation", "plot_prior_mask", "plot_prototype_activation", "plot_prototype_trajectory",
    "plot_results_table", "plot_support_conditions", "plot_training_curves", "prototype_activation", "prototype_trajectory", "read_jsonl",
    "show_class_statistics", "show_episode", "show_protocol_comparison", "weak_supports",
]
