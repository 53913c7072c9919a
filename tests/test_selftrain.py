"""Self-training: soft-labelled rows join the training split only; the student learns a teacher's
rule from unlabelled texts; every refusal names the fix."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

import ulmfit_ml as um
from ulmfit_ml.utils.persist import MARKER, remove_owned_dir
from conftest import CUES, FAST_CLF, TINY, make_frame


class CueTeacher:
    """A teacher that knows the synthetic rule: label L's probability is 0.95 iff its cue word is in the text."""

    labels = list(CUES)

    def predict_proba(self, texts):
        return np.array([[0.95 if CUES[lab] in t.split() else 0.05 for lab in self.labels] for t in texts])


def test_soft_labels_join_the_training_split_only(data) -> None:
    texts = ["happy day", "furious night", "scared and happy"]
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.7, 0.0, 1.0]])
    out = um.with_soft_labels(data, texts, p)
    n = len(data.texts)
    assert out.texts[:n] == data.texts and out.texts[n:] == texts
    np.testing.assert_array_equal(out.is_valid[:n], data.is_valid)
    assert not out.is_valid[n:].any()
    np.testing.assert_allclose(out.y[n:], p.astype(np.float32))
    np.testing.assert_array_equal(out.y_valid, data.y_valid)  # thresholds still see real labels only
    assert list(out.index[n:]) == [-1, -2, -3] and out.labels == data.labels
    assert [toks[-2:] for toks in out.tokens[n:]] == [t.split()[-2:] for t in texts]


@pytest.mark.parametrize("texts, p, err, match", [
    (["a", "b"], np.zeros((3, 3)), ValueError, r"shape \(n_texts, n_labels\) = \(2, 3\), got \(3, 3\)"),
    (["a", "b"], np.zeros((2, 2)), ValueError, r"= \(2, 3\), got \(2, 2\)"),
    (["a", "b"], np.full((2, 3), 1.5), ValueError, r"finite values in \[0, 1\]"),
    (["a", "b"], np.array([[0.1, np.nan, 0.2], [0, 0, 0]]), ValueError, r"finite values in \[0, 1\]"),
    (["a", ""], np.zeros((2, 3)), ValueError, r"NaN or empty text"),
    ("a b", np.zeros((3, 3)), TypeError, r"not a single str"),
])
def test_soft_labels_refuse_bad_input(data, texts, p, err, match) -> None:
    with pytest.raises(err, match=match):
        um.with_soft_labels(data, texts, p)


def test_soft_labels_need_multilabel_data() -> None:
    df = pd.DataFrame({"text": [f"text number {i}" for i in range(20)], "score": np.arange(20.0)})
    reg = um.MultiLabelData.from_df(df, target_cols=["score"], seed=0)
    with pytest.raises(ValueError, match=r"Soft labels need multi-label data .* 'regression'"):
        um.with_soft_labels(reg, ["x"], np.zeros((1, 1)))
    with pytest.raises(ValueError, match=r"self_train needs multi-label data .*; these targets are 'regression'"):
        um.self_train(reg, encoder=None, texts=["x"])


def _f1(model, frame: pd.DataFrame) -> float:
    return float(model.evaluate(frame)["f1_macro"])


def test_the_student_learns_the_teachers_rule_from_unlabelled_texts() -> None:
    """24 labelled training rows are too few for the classifier to find the cue words; 600
    unlabelled texts scored by a teacher that knows them are enough."""
    labelled = make_frame(124, seed=1)
    is_valid = np.r_[np.zeros(24, dtype=bool), np.ones(100, dtype=bool)]
    small = um.MultiLabelData.from_df(labelled.assign(v=is_valid), label_cols=list(CUES), split="column", valid_col="v")
    unlabelled = make_frame(600, seed=2)["text"].tolist()
    dev = make_frame(300, seed=3)
    opts = dict(FAST_CLF, arch=TINY, seed=0)
    alone = um.train_classifier(small, encoder=None, **opts)
    student = um.self_train(small, encoder=None, texts=unlabelled, teacher=CueTeacher(), **opts)
    assert isinstance(student, um.MultiLabelClassifier)
    np.testing.assert_array_equal(student.validation_predictions[0], small.y_valid)  # thresholds from real labels
    f_alone, f_student = _f1(alone, dev), _f1(student, dev)
    assert f_student > 0.9, (f_alone, f_student)
    assert f_student > f_alone + 0.1, (f_alone, f_student)


@pytest.mark.parametrize("teacher", ["blend", "self"])
def test_the_built_in_teachers_train_on_extra_texts(tiny_lm, teacher) -> None:
    extra = make_frame(100, seed=5)["text"].tolist()
    data = um.MultiLabelData.from_df(make_frame(200, seed=4), label_cols=list(CUES), seed=0, extra_texts=extra)
    student = um.self_train(data, encoder=tiny_lm, teacher=teacher, **FAST_CLF)
    assert isinstance(student, um.MultiLabelClassifier) and student.labels == list(CUES)
    assert student.predict_proba(["happy", "scared"]).shape == (2, 3)


