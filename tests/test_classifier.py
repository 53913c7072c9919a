import numpy as np
import pandas as pd
import pytest
import torch

import ulmfit_ml as um
from ulmfit_ml.utils.config import ClassifierConfig

from conftest import CUES, FAST_CLF, TINY, make_frame


def test_learns_a_learnable_signal(tiny_clf):
    m = tiny_clf.evaluate()
    # chance: macro-F1 of predicting by label frequency is ~0.3 at best; ROC-AUC 0.5
    assert m["f1_macro"] > 0.8, m
    assert m["roc_auc_macro"] > 0.9, m


def test_history_has_the_epoch_metrics(tiny_clf):
    h = tiny_clf.history
    assert {"train_loss", "valid_loss", "accuracy_multi", "f1_macro", "f1_micro", "roc_auc_macro"} <= set(h.columns)
    assert list(h["stage"].unique()) == ["stage1:last1", "stage2:all"]
    assert len(h) == sum(FAST_CLF["epochs"])


def test_predict_types_and_shapes(tiny_clf):
    texts = ["the day was very happy today", "the city road was furious and the night scared", "the table and the book"]
    p = tiny_clf.predict_proba(texts)
    assert isinstance(p, np.ndarray) and p.dtype == np.float32 and p.shape == (3, 3)
    assert ((p >= 0) & (p <= 1)).all()
    labels = tiny_clf.predict(texts)
    assert isinstance(labels, list) and len(labels) == 3
    assert all(isinstance(ls, list) and all(isinstance(x, str) for x in ls) for ls in labels)
    assert all(set(ls) <= set(tiny_clf.labels) for ls in labels)
    assert labels == [[lab for lab, q in zip(tiny_clf.labels, row) if q >= 0.5] for row in p]
    assert tiny_clf.predict_proba([]).shape == (0, 3)
    assert tiny_clf.predict_proba(pd.Series(texts)).shape == (3, 3)
    assert tiny_clf.predict(texts, threshold=1.0) == [[], [], []]
    assert all(len(x) >= 1 for x in tiny_clf.predict(texts, threshold=1.0, at_least_one=True))


def test_predict_bad_input(tiny_clf):
    with pytest.raises(TypeError, match="list of texts, not a single string"):
        tiny_clf.predict_proba("happy")
    with pytest.raises(TypeError, match="1 non-string value\\(s\\) \\(e\\.g\\. 3 of type int at position 1"):
        tiny_clf.predict_proba(["ok", 3])
    with pytest.warns(UserWarning, match=r"1 row\(s\) of the input have an empty or missing text"):
        p = tiny_clf.predict_proba(["ok", None])  # missing: predicted as an empty text (the one text policy)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(p[1], tiny_clf.predict_proba([""])[0], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="one per label"):
        tiny_clf.predict(["x"], threshold=[0.5, 0.5])


def test_predictions_do_not_depend_on_batching(tiny_clf, data):
    texts = data.valid_texts[:40]
    np.testing.assert_allclose(tiny_clf.predict_proba(texts, bs=7), tiny_clf.predict_proba(texts, bs=64), atol=1e-5)


def test_predict_proba_matches_fastai_get_preds(tiny_clf, data):
    # our inference path (tokenise, sort, pad) gives fastai's own validation predictions
    y, probs = tiny_clf._valid
    np.testing.assert_allclose(tiny_clf.predict_proba(data.valid_texts), probs, atol=1e-5)
    np.testing.assert_array_equal(y, data.y_valid)


def test_predicted_label_lists_match_the_truth_on_new_texts(tiny_clf):
    from sklearn.metrics import f1_score

    df = make_frame(200, seed=99)
    pred = tiny_clf.predict(df["text"].tolist())
    y_pred = np.array([[lab in p for lab in tiny_clf.labels] for p in pred])
    assert f1_score(df[tiny_clf.labels].to_numpy(), y_pred, average="macro") > 0.7


def test_evaluate_on_a_frame_and_unknown_labels(tiny_clf):
    df = make_frame(100, seed=5)
    m = tiny_clf.evaluate(df)
    assert m["f1_macro"] > 0.7 and set(m) >= {"f1_micro", "roc_auc_macro", "hamming_loss", "precision_at_1"}
    assert isinstance(tiny_clf.report(df).per_label, pd.DataFrame)
    with pytest.raises(ValueError, match="Missing column"):
        tiny_clf.evaluate(df.drop(columns=["joy"]))


def test_gradual_unfreezing_trains_more_groups_each_stage(data, tiny_lm, monkeypatch):
    from fastai.learner import Learner

    seen = []
    orig = Learner.fit_one_cycle

    def spy(self, n_epoch, lr_max=None, *a, **k):
        groups = [any(p.requires_grad for p in g) for g in self.opt.param_lists] if self.opt else None
        if self.opt is None:
            self.create_opt()
            groups = [any(p.requires_grad for p in g) for g in self.opt.param_lists]
        seen.append((groups, lr_max))
        return orig(self, n_epoch, lr_max, *a, **k)

    monkeypatch.setattr(Learner, "fit_one_cycle", spy)
    arch = {"emb_sz": 16, "n_hid": 32, "n_layers": 3}
    lm = um.finetune_lm(data, arch=arch, pretrained=False, epochs=0, quiet=True)
    monkeypatch.setattr(Learner, "fit_one_cycle", spy)
    seen.clear()
    um.train_classifier(data, encoder=lm, unfreeze=(1, 2, 3, 0), epochs=(1, 1, 1, 1), lrs=(1e-2, 1e-2, 1e-2, 1e-2),
                        quiet=True, bs=64, seq_len=20)
    # AWD-LSTM classifier groups: embedding, 3 LSTM layers, head -> 5
    assert [g for g, _ in seen] == [
        [False, False, False, False, True],
        [False, False, False, True, True],
        [False, False, True, True, True],
        [True, True, True, True, True],
    ]
    lrs = [lr for _, lr in seen]
    assert lrs[0] == 1e-2
    for lr in lrs[1:]:  # discriminative learning rates: slice(lr / 2.6**4, lr)
        assert isinstance(lr, slice) and lr.stop == 1e-2 and lr.start == pytest.approx(1e-2 / 2.6**4)


