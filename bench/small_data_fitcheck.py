"""Issue 22 check (session 5): does the 500-comment classifier fit its own training texts? Trains the
defaults on GoEmotions seed 0's 500 comments (the small_data.py user path) and prints the history,
mean average precision on the training split and on dev, and dev macro-F1.

    python bench/small_data_fitcheck.py ['{"drop_mult": 1.0}' ['{"epochs": 1}']]   # classifier / LM options
"""
import os, sys, json, warnings, numpy as np, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)
import small_data as sd, ulmfit_ml as um
from sklearn.metrics import average_precision_score as aps
warnings.simplefilter("ignore")
kw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
lmkw = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
pool, dev, names = sd.load('goemotions')
rows = pool.sample(n=500, random_state=0)
data = um.MultiLabelData.from_df(rows, label_cols=names)
lm = um.finetune_lm(data, quiet=True, **lmkw)
clf = um.train_classifier(data, encoder=lm, quiet=True, **kw)
print(clf.history.to_string())
texts = np.asarray(data.texts, dtype=object); valid = np.asarray(data.is_valid)
ptr = clf.predict_proba(list(texts[~valid])); ytr = data.y_train
j = names.index('amusement')
print('train AP amusement %.3f  mean train AP %.3f' % (aps(ytr[:, j], ptr[:, j]), np.mean([aps(ytr[:, k], ptr[:, k]) for k in range(len(names)) if ytr[:, k].sum()])))
pd_ = clf.predict_proba(dev.text.tolist()); yd = dev[names].to_numpy()
print('dev AP amusement %.3f  mean dev AP %.3f' % (aps(yd[:, j], pd_[:, j]), np.mean([aps(yd[:, k], pd_[:, k]) for k in range(len(names)) if yd[:, k].sum()])))
from ulmfit_ml.evaluation.metrics import multilabel_report
print('dev f1 tuned', multilabel_report(yd, pd_, clf.thresholds).summary['f1_macro'])
