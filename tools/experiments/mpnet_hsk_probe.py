"""The MPNet ETD student right after the HSK stage, before any prediction epoch.

Runs only stage 1 of `students train` (the trainer itself, the run's flags) for EPOCHS epochs, then
measures on the first 300 dev reviews: the share predicted as the commoner class, the spread of the
final-layer [CLS] state across reviews (what the classifier reads) and of the logits. W is the
trainer's random init, or the selection matrix of the residual dimensions ETD kept (`kept`).
`--run` is the MPNet job's run folder (tools/experiments/mpnet_results.sh; default runs/mpnet),
whose store, ETD student and dev split it reads.
    .venv/bin/python tools/experiments/mpnet_hsk_probe.py HSK W LR EPOCHS OUT [--run RUN]
    (e.g. stored random 2e-4 1 /tmp/p)
"""

from __future__ import annotations

import argparse
import csv

import torch
from transformers import AutoTokenizer

from hskcache.store.reader import open_store
from hskcache.kinds.hsk import HSKRead, parse_amount
from students.training.runtime import Runtime
from students.training.trainer import Trainer, TrainConfig

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("hsk", help="--hsk of stage 1: N_D,N_L,N_W or stored")
parser.add_argument("w_init", choices=["random", "kept"], help="W's init")
parser.add_argument("lr", type=float, help="stage 1 learning rate")
parser.add_argument("epochs", type=int, help="stage 1 epochs")
parser.add_argument("out", help="run folder of the probe's training")
parser.add_argument("--run", default="runs/mpnet", help="the MPNet job's run folder (store, ETD student, dev split)")
args = parser.parse_args()
hsk, w_init, lr, epochs, out, run = args.hsk, args.w_init, args.lr, args.epochs, args.out, args.run
student_dir = f"{run}/results/students/tinybert-4-etd-impt"
cfg = TrainConfig(student=student_dir, out=out, reads={"hsk": HSKRead(parse_amount(hsk))}, hsk_epochs=epochs,
                  pred_epochs=1, hsk_lr=lr, pred_lr=lr, seed=0, select_on="train-holdout:0.1", runtime=Runtime(threads=1, quiet=True),
                  eval_data=f"{run}/data/dev.csv", pred_objective=(("pred", 1.0), ("label", 0.5)))
trainer = Trainer(cfg, open_store(f"{run}/results/store-compressed"))
if w_init == "kept":
    import json
    kept = torch.tensor(json.loads(open(f"{student_dir}/student.json").read())["extraction"]["hidden"])
    with torch.no_grad():
        trainer.projection.linear.weight.zero_()
        trainer.projection.linear.weight[kept, torch.arange(len(kept))] = 1.0
tok = AutoTokenizer.from_pretrained(student_dir)
with open(f"{run}/data/dev.csv") as f:
    texts = [row["sentence"] for _, row in zip(range(300), csv.DictReader(f))]
enc = tok(texts, max_length=64, truncation=True, padding=True, return_tensors="pt")


def probe(when: str) -> None:
    trainer.model.eval()
    with torch.no_grad():
        out_ = trainer.model(**enc, output_hidden_states=True)
    pred = out_.logits.argmax(-1)
    share = max(float((pred == 0).float().mean()), float((pred == 1).float().mean()))
    cls = out_.hidden_states[-1][:, 0]
    print(f"{when}: commoner predicted class {share:.1%} of 300 dev reviews; final [CLS] spread "
          f"(mean std over dims) {float(cls.std(0).mean()):.4f}, mean|[CLS]| {float(cls.abs().mean()):.4f}; "
          f"logit-difference std {float((out_.logits[:, 1] - out_.logits[:, 0]).std()):.4f}", flush=True)


probe("before the HSK stage")
trainer.stages = trainer.stages[:1]  # stage 1 only
trainer.run()
probe(f"after {epochs} HSK epoch(s), --hsk {hsk}, W {w_init}, lr {lr:g}")
