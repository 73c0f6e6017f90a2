"""The papers' ablation tables in miniature: ``fsslab ablate`` trains every variant of a table with the shipped
recipe over several seeds, evaluates each with its controls and writes one table whose verdicts are computed.

A table (``AblationTable``) is a list of variants, each a shipped config plus overrides (the models' ablation
switches are constructor options: ``model.params.no_discriminator=true``, ...), the seeds, and per variant the
paper's claim and number. The built-in tables are ``TABLES["amformer"]`` and ``TABLES["ipmt"]``; a YAML file
with the same fields (``load_table``) describes another one.

Layout of a table's results (``root`` = ``runs/ablate`` by default):
    <root>/<table>/<variant>/seed<k>/       the training run (run_training: log.jsonl, latest.pt, config.yaml)
    <root>/<table>/<variant>/seed<k>/ablation_eval.json   its evaluation with the controls
    <root>/<table>/results.json             every run's numbers, the rows and the rule that made the verdicts
    <root>/<table>/table.md                 the table
Resumable: a finished run (latest.pt at train.iterations) is not trained again and a run whose
``ablation_eval.json`` was made from the same config and checkpoint is not evaluated again.

The verdict rule (``verdict``), from d = mIoU(full) - mIoU(variant) over the training seeds and the 95% Welch
t-interval [lo, hi] of that difference of means:
    claim "full_better" (the paper says the component helps):
        "holds"                   lo > 0: the full model is better by more than the interval
        "reversed"                hi < 0: the ablated model is better by more than the interval
        "not shown at this scale" otherwise (the interval contains 0)
    claim "small_loss" (the paper says the variant loses little, e.g. box supports), with a margin m:
        "holds"                   hi < m: the loss is below m points
        "does not hold"           lo > m: the loss is above m points
        "not shown at this scale" otherwise
    fewer than 2 seeds on either side: "no interval (n < 2)" -- a smoke run, not a verdict.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from fsslab.config import RunConfig, load_config
from fsslab.errors import ConfigError
from fsslab.files import sha256_file

NOT_VERIFIED = "not verified"
QUICK_ITERATIONS = 2
QUICK_EPISODES = 4
# what --quick changes in every variant's config (a pipeline check, not a measurement)
QUICK_OVERRIDES = [
    f"train.iterations={QUICK_ITERATIONS}", "train.log_every=1", f"train.ckpt_every={QUICK_ITERATIONS}",
    "train.tensorboard=false", "train.image_every=0", "train.validate=false", "train.progress=false",
    "data.workers=0", "data.batch_size=2", "data.size=96", "data.val_size=96", f"eval.episodes={QUICK_EPISODES}",
    "eval.seeds=[0]", "eval.batch_size=4", "data.params.on_small_class=exclude",
]
EVAL_FILE = "ablation_eval.json"


@dataclasses.dataclass
class Variant:
    """One row: a config and its overrides; the paper's claim about it and its number (None: not verified)."""

    name: str
    config: str
    overrides: list[str] = dataclasses.field(default_factory=list)
    claim: str = "full_better"  # "full_better" | "small_loss" (see the module docstring)
    margin: float = 5.0  # small_loss: the largest loss (mIoU points) that counts as "little"
    paper: str | None = None  # the paper's own number for this row, with its source; None: not verified
    note: str = ""


@dataclasses.dataclass
class AblationTable:
    name: str
    full: str  # the variant that is the full model
    variants: list[Variant]
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    description: str = ""

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"table {self.name!r} has no variant {name!r}; its variants: "
                          f"{[v.name for v in self.variants]}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _params(**kw: Any) -> list[str]:
    return [f"model.params.{k}={json.dumps(v)}" for k, v in kw.items()]


