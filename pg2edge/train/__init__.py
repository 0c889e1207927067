"""Fine-tuning PaliGemma 2 in JAX: sharded, resumable, with partial/LoRA training and int4/int8 QAT.

    from pg2edge.train import TrainOptions, finetune
    result = finetune(TrainOptions(data=Path("train.jsonl"), out=Path("run"), steps=300, batch=8,
                                   size="tiny", random_init=True))
    # run/params.npz + run/tokenizer.model + run/config.json, run/metrics.jsonl, run/checkpoints/<step>

Modules, one job each: `data` (examples via `pg2edge.tasks.read_examples`, encoding,
batching, deterministic order), `loss`, `optim`, `trainable` (frozen
split), `lora`, `qat` (+ `views`), `sharding` (mesh and placement; its
docstring covers multi-host), `init` (first state), `step` (jitted steps),
`checkpointing` (orbax), `metrics`, `artifacts` (exported model), `source`
(variant, weights, tokenizer), `loop` (`finetune`), `vision_pretrain` (the image
tower alone before `finetune`: `pg2edge pretrain-vision`). The model itself is
only ever called through `pg2edge.model.forward` (the tower stage through
`pg2edge.model.siglip.encode`).
"""

from pg2edge.train.loop import FinetuneResult, finetune
from pg2edge.train.metrics import read_metrics
from pg2edge.train.options import TrainOptions

__all__ = ["FinetuneResult", "TrainOptions", "finetune", "read_metrics"]
