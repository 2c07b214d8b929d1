"""Could torch-pruning replace the family registry's slicing? (docs/design.md, "Model families")

Needs `pip install torch-pruning==1.6.1` (not a dependency of hskcache). On a tiny random
BERT and ModernBERT it checks what ETD needs, against `hskcache.teacher.families` + `students.models.etd`:

1. the residual (hidden) dimensions pruned as one dependency group give the same parameters
   as the registry's slices;
2. ETD's per-head neuron choice (a different unit in each head) leaves a model that runs;
3. the pruned model reopens with AutoModelForSequenceClassification (its config follows).

    python tools/experiments/torch_pruning_check.py
"""
from __future__ import annotations

import tempfile

import torch
import torch_pruning as tp
from transformers import AutoModelForSequenceClassification, BertConfig, ModernBertConfig

from hskcache.teacher.families import family_of
from students.models.etd import ExtractionPlan, extract_state

SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2,
             vocab_size=50, max_position_embeddings=64)
CONFIGS = {"bert": BertConfig(**SHAPE),
           "modernbert": ModernBertConfig(**SHAPE, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                          sep_token_id=2)}


def fresh(name: str):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(CONFIGS[name], attn_implementation="eager").eval()


def main() -> None:
    torch.set_num_threads(1)
    ids = torch.randint(3, 50, (2, 7))
    keep = torch.randperm(32, generator=torch.Generator().manual_seed(1))[:16].sort().values
    drop = sorted(set(range(32)) - set(keep.tolist()))
    for name in CONFIGS:
        model = fresh(name)
        family = family_of(model.config)
        full = [torch.arange(32)] * 2
        plan = ExtractionPlan([0, 1], keep, full, [torch.arange(64)] * 2)
        expected = extract_state(family, model.config, dict(model.named_parameters()), plan)
        graph = tp.DependencyGraph().build_dependency(model, example_inputs={"input_ids": ids})
        graph.get_pruning_group(model.get_input_embeddings(), tp.prune_embedding_out_channels, idxs=drop).prune()
        got = dict(model.named_parameters())
        differ = [k for k, v in expected.items() if k not in got or not torch.equal(got[k], v)]
        print(f"{name}: 1. hidden group pruned by torch-pruning: {len(differ)} of {len(expected)} parameters "
              f"differ from the registry's slices {differ}")
        model = fresh(name)
        graph = tp.DependencyGraph().build_dependency(model, example_inputs={"input_ids": ids})
        query = family.projections(family.layer_list(model)[0])[0][0]
        per_head = [h * 8 + h for h in range(4)]  # one unit of each head, a different one per head (ETD)
        graph.get_pruning_group(query, tp.prune_linear_out_channels, idxs=per_head).prune()
        try:
            model(input_ids=ids)
            runs = "runs"
        except Exception as exc:  # noqa: BLE001 - the evidence is which error
            runs = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
        print(f"{name}: 2. per-head neuron pruning, forward {runs}")
        model = fresh(name)
        graph = tp.DependencyGraph().build_dependency(model, example_inputs={"input_ids": ids})
        graph.get_pruning_group(model.get_input_embeddings(), tp.prune_embedding_out_channels, idxs=drop).prune()
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            try:
                AutoModelForSequenceClassification.from_pretrained(folder)
                reload = "reopens"
            except Exception as exc:  # noqa: BLE001
                reload = f"does not reopen ({type(exc).__name__}); config.hidden_size is still " \
                         f"{model.config.hidden_size}"
        print(f"{name}: 3. saved after pruning: {reload}")


if __name__ == "__main__":
    main()