# The papers' ablations. The paper columns are None ("not verified"): the ablation tables of the papers are not in
# the official repositories, and no number was checked against the papers themselves for this table.
TABLES: dict[str, AblationTable] = {
    "amformer": AblationTable(
        name="amformer", full="full", description="AMFormer (NeurIPS'23) on the synthetic benchmark, 1-shot, fold 0",
        variants=[
            Variant("full", "synthetic/amformer_tiny", note="G (2 mining passes) + D + base-learner ensemble"),
            Variant("w/o D", "synthetic/amformer_tiny", _params(no_discriminator=True),
                    note="no detail-mining transformer D: G trained by the segmentation losses alone"),
            Variant("w/o ensemble", "synthetic/amformer_tiny", _params(no_ensemble=True),
                    note="no base-learner / Gram ensemble: G's own probability is the output"),
            Variant("G: 1 pass", "synthetic/amformer_tiny", _params(mining_passes=1),
                    note="G mines once and refines once"),
            Variant("G: 0 passes", "synthetic/amformer_tiny", _params(mining_passes=0),
                    note="G mines once, no refinement"),
            Variant("box supports", "synthetic/amformer_tiny", ["data.support_label=box", "eval.support_label=box"],
                    claim="small_loss", note="trained and evaluated with bounding-box support masks"),
        ]),
    "ipmt": AblationTable(
        name="ipmt", full="full", description="IPMT (NeurIPS'22) on the synthetic benchmark, 1-shot, fold 0",
        variants=[
            Variant("full", "synthetic/ipmt_tiny", note="5 layers, intermediate prototype, prior, deep supervision"),
            *[Variant(f"{n} layer{'s' if n > 1 else ''}", "synthetic/ipmt_tiny", _params(num_layers=n),
                      note="fewer IPMT layers (the paper: more layers help)") for n in (1, 2, 3, 4)],
            # DDP (torchrun) needs find_unused_parameters: the query attention / the mask head get no gradient
            Variant("w/o query mining", "synthetic/ipmt_tiny",
                    [*_params(no_query_mining=True), "train.find_unused_parameters=true"],
                    note="prototype from the support only (no intermediate prototype)"),
            Variant("w/o prior", "synthetic/ipmt_tiny", _params(no_prior=True), note="prior channel zero"),
            Variant("w/o deep supervision", "synthetic/ipmt_tiny",
                    [*_params(no_deep_supervision=True), "train.find_unused_parameters=true"],
                    note="no per-layer mask losses"),
        ]),
}


