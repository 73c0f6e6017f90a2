#!/usr/bin/env bash
# The whole synthetic chain behind the shipped zoo and the README's quality table, with the shipped configs
# and nothing else: data, synthetic ImageNet, stage 1, the 1-shot models, the 5-shot models (fine-tuned from
# the 1-shot ones), the evaluations with their controls, and fold 1 for the ordering check.
# Every step is a plain `fsslab` command (trainings with --with-prerequisites: a run whose starting checkpoint, in
# runs/synthetic unless overridden, is missing trains it first); its wall time goes to $R/timings.tsv. A step whose result exists is
# skipped, so the script resumes after an interruption (a stopped training resumes with `--resume`).
#   bash benchmarks/train_synthetic_zoo.sh            # R=runs/synthetic E=runs/evals
#   STEPS="fold0 fiveshot evals fold1" bash benchmarks/train_synthetic_zoo.sh
set -euo pipefail
R=${R:-runs/synthetic}
E=${E:-runs/evals}
STEPS=${STEPS:-"fold0 evals fiveshot evals5 fold1"}
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
fold0)
    step data_synth data/synthetic/meta.json fsslab data synth --root data/synthetic --workers 2
    train backbone_pretrain_tiny backbone_pretrain_tiny_fold0
    train pspnet_base_tiny pspnet_base_tiny_fold0
    train ipmt_tiny ipmt_tiny_fold0_1shot
    train amformer_tiny amformer_tiny_fold0_1shot
    train baseline_tiny baseline_tiny_fold0_1shot ;;
evals)  # matched, oracle, mismatched supports, the 1-shot model given 5 shots; AMFormer with box supports
    for m in baseline ipmt amformer; do
        evaluate ${m}_tiny ${m}_tiny_fold0_1shot ${m}_1shot eval.controls=true
    done
    evaluate amformer_tiny amformer_tiny_fold0_1shot amformer_1shot_box eval.support_label=box
    evaluate ipmt_tiny ipmt_tiny_fold0_1shot ipmt_1shot_box eval.support_label=box ;;
fiveshot)  # every weight fine-tuned from the 1-shot run, 300 iterations at 5 shots
    for m in ipmt amformer baseline; do
        train ${m}_tiny ${m}_tiny_fold0_5shot data.shot=5 "model.init_checkpoint=$R/${m}_tiny_fold0_1shot/latest.pt" \
            'model.init_prefix=""' train.iterations=300
    done ;;
evals5)
    for m in baseline ipmt amformer; do
        evaluate ${m}_tiny ${m}_tiny_fold0_5shot ${m}_5shot data.shot=5
    done ;;
fold1)  # the ordering on a second fold; the synthetic ImageNet of fold 0 (it learns all 20 classes anyway)
    P="model.init_checkpoint=$R/backbone_pretrain_tiny_fold0/latest.pt"
    train pspnet_base_tiny pspnet_base_tiny_fold1 data.fold=1 "$P"
    train ipmt_tiny ipmt_tiny_fold1_1shot data.fold=1 "$P"
    train amformer_tiny amformer_tiny_fold1_1shot data.fold=1 "model.params.pretrained=$R/pspnet_base_tiny_fold1/latest.pt"
    train baseline_tiny baseline_tiny_fold1_1shot data.fold=1 "$P"
    for m in baseline ipmt amformer; do
        evaluate ${m}_tiny ${m}_tiny_fold1_1shot ${m}_fold1_1shot data.fold=1 eval.controls=true
    done ;;
*) echo "unknown step $s"; exit 2 ;;
esac; done