def test_self_train_refusals(data, tiny_clf) -> None:
    with pytest.raises(ValueError, match=r"needs unlabelled texts .* pass texts=\[\.\.\.\] or build the data with extra_texts="):
        um.self_train(data, encoder=None)  # the fixture has no extra_texts
    with pytest.raises(ValueError, match=r"found none that is not already a labelled text"):
        um.self_train(data, encoder=None, texts=data.texts[:5])
    with pytest.raises(ValueError, match=r"teacher must be one of \('blend', 'self'\) or a fitted model, got 'tfidf'"):
        um.self_train(data, encoder=None, texts=["new text"], teacher="tfidf")
    other = CueTeacher()
    other.labels = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"The teacher must have predict_proba and the data's labels"):
        um.self_train(data, encoder=None, texts=["new text"], teacher=other)
    with pytest.raises(TypeError, match=r"texts must be a list of texts, not a single str"):
        um.self_train(data, encoder=None, texts="one text", teacher=tiny_clf)


class CountingTeacher(CueTeacher):
    """The cue teacher, counting its calls (a resumed run must not ask it again)."""

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, texts):
        self.calls += 1
        return super().predict_proba(texts)


def test_a_resumed_self_train_reuses_the_saved_teacher_probabilities(data, tmp_path) -> None:
    """Interrupted after the teacher scored the texts (its probabilities saved, no student epoch
    yet): resume trains the student from those probabilities without the teacher, to the same model."""
    unlabelled = make_frame(80, seed=9)["text"].tolist()
    opts = dict(FAST_CLF, arch=TINY, seed=0)
    ck = tmp_path / "ck"
    teacher = CountingTeacher()
    first = um.self_train(data, encoder=None, texts=unlabelled, teacher=teacher, checkpoint_dir=ck, **opts)
    assert teacher.calls == 1 and (ck / "teacher.npz").is_file() and (ck / "checkpoint.json").is_file()
    for f in ck.iterdir():  # the state of a run killed right after the teacher
        if f.name not in ("teacher.npz", MARKER):
            f.unlink() if f.is_file() else shutil.rmtree(f)
    again = CountingTeacher()
    resumed = um.self_train(data, encoder=None, texts=unlabelled, teacher=again, checkpoint_dir=ck, resume=True, **opts)
    assert again.calls == 0, "the saved probabilities are used, the teacher is not asked again"
    np.testing.assert_allclose(resumed.predict_proba(data.texts[:20]), first.predict_proba(data.texts[:20]), atol=1e-5)
    with pytest.raises(ValueError, match=r"teacher\.npz holds a teacher's probabilities for other unlabelled texts"):
        um.self_train(data, encoder=None, texts=unlabelled[:-1], teacher=again, checkpoint_dir=ck, resume=True, **opts)
    with pytest.raises(ValueError, match=r"resume=True needs checkpoint_dir="):
        um.self_train(data, encoder=None, texts=unlabelled, teacher=again, resume=True, **opts)
    remove_owned_dir(ck)  # the teacher's file is one of the checkpoint directory's own
    assert not ck.exists()


