"""Per-label token attributions: a tiny model whose "pos" label means "the text has 'zebra'"
must attribute "pos" to "zebra"."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import ulmfit_ml as um
from ulmfit_ml.data.tokens import tokenize_texts
from ulmfit_ml.inference.explain import explain, explain_html

WORDS = "the a cat dog runs fast slow blue red green house tree river sky sun moon car road bird fish".split()


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(5, 10))
        toks = list(rng.choice(WORDS, k))
        pos = i % 2 == 0
        if pos:
            toks.insert(int(rng.integers(0, k)), "zebra")
        rows.append({"text": " ".join(toks), "pos": int(pos), "other": int(rng.random() < 0.3)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def zebra_clf():
    data = um.MultiLabelData.from_df(_frame(200, 0), label_cols=["pos", "other"], split="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return um.train_classifier(data, arch={"emb_sz": 16, "n_hid": 32, "n_layers": 1}, unfreeze=(0,),
                                   epochs=(4,), lrs=(1e-1,), bs=32, lin_ftrs=(16,), quiet=True, device="cpu")


def test_zebra_gets_the_top_attribution_for_its_label(zebra_clf) -> None:
    texts = _frame(30, 1)["text"].tolist()
    with_zebra = [t for t in texts if "zebra" in t.split()]
    fr = explain(zebra_clf, with_zebra, ["pos"])
    top = fr.loc[fr.groupby("text_id")["attribution"].idxmax(), "token"]
    assert (top == "zebra").mean() >= 0.8, top.tolist()
    assert fr.loc[fr.token == "zebra", "attribution"].mean() > 0


def test_one_row_per_token_and_label(zebra_clf) -> None:
    texts = ["the zebra runs", "Blue sky over the river"]
    fr = um.explain(zebra_clf, texts, labels=["pos", "other"])
    assert list(fr.columns) == ["text_id", "label", "position", "token", "attribution"]
    toks = tokenize_texts(texts)
    assert len(fr) == 2 * sum(len(t) for t in toks)
    for i, t in enumerate(toks):
        for lab in ("pos", "other"):
            g = fr[(fr.text_id == i) & (fr.label == lab)]
            assert g["token"].tolist() == t and g["position"].tolist() == list(range(len(t)))
            assert np.isfinite(g["attribution"]).all()
    # labels are explained independently: "other" is not a mirror image of "pos" (no softmax)
    a_pos = fr[(fr.text_id == 0) & (fr.label == "pos")]["attribution"].to_numpy()
    a_oth = fr[(fr.text_id == 0) & (fr.label == "other")]["attribution"].to_numpy()
    assert not np.allclose(a_pos, -a_oth)
    # one label at a time gives the same numbers as several together
    single = explain(zebra_clf, texts[:1], "pos")
    np.testing.assert_allclose(single["attribution"].to_numpy(), a_pos, rtol=1e-4, atol=1e-7)


def test_default_labels_are_the_predicted_ones(zebra_clf) -> None:
    texts = ["the zebra runs", "cat and dog"]
    fr = explain(zebra_clf, texts)
    pred = zebra_clf.predict(texts, at_least_one=True)
    for i, labs in enumerate(pred):
        assert sorted(fr.loc[fr.text_id == i, "label"].unique()) == sorted(labs)
    assert explain(zebra_clf, []).empty


def test_integrated_gradients_are_complete(zebra_clf) -> None:
    """IG attributions add up to logit(text) - logit(all-zero embeddings)."""
    text = "the red zebra runs fast"
    fr = explain(zebra_clf, [text], ["pos"], method="integrated_gradients", n_steps=64)
    logit = float(zebra_clf.predict_logits([text])[0, 0])
    awd = zebra_clf.model[0].module
    handle = awd.encoder_dp.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        zero = float(zebra_clf.predict_logits([text])[0, 0])
    finally:
        handle.remove()
    total = fr["attribution"].sum()
    assert total == pytest.approx(logit - zero, rel=0.05, abs=0.02)
    top = fr.loc[fr["attribution"].idxmax(), "token"]
    assert top == "zebra"


def test_model_state_is_restored(zebra_clf) -> None:
    enc = zebra_clf.model[0]
    bptt = enc.bptt
    zebra_clf.model.train()
    try:
        explain(zebra_clf, ["the zebra " * 60], ["pos"])  # longer than seq_len: one chunk here
        assert zebra_clf.model.training and enc.bptt == bptt
        assert not enc.module.encoder_dp._forward_hooks
    finally:
        zebra_clf.model.eval()


def test_texts_longer_than_max_len_keep_the_chunking(zebra_clf, monkeypatch) -> None:
    """Beyond max_len the model only pools the last chunks: earlier tokens get 0, as in the model."""
    enc = zebra_clf.model[0]
    monkeypatch.setattr(enc, "bptt", 4)
    monkeypatch.setattr(enc, "max_len", 8)
    text = "zebra the cat runs fast over the blue river and the red sky sun moon car zebra"
    fr = explain(zebra_clf, [text], ["pos"])
    n = len(tokenize_texts([text])[0])
    assert len(fr) == n and n > 8
    a = fr["attribution"].to_numpy()
    first_kept = ((n - 8 + 3) // 4) * 4  # first chunk start i with n - i <= max_len
    assert np.all(a[:first_kept] == 0) and np.any(a[first_kept:] != 0)


def test_explain_html(zebra_clf) -> None:
    html = explain_html(zebra_clf, ["the zebra runs <b>"], ["pos", "other"])
    assert html.startswith("<div") and html.count("<p>") == 2
    assert "zebra" in html and "&lt;" in html and "<b>pos</b>" in html and "(p=" in html
    assert html.count("<b>") == 4  # the text's own "<b>" is escaped: only the 2 x 2 headers are bold
    assert html == um.explain_html(zebra_clf, ["the zebra runs <b>"], ["pos", "other"])


def test_errors(zebra_clf) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        explain(zebra_clf, ["zebra"], method="attention")
    with pytest.raises(ValueError, match=r"Unknown label\(s\) \['cat'\]"):
        explain(zebra_clf, ["zebra"], ["cat"])
    with pytest.raises(ValueError, match="labels is empty"):
        explain(zebra_clf, ["zebra"], [])
    with pytest.raises(ValueError, match="n_steps must be a positive int"):
        explain(zebra_clf, ["zebra"], method="integrated_gradients", n_steps=0)
    with pytest.raises(TypeError, match="not a single string"):
        explain(zebra_clf, "zebra")
    with pytest.raises(TypeError, match="needs a MultiLabelClassifier"):
        explain(um.TfidfBaseline(), ["zebra"])
