"""Issue 22 probe (session 5, not a library feature): does a bag-of-words path in the classifier
close the 500-label gap to TF-IDF on one-word labels (amusement "lol", remorse "sorry")?

The classifier's logits get ``SCALE * W @ f``: ``f`` the idf-weighted, L2-normalised presence of
the text's tokens (tokens in fewer than ``MIN_DF`` training texts left out), ``W`` zero-initialised
and trained with the head (layer group of ``model[1]``); ``BOW_WARM`` epochs train ``W`` alone
first. It patches ``ClassifierTrainer`` in this process only and runs ``small_data.py``'s user path,
so results land in bench/small_data_results.json as variant ``BOW_NAME``. ``BOW_OFF=1`` runs the
plain classifier with ``BOW_CLF`` options (JSON) instead. Example:

    BOW_SCALE=1 BOW_NAME=proto-df2-s1 python bench/small_data_bow_probe.py run --n 500 --seeds 0 --variants proto-df2-s1

Result (bench/RESULTS.md, session 5): no gain (dev macro-F1 0.147 vs 0.148; amusement AP 0.12 -> 0.17,
TF-IDF 0.44); the network memorises its 400 training texts (train AP 0.95) before the word path
learns the cue words.
"""
import sys, os, math
from collections import Counter
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np, torch
from torch import nn
import small_data as sd
from ulmfit_ml.training import trainer as tr
from fastai.text.models.core import SequentialRNN

SCALE = float(os.environ.get("BOW_SCALE", "1"))
DROP = float(os.environ.get("BOW_DROP", "0"))
MIN_DF = int(os.environ.get("BOW_MIN_DF", "2"))
WARM = int(os.environ.get("BOW_WARM", "0"))

class Wide(SequentialRNN):
    def forward(self, x):
        out = self[1](self[0](x))
        head = self[1]
        f = torch.zeros(x.shape[0], head.bow.in_features, device=x.device)
        f.scatter_(1, x, 1.0)
        f[:, 1] = 0.0
        f = f * head.idf
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-6)
        f = nn.functional.dropout(f, DROP, self.training)
        return (out[0] + SCALE * head.bow(f), *out[1:])

orig = tr.ClassifierTrainer.__init__
def patched(self, data, **kw):
    orig(self, data, **kw)
    m = self.learner.model
    V, n_out = len(self.vocab), data.n_out
    o2i = {t: i for i, t in enumerate(self.vocab)}
    df = Counter()
    n = 0
    for toks, valid in zip(data.tokens, data.is_valid):
        if not valid:
            n += 1
            df.update({o2i.get(t, 0) for t in toks})
    idf = torch.ones(V)
    for i, c in df.items():
        idf[i] = math.log((1 + n) / (1 + c)) + 1
    idf_all = torch.zeros(V)  # words in fewer than MIN_DF training texts: no feature
    for i, c in df.items():
        if c >= MIN_DF: idf_all[i] = idf[i]
    head = m[1]
    head.bow = nn.Linear(V, n_out, bias=False)
    nn.init.zeros_(head.bow.weight)
    head.register_buffer("idf", idf_all)
    w = Wide(m[0], m[1])
    self.learner.model = w
tr.ClassifierTrainer.__init__ = patched

orig_fit = tr.ClassifierTrainer._fit_stages
def fit_stages(self, learn):
    if WARM:
        from fastai.callback.schedule import fit_one_cycle
        head = learn.model[1]
        ps = [p for p in learn.model.parameters()]
        flags = [p.requires_grad for p in ps]
        opt = torch.optim.Adam([head.bow.weight], lr=float(os.environ.get("BOW_WARM_LR", "0.05")))
        learn.model.train()
        for ep in range(WARM):
            for xb, yb in learn.dls.train:
                learn.model.reset()
                out = learn.model(xb)[0]
                loss = learn.loss_func(out, yb)
                opt.zero_grad(); loss.backward(); opt.step()
        learn.model.zero_grad()
    return orig_fit(self, learn)
tr.ClassifierTrainer._fit_stages = fit_stages
name = os.environ.get("BOW_NAME", "defaults-bow")
import json as _j
sd.VARIANTS[name] = dict(lm={}, clf=_j.loads(os.environ.get("BOW_CLF", "{}")))
if os.environ.get("BOW_OFF"): tr.ClassifierTrainer.__init__ = orig
if __name__ == "__main__":
    sd.main()
