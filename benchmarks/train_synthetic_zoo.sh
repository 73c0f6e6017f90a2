#!/usr/bin/env bash
# The whole synthetic chain behind the shipped zoo and the README's quality table, with the shipped configs
# and nothing else: data, stage 1, the 1-shot models, the 5-shot models (fine-tuned from the 1-shot ones), the
# evaluations with their controls, the cross-domain preset (data/crossdomain, never trained on) with every
# control, and fold 1 for the ordering check. The chain starts from the shipped backbone (the zoo's
# shared/backbone_episodic.pt, as ImageNet weights are downloaded); the optional step `backbone` retrains it
# (then `fsslab zoo pack-weights`, docs/backbone.md).
# Every step is a plain `fsslab` command (trainings with --with-prerequisites: a run whose starting checkpoint, in
# runs/synthetic unless overridden, is missing trains it first); its wall time goes to $R/timings.tsv. A step whose result exists is
# skipped, so the script resumes after an interruption (a stopped training resumes with `--resume`).
#   bash benchmarks/train_synthetic_zoo.sh            # R=runs/synthetic E=runs/evals
#   STEPS="fold0 fiveshot evals fold1" bash benchmarks/train_synthetic_zoo.sh
#   STEPS=backbone bash benchmarks/train_synthetic_zoo.sh     # the shipped backbone's recipe (about 25 CPU minutes)
set -euo pipefail
R=${R:-runs/synthetic}
E=${E:-runs/evals}
STEPS=${STEPS:-"fold0 evals fiveshot evals5 crossdomain fold1"}
mkdir -p "$R" "$E"

step() {  # step NAME DONE_FILE COMMAND...: run and time COMMAND unless DONE_FILE exists
    local name=$1 done_file=$2
    shift 2
    if [[ -e $done_file ]]; then echo "skip $name ($done_file exists)"; return; fi
    echo "[$(date +%T)] $name: $*"
    local start=$SECONDS
    "$@" > "$R/$name.log" 2>&1 || { echo "FAILED: $name (see $R/$name.log)"; exit 1; }
    printf '%s\t%d\t%s\n' "$name" $((SECONDS - start)) "$*" >> "$R/timings.tsv"
}

train() {  # train CONFIG RUN_NAME OVERRIDES...
    local config=$1 run=$2
    shift 2
    step "train_$run" "$R/$run/latest.pt" fsslab train "synthetic/$config" "$@" "train.out_dir=$R/$run" \
        train.progress=false --with-prerequisites
}

evaluate() {  # evaluate CONFIG RUN_NAME TAG OVERRIDES...
    local config=$1 run=$2 tag=$3
    shift 3
    step "eval_$tag" "$E/$tag.json" fsslab eval "synthetic/$config" "$@" --checkpoint "$R/$run/latest.pt" \
        --json "$E/$tag.json"
}

for s in $STEPS; do case $s in
backbone)  # the shipped backbone's recipe: the 100-class pretraining, then the episodic one on top
    step data_synth data/synthetic/meta.json fsslab data synth --root data/synthetic --workers 2
    train backbone_pretrain_tiny backbone_pretrain_tiny_fold0
    train backbone_pretrain_episodic backbone_pretrain_episodic_fold0 \
        "model.init_checkpoint=$R/backbone_pretrain_tiny_fold0/latest.pt" ;;
fold0)
    step data_synth data/synthetic/meta.json fsslab data synth --root data/synthetic --workers 2
    train pspnet_base_tiny pspnet_base_tiny_fold0
    train ipmt_tiny ipmt_tiny_fold0_1shot
    train amformer_tiny amformer_tiny_fold0_1shot "model.params.pretrained=$R/pspnet_base_tiny_fold0/latest.pt"
    train baseline_tiny baseline_tiny_fold0_1shot ;;
evals)  # matched, oracle, mismatched supports, the 1-shot model given 5 shots; AMFormer with box supports
    for m in baseline ipmt amformer; do
        evaluate ${m}_tiny ${m}_tiny_fold0_1shot ${m}_1shot eval.controls=true
    done
    evaluate amformer_tiny amformer_tiny_fold0_1shot amformer_1shot_box eval.support_label=box
    evaluate ipmt_tiny ipmt_tiny_fold0_1shot ipmt_1shot_box eval.support_label=box ;;
fiveshot)  # every weight fine-tuned from the 1-shot run, 300 iterations at 5 shots
    for m in ipmt amformer baseline; do
        # AMFormer's stage-1 file is named so that $R (not the config's runs/synthetic) holds every start
        extra=(); [[ $m == amformer ]] && extra=("model.params.pretrained=$R/pspnet_base_tiny_fold0/latest.pt")
        train ${m}_tiny ${m}_tiny_fold0_5shot data.shot=5 "model.init_checkpoint=$R/${m}_tiny_fold0_1shot/latest.pt" \
            'model.init_prefix=""' train.iterations=300 "${extra[@]}"
    done ;;
evals5)
    for m in baseline ipmt amformer; do
        evaluate ${m}_tiny ${m}_tiny_fold0_5shot ${m}_5shot data.shot=5
    done ;;
crossdomain)  # the 1-shot runs on the cross-domain preset, with every control (all-foreground included)
    step data_crossdomain data/crossdomain/meta.json fsslab data synth --root data/crossdomain --preset crossdomain \
        --workers 2
    for m in baseline ipmt amformer; do
        evaluate ${m}_tiny ${m}_tiny_fold0_1shot ${m}_crossdomain_1shot data.root=data/crossdomain \
            'data.synthetic={preset: crossdomain}' eval.controls=true
    done ;;
fold1)  # the ordering on a second fold; every model from the same shipped backbone
    train pspnet_base_tiny pspnet_base_tiny_fold1 data.fold=1
    train ipmt_tiny ipmt_tiny_fold1_1shot data.fold=1
    train amformer_tiny amformer_tiny_fold1_1shot data.fold=1 "model.params.pretrained=$R/pspnet_base_tiny_fold1/latest.pt"
    train baseline_tiny baseline_tiny_fold1_1shot data.fold=1
    for m in baseline ipmt amformer; do
        evaluate ${m}_tiny ${m}_tiny_fold1_1shot ${m}_fold1_1shot data.fold=1 eval.controls=true
    done ;;
*) echo "unknown step $s"; exit 2 ;;
esac; done