def load_table(source: str | Path | AblationTable) -> AblationTable:
    """A built-in table by name, or a YAML file: ``name, full, seeds, variants: [{name, config, overrides, claim,
    margin, paper, note}]``."""
    if isinstance(source, AblationTable):
        return source
    if str(source) in TABLES:
        return TABLES[str(source)]
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"ablation table {source!r} is neither a built-in table ({sorted(TABLES)}) nor a file")
    from fsslab.config.safe_yaml import load_yaml

    try:
        raw = load_yaml(path.read_text(), f"ablation table {path}") or {}  # anchors/aliases bounded
    except yaml.YAMLError as exc:
        raise ConfigError(f"ablation table {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"ablation table {path}: expected a mapping with 'variants', got a {type(raw).__name__}")
    fields = {f.name for f in dataclasses.fields(Variant)}
    variants = []
    for item in raw.get("variants") or []:
        unknown = sorted(set(item) - fields)
        if unknown:
            raise ConfigError(f"{path}: unknown variant field(s) {unknown}; valid: {sorted(fields)}")
        variants.append(Variant(**item))
    table = AblationTable(name=raw.get("name", path.stem), full=raw.get("full", "full"), variants=variants,
                          seeds=list(raw.get("seeds", [0, 1, 2])), description=raw.get("description", ""))
    table.variant(table.full)  # the full model must be one of the variants
    return table


# ------------------------------------------------------------------------------------------------ statistics
def _t_cdf(t: float, df: float) -> float:
    """Student-t CDF by Simpson integration of the density (no scipy; accurate to ~1e-9 for df >= 1)."""
    if t < 0:
        return 1.0 - _t_cdf(-t, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def pdf(x: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    # substitute x = tan(u) so heavy tails integrate on a finite range
    upper = math.atan(t)
    n = 2000
    h = upper / n
    total = 0.0
    for i in range(n + 1):
        u = i * h
        f = pdf(math.tan(u)) / math.cos(u) ** 2
        total += f * (1 if i in (0, n) else 4 if i % 2 else 2)
    return 0.5 + total * h / 3


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` (possibly fractional) degrees of freedom, by bisection."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def difference_interval(full: Sequence[float], variant: Sequence[float], level: float = 0.95
                        ) -> tuple[float, float, float] | None:
    """(mean(full) - mean(variant), lo, hi): Welch's t-interval of the difference of means; None when either
    side has fewer than 2 values. Two runs that agree exactly give a zero-width interval."""
    if len(full) < 2 or len(variant) < 2:
        return None
    d = statistics.fmean(full) - statistics.fmean(variant)
    va, vb = statistics.variance(full) / len(full), statistics.variance(variant) / len(variant)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / ((va ** 2 / (len(full) - 1) if va else 0.0) + (vb ** 2 / (len(variant) - 1) if vb else 0.0))
    half = t_quantile(0.5 + level / 2, df) * se
    return d, d - half, d + half


def verdict(interval: tuple[float, float, float] | None, claim: str = "full_better", margin: float = 5.0) -> str:
    """The verdict of one row from its interval of mIoU(full) - mIoU(variant) (the rule of the module docstring)."""
    if interval is None:
        return "no interval (n < 2)"
    _, lo, hi = interval
    if claim == "full_better":
        return "holds" if lo > 0 else "reversed" if hi < 0 else "not shown at this scale"
    if claim == "small_loss":
        return "holds" if hi < margin else "does not hold" if lo > margin else "not shown at this scale"
    raise ConfigError(f"unknown claim {claim!r}: 'full_better' or 'small_loss'")


RULE = {
    "interval": "95% Welch t-interval of mean(full) - mean(variant) over training seeds (eval mIoU per seed)",
    "full_better": "holds if lo > 0; reversed if hi < 0; else not shown at this scale",
    "small_loss": "holds if hi < margin; does not hold if lo > margin; else not shown at this scale",
    "n < 2": "no interval: a smoke result, not a verdict",
}


# ------------------------------------------------------------------------------------------------ runs
def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in name.lower())
    return "_".join(part for part in keep.split("_") if part)


def run_config(table: AblationTable, variant: Variant, seed: int, root: str | Path = "runs/ablate",
               quick: bool = False, extra: Sequence[str] = (), starts: dict[str, str] | None = None) -> RunConfig:
    """The config of one run: the variant's config and overrides, the seed, its run directory, the controls,
    then (quick) the quick settings, the starting points (``starts``) and ``extra`` (which win)."""
    out = Path(root) / _slug(table.name) / _slug(variant.name) / f"seed{seed}"
    overrides = [*variant.overrides, f"train.seed={seed}", f"train.out_dir={out}", "eval.controls=true"]
    if quick:  # the quick settings, on the quick benchmark (data/synthetic_quick, written when missing) when the
        # config's data is the generated synthetic benchmark
        if load_config(variant.config).data.synthetic:
            from fsslab.lab import synthetic_root

            overrides += [f"data.root={synthetic_root(True)}", "data.synthetic=null"]
        overrides += QUICK_OVERRIDES
    for key, value in (starts or {}).items():
        overrides.append(f"{key}={value}")
    return load_config(variant.config, [*overrides, *extra])


def shipped_starts(config: str, root: str | Path) -> dict[str, str]:
    """Starting points taken from the zoo instead of training the prerequisite chain: the frozen parts (IPMT's
    backbone, AMFormer's stage-1 PSPNet) of the shipped 1-shot model of ``config``, written once under
    ``<root>/_start``. Returns the overrides that point the config at them (and drop its prerequisite)."""
    from fsslab.lab import run_name
    from fsslab.zoo import load_pretrained

    cfg = load_config(config)
    name = run_name(Path(config).name)
    start = Path(root) / "_start"
    start.mkdir(parents=True, exist_ok=True)
    changes = {"model.prerequisite": "null"}
    if cfg.model.init_checkpoint:  # IPMT (and the baseline): the backbone
        path = start / f"{name}_{cfg.model.init_prefix.rstrip('.')}.pt"
        if not path.is_file():
            state = load_pretrained(name).state_dict()
            prefix = cfg.model.init_prefix
            torch.save({"model": {k: v for k, v in state.items() if k.startswith(prefix)},
                        "source": f"zoo:{name}"}, path)
        changes["model.init_checkpoint"] = str(path)
    if cfg.model.params.get("pretrained"):  # AMFormer: the stage-1 PSPNet it was trained with
        path = start / f"{name}_base_learner.pt"
        if not path.is_file():
            model = load_pretrained(name)
            torch.save({"state_dict": {k: v.contiguous() for k, v in model.base_learner.state_dict().items()}}, path)
        changes["model.params.pretrained"] = str(path)
    return changes


def start_fingerprints(starts: dict[str, str] | None) -> dict[str, str]:
    """``{file name: sha256}`` of the starting files that ``shipped_starts`` wrote: which zoo a table started from.
    Two results files whose runs started from different files are not the same recipe (``merge_results``)."""
    prints = {}
    for key, value in (starts or {}).items():
        path = Path(value)
        if key != "model.prerequisite" and path.is_file():
            prints[path.name] = sha256_file(path)
    return prints


def _finished(cfg: RunConfig) -> bool:
    latest = Path(cfg.train.out_dir) / "latest.pt"
    if not latest.is_file():
        return False
    from fsslab.engine.checkpoint import load_checkpoint

    return int(load_checkpoint(latest).get("iteration", 0)) >= int(cfg.train.iterations or 0)


def _fingerprint(cfg: RunConfig) -> str:
    latest = Path(cfg.train.out_dir) / "latest.pt"
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    digest.update(hashlib.sha256(latest.read_bytes()).digest() if latest.is_file() else b"")
    return digest.hexdigest()


def train_run(cfg: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one run unless it is finished (then nothing happens); returns {trained, seconds} (the wall time of
    the training, also recorded in the run's ``ablation_train_time.json``)."""
    from fsslab.engine.prerequisites import prepare_data
    from fsslab.engine.train.launch import run_training, train_prerequisites
    from fsslab.engine.train.run_dir import holds_run

    timing = Path(cfg.train.out_dir) / "ablation_train_time.json"
    if _finished(cfg):  # the wall time recorded when it was trained (None: trained by something else)
        recorded = json.loads(timing.read_text()).get("seconds") if timing.is_file() else None
        return {"trained": False, "seconds": recorded}
    prepare_data(cfg)
    train_prerequisites(cfg)  # the chain the config starts from, once (shared by every variant and seed)
    log(f"training {cfg.train.out_dir} ({cfg.train.iterations} iterations)")
    start = time.perf_counter()
    run_training(cfg, resume=holds_run(cfg.train.out_dir))
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds, "iterations": cfg.train.iterations,
                                  "threads": torch.get_num_threads()}))
    return {"trained": True, "seconds": seconds}


def evaluate_run(cfg: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate one finished run with its controls (``run_controls``) unless ``ablation_eval.json`` already holds
    the evaluation of this config and checkpoint; returns that file's content."""
    from fsslab.engine.inference import load_run
    from fsslab.engine.prerequisites import prepare_data
    from fsslab.engine.runner import run_controls, run_evaluation

    path = Path(cfg.train.out_dir) / EVAL_FILE
    fingerprint = _fingerprint(cfg)
    if path.is_file():
        done = json.loads(path.read_text())
        if done.get("fingerprint") == fingerprint:
            return done
    prepare_data(cfg)
    log(f"evaluating {cfg.train.out_dir} with controls ({len(cfg.eval.seeds)} seeds x {cfg.eval.episodes} episodes)")
    start = time.perf_counter()
    model = load_run(cfg)
    with torch.no_grad():
        result = run_evaluation(cfg, model, progress=False)
        controls = run_controls(cfg, model, result, progress=False)
    payload = {"miou": result.miou_mean, "miou_std_eval_seeds": result.miou_std, "fbiou": result.fbiou_mean,
               "mismatched_miou": controls.mismatched.miou_mean, "drop": controls.drop,
               "oracle_miou": controls.oracle.miou_mean, "shot_gain": controls.shot_gain,
               "base_share": result.base_share_mean, "seeds": result.seeds,
               "episodes_per_seed": result.episodes_per_seed, "seconds": time.perf_counter() - start,
               "controls": controls.to_dict(), "fingerprint": fingerprint}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return payload


def trained_variants(table: str | Path | AblationTable, root: str | Path = "runs/ablate", seed: int = 0,
                     quick: bool = False) -> dict[str, Any]:
    """{variant: its trained model (eval mode)} for every variant whose run of ``seed`` under ``root`` is finished
    (the retrained ablations, to put the same episodes through each); empty when none is."""
    from fsslab.engine.inference import load_run

    table = load_table(table)
    models = {}
    for variant in table.variants:
        cfg = run_config(table, variant, seed, root, quick)
        if _finished(cfg):
            models[variant.name] = load_run(cfg)
    return models


# ------------------------------------------------------------------------------------------------ the table
def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summarise(table: AblationTable, runs: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per variant from ``runs[variant][seed]`` (``evaluate_run``'s payloads)."""
    full = [r["miou"] for r in runs.get(table.full, {}).values()]
    rows = []
    for variant in table.variants:
        if variant.name not in runs and variant.name != table.full:
            continue  # a variant not run this time has no row
        done = runs.get(variant.name, {})
        mious = [r["miou"] for r in done.values()]
        drops = [r["drop"] for r in done.values()]
        shares = [r["base_share"] for r in done.values() if r.get("base_share") is not None]
        row: dict[str, Any] = {
            "variant": variant.name, "seeds": sorted(done), "n": len(mious),
            "miou_mean": statistics.fmean(mious) if mious else None,
            "miou_std": statistics.stdev(mious) if len(mious) > 1 else None,
            "mismatched_drop": statistics.fmean(drops) if drops else None,
            "base_share": statistics.fmean(shares) if shares else None,
            "paper": variant.paper or NOT_VERIFIED, "claim": variant.claim, "note": variant.note,
        }
        if variant.name == table.full:
            row.update(difference=None, interval=None, verdict="(reference)")
        else:
            interval = difference_interval(full, mious)
            if interval is None and full and mious:  # one seed: the difference without an interval
                row["difference"] = statistics.fmean(full) - statistics.fmean(mious)
            else:
                row["difference"] = interval[0] if interval else None
            row["interval"] = [interval[1], interval[2]] if interval else None
            row["verdict"] = verdict(interval, variant.claim, variant.margin)
        rows.append(row)
    return rows


def format_table(table: AblationTable, rows: list[dict[str, Any]]) -> str:
    """The table as Markdown: variant, mIoU mean ± std (n), mismatched drop, base share, full − variant [95% CI],
    the paper's number, the verdict."""
    head = ("| variant | mIoU mean ± std (n) | mismatched drop | base-class share % | full − variant [95% CI] "
            "| paper | verdict |")
    lines = [f"{table.description or table.name}", "", head, "|" + "---|" * 7]
    for r in rows:
        miou = f"{_fmt(r['miou_mean'])} ± {_fmt(r['miou_std'])} ({r['n']})"
        if r["difference"] is None:
            diff = "–"
        elif r["interval"] is None:
            diff = f"{r['difference']:+.2f} [no interval]"
        else:
            diff = f"{r['difference']:+.2f} [{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}]"
        lines.append(f"| {r['variant']} | {miou} | {_fmt(r['mismatched_drop'])} | {_fmt(r['base_share'], 1)} | "
                     f"{diff} | {r['paper']} | {r['verdict']} |")
    lines += ["", "verdict rule: " + "; ".join(f"{k}: {v}" for k, v in RULE.items())]
    return "\n".join(lines)


def merge_results(paths: Sequence[str | Path]) -> dict[str, Any]:
    """One table from several ``results.json`` of the same built-in table (runs of other sessions or
    machines: what a resumed ``run_ablation`` would hold had every run stayed on one disk). Each (variant, seed) may
    come from one file only; the rows and verdicts are recomputed by ``summarise`` from the per-run numbers, and
    ``command`` lists every file's command. Refused: files of different tables, quick files mixed with full ones,
    different ``start`` or ``extra`` overrides, or runs started from different zoo files (``start_files``, where
    both files record them): their runs are not the same recipe."""
    loaded = []
    for path in paths:
        try:
            loaded.append((str(path), json.loads(Path(path).read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable ablation results file ({exc})") from None
    if not loaded:
        raise ConfigError("merge_results: no results files given")
    first_path, first = loaded[0]
    same = ("quick", "start", "extra")
    for path, other in loaded[1:]:
        if other["table"]["name"] != first["table"]["name"]:
            raise ConfigError(f"{path}: table {other['table']['name']!r}, but {first_path} holds "
                              f"{first['table']['name']!r}")
        for key in same:
            if other.get(key) != first.get(key):
                raise ConfigError(f"{path}: {key}={other.get(key)!r}, but {first_path} has {first.get(key)!r}: "
                                  "not the same recipe")
    # which zoo `--start shipped` read: recorded since 2026-12-08 (older files carry none and are not compared)
    start_files: dict[str, str] = {}
    for path, other in loaded:
        for name, digest in (other.get("start_files") or {}).items():
            if start_files.setdefault(name, digest) != digest:
                raise ConfigError(f"{path}: its runs started from another {name} (sha256 {digest[:12]}, another "
                                  f"file has {start_files[name][:12]}): another zoo, not the same recipe")
    table = load_table(first["table"]["name"]) if first["table"]["name"] in TABLES else None
    if table is None:
        raise ConfigError(f"{first_path}: table {first['table']['name']!r} is not built in; merge its YAML "
                          "table's runs with run_ablation on one disk instead")
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for path, other in loaded:
        for variant, by_seed in other["runs"].items():
            for seed, run in by_seed.items():
                if int(seed) in runs.get(variant, {}):
                    raise ConfigError(f"{path}: {variant!r} seed {seed} is already in another file")
                runs.setdefault(variant, {})[int(seed)] = run
    order = [v.name for v in table.variants]
    unknown = sorted(set(runs) - set(order))
    if unknown:
        raise ConfigError(f"variants {unknown} are not in table {table.name!r}: {order}")
    runs = {v: dict(sorted(runs[v].items())) for v in sorted(runs, key=order.index)}
    rows = summarise(table, runs)
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    return {"command": [other.get("command") for _, other in loaded], "merged_from": [p for p, _ in loaded],
            "table": table.to_dict(), "seeds": seeds, **{key: first.get(key) for key in same},
            "start_files": start_files, "rule": RULE,
            "rows": rows, "runs": {v: {str(s): r for s, r in d.items()} for v, d in runs.items()},
            "timings": [t for _, other in loaded for t in other.get("timings", [])]}


def run_ablation(table: str | Path | AblationTable, root: str | Path = "runs/ablate", seeds: Sequence[int] | None = None,
                 variants: Sequence[str] | None = None, quick: bool = False, start: str | None = None,
                 extra: Sequence[str] = (), log: Callable[[str], None] = print,
                 command: str | None = None) -> dict[str, Any]:
    """Train and evaluate every (variant, seed) of ``table`` that is not done yet, then write ``results.json`` and
    ``table.md`` under ``<root>/<table>`` from the variants and seeds asked for; returns those results with the
    table's text under ``"text"``.

    start: "prerequisites" (train the config's prerequisite chain when missing: the recipe from scratch) or
    "shipped" (the frozen parts of the shipped zoo model: ``shipped_starts``); default: shipped with ``quick``,
    else prerequisites. extra: overrides applied to every run (after the variant's and the quick ones).
    command: the command line that made the table, kept in ``results.json`` (notebook 06 prints it).
    """
    table = load_table(table)
    seeds = list(seeds) if seeds is not None else list(table.seeds)
    chosen = [table.variant(v) for v in variants] if variants else list(table.variants)
    start = start or ("shipped" if quick else "prerequisites")
    if start not in ("shipped", "prerequisites"):
        raise ConfigError(f"start must be 'shipped' or 'prerequisites', got {start!r}")
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    timings: list[dict[str, Any]] = []
    start_files: dict[str, str] = {}
    for variant in chosen:
        starts = shipped_starts(variant.config, root) if start == "shipped" else None
        start_files.update(start_fingerprints(starts))
        for seed in seeds:
            cfg = run_config(table, variant, seed, root, quick, extra, starts)
            trained = train_run(cfg, log)
            evaluated = evaluate_run(cfg, log)
            runs.setdefault(variant.name, {})[seed] = evaluated
            timings.append({"variant": variant.name, "seed": seed, "train_seconds": trained["seconds"],
                            "eval_seconds": evaluated.get("seconds"), "out_dir": cfg.train.out_dir})
    rows = summarise(table, runs)
    text = format_table(table, rows)
    out = Path(root) / _slug(table.name)
    out.mkdir(parents=True, exist_ok=True)
    results = {"command": command, "table": table.to_dict(), "seeds": seeds, "quick": quick, "start": start, "extra": list(extra),
               "start_files": start_files, "rule": RULE, "rows": rows, "runs": {v: {str(s): r for s, r in d.items()} for v, d in runs.items()},
               "timings": timings}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(text + "\n")
    results["text"] = text
    return results


__all__ = ["NOT_VERIFIED", "QUICK_OVERRIDES", "RULE", "TABLES", "AblationTable", "Variant", "difference_interval",
           "evaluate_run", "format_table", "load_table", "run_ablation", "run_config", "shipped_starts", "start_fingerprints", "summarise",
           "t_quantile", "train_run", "trained_variants", "verdict"]