def test_self_train_killed_while_the_teacher_trains_resumes_the_teacher(data, tmp_path, monkeypatch) -> None:
    """A kill during the built-in teacher's epochs: resume goes on from the teacher's last saved
    epoch (not from scratch), then trains the student, to the model of an uninterrupted run; the
    teacher's epoch files make way for the student's."""
    from ulmfit_ml.training import checkpoint as C
    from ulmfit_ml.training import selftrain as S

    unlabelled = make_frame(60, seed=9)["text"].tolist()
    opts = dict(FAST_CLF, arch=TINY, seed=0)  # 2 + 10 epochs for the teacher, then for the student
    ref = um.self_train(data, encoder=None, texts=unlabelled, teacher="self", checkpoint_dir=tmp_path / "ref", **opts)
    real, saved = C.save_checkpoint, []

    def save(directory, **kw):
        out = real(directory, **kw)
        saved.append((kw["stage"], kw["epoch"]))
        if len(saved) == 3 and kill:
            raise KeyboardInterrupt  # after the teacher's 3rd epoch (stage 2, epoch 1)
        return out

    monkeypatch.setattr(C, "save_checkpoint", save)
    ck, kill = tmp_path / "ck", True
    with pytest.raises(KeyboardInterrupt):
        um.self_train(data, encoder=None, texts=unlabelled, teacher="self", checkpoint_dir=ck, **opts)
    assert not (ck / "teacher.npz").exists() and C.load_checkpoint(ck)["epoch"] == 1
    saved.clear()
    kill = False
    resumed = um.self_train(data, encoder=None, texts=unlabelled, teacher="self", checkpoint_dir=ck, resume=True, **opts)
    assert saved[:9] == [(1, e) for e in range(2, 11)], "the teacher goes on from its 3rd epoch"
    assert saved[9:] == [(0, 1), (0, 2)] + [(1, e) for e in range(1, 11)], "then the whole student"
    np.testing.assert_allclose(resumed.predict_proba(data.texts[:20]), ref.predict_proba(data.texts[:20]), atol=1e-5)
    assert C.load_checkpoint(ck)["data_sha256"] != data.fingerprint()["sha256"], "the student's checkpoint, not the teacher's"

    # killed between saving the teacher's probabilities and clearing its epoch files: resume clears them
    ck2 = tmp_path / "ck2"
    monkeypatch.setattr(S, "clear_checkpoint", lambda d: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        um.self_train(data, encoder=None, texts=unlabelled, teacher="self", checkpoint_dir=ck2, **opts)
    assert (ck2 / "teacher.npz").is_file() and C.load_checkpoint(ck2)["data_sha256"] == data.fingerprint()["sha256"]
    monkeypatch.setattr(S, "clear_checkpoint", C.clear_checkpoint)
    saved.clear()
    again = um.self_train(data, encoder=None, texts=unlabelled, teacher="self", checkpoint_dir=ck2, resume=True, **opts)
    assert saved == [(0, 1), (0, 2)] + [(1, e) for e in range(1, 11)], "the student from scratch, the teacher not again"
    np.testing.assert_allclose(again.predict_proba(data.texts[:20]), ref.predict_proba(data.texts[:20]), atol=1e-5)


class RecordingTeacher(CueTeacher):
    """The cue teacher, keeping the texts it was asked to score."""

    def predict_proba(self, texts):
        self.seen = list(texts)
        return super().predict_proba(texts)


def test_max_texts_gives_the_student_a_seeded_sample_of_the_unlabelled_texts(data) -> None:
    unlabelled = [f"{t} number {i}" for i, t in enumerate(make_frame(60, seed=11)["text"])]
    opts = dict(FAST_CLF, arch=TINY)
    seen = []
    for seed in (0, 0, 1):
        teacher = RecordingTeacher()
        um.self_train(data, encoder=None, texts=unlabelled, teacher=teacher, max_texts=25, seed=seed, **opts)
        seen.append(teacher.seen)
    assert len(seen[0]) == 25 and set(seen[0]) < set(unlabelled)
    assert seen[0] == sorted(seen[0], key=unlabelled.index), "the sample keeps the texts' order"
    assert seen[0] == seen[1] and seen[0] != seen[2], "the classifier's seed draws the sample"
    teacher = RecordingTeacher()
    um.self_train(data, encoder=None, texts=unlabelled[:10], teacher=teacher, max_texts=25, **opts)
    assert teacher.seen == unlabelled[:10], "fewer texts than max_texts: all of them"
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"max_texts must be a positive int or None, got"):
            um.self_train(data, encoder=None, texts=unlabelled, teacher=teacher, max_texts=bad)


# ---------------------------------------------------------------------- run.self_train = "auto"
from ulmfit_ml.training.selftrain import AUTO_MAX_LABELLED, AUTO_TEXTS, self_train_plan  # noqa: E402


@pytest.mark.parametrize("kwargs, teacher, max_texts, reason", [
    # a small frame with unlabelled texts: the blend's student on 2,000 of them
    (dict(n_train=400, n_unlabelled=30_000, multilabel=True), "blend", AUTO_TEXTS,
     r"^self_train = 'auto': few labels \(400 labelled training texts <= 5,000\), a student of the ULMFiT \+ TF-IDF "
     r"blend on 2,000 unlabelled texts; self_train = 'none' turns it off$"),
    (dict(n_train=AUTO_MAX_LABELLED, n_unlabelled=700, multilabel=True), "blend", AUTO_TEXTS, r"on 700 unlabelled texts"),
    # a large frame: the classifier alone
    (dict(n_train=AUTO_MAX_LABELLED + 1, n_unlabelled=30_000, multilabel=True), None, None,
     r"^self_train = 'auto': the classifier alone; 5,001 labelled training texts \(> 5,000\)$"),
    (dict(n_train=400, n_unlabelled=0, multilabel=True), None, None, r"the classifier alone; no unlabelled texts \(run.extra_texts\)"),
    (dict(n_train=400, n_unlabelled=50, multilabel=False), None, None, r"the classifier alone; the targets are not multi-label"),
    (dict(n_train=400, n_unlabelled=50, multilabel=True, distributed=True), None, None, r"the classifier alone; a distributed run"),
])
def test_auto_self_training_is_chosen_by_the_labelled_size(kwargs, teacher, max_texts, reason) -> None:
    plan = self_train_plan("auto", **kwargs)
    assert (plan.teacher, plan.max_texts) == (teacher, max_texts)
    assert re.search(reason, plan.reason), plan.reason


@pytest.mark.parametrize("mode, teacher", [("blend", "blend"), ("self", "self"), ("none", None), (None, None)])
def test_explicit_self_train_modes_ignore_the_size(mode, teacher) -> None:
    for n_train in (10, 100_000):
        plan = self_train_plan(mode, n_train=n_train, n_unlabelled=5, multilabel=True)
        assert (plan.teacher, plan.max_texts) == (teacher, None)
