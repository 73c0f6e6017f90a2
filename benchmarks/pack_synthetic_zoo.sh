#!/usr/bin/env bash
# Pack the runs of benchmarks/train_synthetic_zoo.sh into the shipped zoo (fsslab/checkpoints/synthetic): the six
# models (1- and 5-shot baseline, IPMT, AMFormer), int8, their tensors shared with what they started from (the
# shipped backbone for the baseline and IPMT, stage 1 for AMFormer), each with its full evaluation and the
# command that trained it; then drop the shared files no entry reads and verify everything.
#   bash benchmarks/pack_synthetic_zoo.sh            # R=runs/synthetic E=runs/evals
set -euo pipefail
R=${R:-runs/synthetic}
E=${E:-runs/evals}
Z=fsslab/checkpoints/synthetic
for m in baseline ipmt; do
    fsslab zoo pack $R/${m}_tiny_fold0_1shot --eval-json $E/${m}_1shot.json --base $Z/shared/backbone_episodic.pt \
        --storage int8 --command "fsslab train synthetic/${m}_tiny"
done
# a new stage 1 replaces shared/pspnet_base_tiny_fold0.pt (the AMFormer 5-shot entry is packed again below)
fsslab zoo pack $R/amformer_tiny_fold0_1shot --eval-json $E/amformer_1shot.json --base $R/pspnet_base_tiny_fold0 \
    --storage int8 --replace-shared --command "fsslab train synthetic/amformer_tiny --with-prerequisites"
for m in baseline ipmt amformer; do
    base=$Z/shared/backbone_episodic.pt; extra=""
    [ $m = amformer ] && base=$R/pspnet_base_tiny_fold0 && extra=" model.params.pretrained=$R/pspnet_base_tiny_fold0/latest.pt"
    fsslab zoo pack $R/${m}_tiny_fold0_5shot --eval-json $E/${m}_5shot.json --base $base --storage int8 \
        --command "fsslab train synthetic/${m}_tiny data.shot=5 model.init_checkpoint=$R/${m}_tiny_fold0_1shot/latest.pt 'model.init_prefix=\"\"' train.iterations=300 train.out_dir=$R/${m}_tiny_fold0_5shot$extra"
done
fsslab zoo prune
fsslab zoo verify
fsslab zoo list
