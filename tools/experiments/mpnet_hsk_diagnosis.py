"""Why the HSK stage collapses the MPNet ETD students (docs/results.md, "A 12-layer teacher").

Recomputes, from plain HF forwards on the first N training reviews: the teacher's hidden-state
scale at the stored layers (0, 3, 6, 9, 12) and how much of the zero-fill HSK MSE its largest
dimensions carry; whether ETD kept those dimensions; and the full-HSK MSE of the untrained
ETD student through (a) a random W (the trainer's init, same seed) and (b) the selection
matrix of the dimensions ETD kept; then, on the first 300 dev reviews, the logit spread and the final
[CLS] state's spread across reviews (what the classifier reads) of the teacher and the students.
    .venv/bin/python tools/experiments/mpnet_hsk_diagnosis.py [RUN_DIR] [N]
"""

from __future__ import annotations

import csv
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from students.losses import HSKProjection

run = sys.argv[1] if len(sys.argv) > 1 else "runs/mpnet"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
torch.set_num_threads(1)
student_dir = f"{run}/results/students/tinybert-4-etd-impt"
tok = AutoTokenizer.from_pretrained(f"{run}/teacher")
with open(f"{run}/data/train.csv") as f:
    texts = [row["sentence"] for _, row in zip(range(n), csv.DictReader(f))]
enc = tok(texts, max_length=64, truncation=True, padding=True, return_tensors="pt")
mask = enc["attention_mask"].bool()
teacher = AutoModelForSequenceClassification.from_pretrained(f"{run}/teacher").eval()
student = AutoModelForSequenceClassification.from_pretrained(student_dir).eval()
info = json.loads(open(f"{student_dir}/student.json").read())
kept = torch.tensor(info["extraction"]["hidden"])
with torch.no_grad():
    th = teacher(**enc, output_hidden_states=True).hidden_states
    sh = student(**enc, output_hidden_states=True).hidden_states
t_layers = [0, 3, 6, 9, 12]
print(f"{n} training reviews, {int(mask.sum())} tokens; ETD kept {len(kept)} of 768 residual dims")
for j, l in enumerate(t_layers):
    t = th[l][mask]  # (tokens, 768)
    per_dim = t.abs().mean(0)
    sq = (t ** 2).sum(0)
    top = sq.argsort(descending=True)[:5]
    share = float(sq[top].sum() / sq.sum())
    kept_top = [int(d) for d in top if d in set(kept.tolist())]
    print(f"teacher layer {l:2d}: mean|h| {float(t.abs().mean()):.3f}  median per-dim mean|h| "
          f"{float(per_dim.median()):.3f}  max per-dim mean|h| {float(per_dim.max()):.2f} (dim {int(per_dim.argmax())})  "
          f"top-5 dims {top.tolist()} carry {share:.1%} of sum h^2; ETD kept {kept_top}")
    cls = th[l][:, 0]
    s = sh[j][mask]
    rel = float(((s - t[:, kept]) ** 2).mean() / (t[:, kept] ** 2).mean())
    print(f"   student layer {j}: mean|h| {float(s.abs().mean()):.3f}; MSE to the teacher's kept dims / their mean square "
          f"{rel:.3f}; [CLS] spread across reviews (mean std over dims): teacher {float(cls.std(0).mean()):.3f} "
          f"student {float(sh[j][:, 0].std(0).mean()):.3f}")
torch.manual_seed(0)
random_w = HSKProjection(312, 768)
select_w = HSKProjection(312, 768)
with torch.no_grad():
    select_w.linear.weight.zero_()
    select_w.linear.weight[kept, torch.arange(len(kept))] = 1.0
    for name, w in (("random W (trainer init, seed 0)", random_w), ("selection W (ETD's kept dims)", select_w)):
        losses = [float(((w(sh[j][mask]) - th[l][mask]) ** 2).mean()) for j, l in enumerate(t_layers)]
        print(f"full-HSK zero-fill MSE per layer through {name}: {[round(x, 4) for x in losses]}, sum {sum(losses):.4f}")
    zero = [float((th[l][mask] ** 2).mean()) for l in t_layers]
    print(f"MSE of predicting 0 everywhere: {[round(x, 4) for x in zero]}, sum {sum(zero):.4f}")

# What the classifier reads, on the first 300 dev reviews: the teacher, the untrained ETD student and the
# finished seed-0 students (random W from mpnet_results.sh; W kept from mpnet_hsk_kept.sh, where run).
with open(f"{run}/data/dev.csv") as f:
    dev = [row["sentence"] for _, row in zip(range(300), csv.DictReader(f))]
dev_enc = tok(dev, max_length=64, truncation=True, padding=True, return_tensors="pt")
runs = f"{run}/results/runs/tinybert-4-etd-impt"
models = {"teacher": f"{run}/teacher", "ETD student, untrained": student_dir,
          "pred-only seed 0": f"{runs}/pred-only+label:0.5/seed0/student",
          "full HSK seed 0, W random": f"{runs}/full+label:0.5/seed0/student",
          "full HSK seed 0, W kept": f"{run}/hsk-kept/full+label:0.5/seed0/student"}
for name, path in models.items():
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    except OSError:
        continue  # not run yet
    with torch.no_grad():
        out = model(**dev_enc, output_hidden_states=True)
    diff = out.logits[:, 1] - out.logits[:, 0]
    p = torch.sigmoid(diff)
    print(f"{name}: logit difference mean {float(diff.mean()):.4f} std {float(diff.std()):.4f}; final [CLS] spread "
          f"{float(out.hidden_states[-1][:, 0].std(0).mean()):.4f}; p(class 1) {float(p.min()):.3f}-{float(p.max()):.3f}")