def test_encoder_weights_are_loaded(data, tiny_lm):
    clf = um.train_classifier(data, encoder=tiny_lm, epochs=(0,), unfreeze=(1,), lrs=(1e-2,), quiet=True)
    enc = clf.model[0].module.state_dict()
    for k, v in tiny_lm.encoder_state_dict.items():
        torch.testing.assert_close(enc[k].cpu(), v)


def test_cpu_runs_are_repeatable_with_a_seed(data, tiny_lm):
    kw = dict(FAST_CLF, epochs=(1, 1), seed=11)
    a = um.train_classifier(data, encoder=tiny_lm, **kw).predict_proba(data.valid_texts[:30])
    b = um.train_classifier(data, encoder=tiny_lm, **kw).predict_proba(data.valid_texts[:30])
    np.testing.assert_array_equal(a, b)


def test_save_load_roundtrip(tiny_clf, data, tmp_path):
    tiny_clf.thresholds = np.array([0.3, 0.5, 0.7])
    try:
        path = tiny_clf.save(tmp_path / "m")
        assert sorted(p.name for p in path.iterdir()) == [".ulmfit_ml.json", "config.json", "history.csv", "labels.json",
                                                          "model.safetensors", "thresholds.json", "vocab.json"]
        clf2 = um.load_classifier(path)
        texts = data.valid_texts[:50] + ["unseen zzzz words", ""]
        np.testing.assert_allclose(clf2.predict_proba(texts), tiny_clf.predict_proba(texts), atol=1e-5)
        np.testing.assert_array_equal(clf2.thresholds, [0.3, 0.5, 0.7])
        assert clf2.labels == tiny_clf.labels and clf2.predict(texts) == tiny_clf.predict(texts)
        with pytest.raises(FileExistsError, match="overwrite=True"):
            tiny_clf.save(path)
        tiny_clf.thresholds = np.array([0.5, 0.5, 0.5])
        tiny_clf.save(path, overwrite=True)
        np.testing.assert_array_equal(um.load_classifier(path).thresholds, [0.5, 0.5, 0.5])
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
        with pytest.raises(ValueError, match="No validation predictions"):
            clf2.tune_thresholds()
        t = clf2.tune_thresholds(make_frame(200, seed=9))
        assert t.shape == (3,) and clf2.evaluate(make_frame(100, seed=8))["f1_macro"] > 0.7
    finally:
        tiny_clf.thresholds = np.full(3, 0.5)


def test_random_encoder_ablation_and_options(data):
    clf = um.train_classifier(data, encoder=None, arch=TINY, epochs=(1,), unfreeze=(0,), lrs=(1e-2,), quiet=True,
                              pos_weight="auto", loss="focal")
    assert clf.meta["encoder"] == "random" and clf.predict_proba(["happy"]).shape == (1, 3)


def test_device_and_option_errors(data, tiny_lm):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            um.train_classifier(data, encoder=tiny_lm, device="cuda")
        with pytest.raises(ValueError, match="fp16=True needs a CUDA device"):
            um.train_classifier(data, encoder=tiny_lm, fp16=True, device="cpu")
    with pytest.raises(TypeError, match=r"unknown config key classifier\.epoch \(did you mean classifier\.epochs\?\)"):
        um.train_classifier(data, encoder=tiny_lm, epoch=3)
    with pytest.raises(ValueError, match="same non-zero length"):
        ClassifierConfig(epochs=(1, 1), lrs=(1e-2,), unfreeze=(1, 0))
    with pytest.raises(TypeError, match="encoder must be"):
        um.train_classifier(data, encoder=123)
    with pytest.raises(ValueError, match="loss must be"):
        ClassifierConfig(loss="hinge")


def test_backward_language_model_encoder_reads_reversed_texts(data, tmp_path):
    bwd = um.finetune_lm(data, arch=TINY, pretrained=False, epochs=1, bs=32, seq_len=20, backwards=True, quiet=True)
    assert bwd.backwards
    clf = um.train_classifier(data, encoder=bwd, **dict(FAST_CLF, epochs=(1, 2)))
    assert clf.meta["backwards"] is True
    # fastai's validation predictions (reversed by the DataBlock) == our inference path (reversed ids)
    np.testing.assert_allclose(clf.predict_proba(data.valid_texts), clf._valid[1], atol=1e-5)
    forward_view = clf.meta.copy()
    clf.meta["backwards"] = False  # reading the texts the wrong way round gives other probabilities
    assert np.abs(clf.predict_proba(data.valid_texts[:20]) - clf._valid[1][:20]).max() > 1e-3
    clf.meta = forward_view
    clf2 = um.load_classifier(clf.save(tmp_path / "bwd"))
    assert clf2.meta["backwards"] is True
    np.testing.assert_allclose(clf2.predict_proba(data.valid_texts[:20]), clf._valid[1][:20], atol=1e-5)
    from ulmfit_ml.data.tokens import tokenize_texts

    ex = um.explain(clf2, data.valid_texts[:1], labels=["joy"])
    assert list(ex["token"]) == tokenize_texts(data.valid_texts[:1])[0]  # attributions back in text order
