"""Episodes: a query and K supports of one class, drawn from a benchmark's fold index.

- ``sampler``: which (query, supports, class) episodes an index allows;
- ``options``: ``EpisodeOptions``, every knob of an episode set in one dataclass;
- ``dataset``: ``EpisodicDataset``, loading, transforms and the episode batch;
- ``stats``: loading counters (small classes, empty supports, ...);
- ``benchmarks``: PASCAL-5i, COCO-20i and the synthetic benchmark, and ``build_dataset``;
- ``folder``: class folders of your own and FSS-1000.
"""
