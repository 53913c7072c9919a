"""The ``ulmfit-ml`` argument parser: sub-commands, their flags, and flags -> config overrides."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from ..utils.config import OUTPUTS, SELF_TRAIN_MODES
from ..utils.config_files import load_config_file, parse_set, resolve_config, sections_parser
from ..utils.version import __version__

__all__ = ["build_parser", "parse_args", "config_from_args", "flag_overrides", "FLAG_KEYS", "COMMAND_SECTIONS"]

#: the config sections each training command reads (and takes as --SECTION.KEY flags)
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {"lm": ("data", "lm", "classifier", "run", "pretrain"),
                                                "train": ("data", "lm", "classifier", "run", "pretrain"),
                                                "cv": ("data", "lm", "classifier", "run", "pretrain"),
                                                "pretrain": ("pretrain",)}


def _comma_list(kind: type) -> Any:
    def parse(s: str) -> list:
        try:
            return [kind(x.strip()) for x in s.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {s!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


#: flag dest -> the config keys it sets
FLAG_KEYS: dict[str, list[tuple[str, str]]] = {
    "train": [("run", "train")], "out": [("run", "out")], "lm": [("run", "encoder")], "seed": [("run", "seed")],
    "overwrite": [("run", "overwrite")], "folds": [("run", "folds")], "test": [("run", "test")],
    "id_col": [("run", "id_col")], "text_col": [("data", "text_col")], "label_delim": [("data", "label_delim")],
    "label_col": [("data", "label_col")], "label_cols": [("data", "label_cols")],
    "category_cols": [("data", "category_cols")], "target_cols": [("data", "target_cols")],
    "arch": [("lm", "arch")], "lm_epochs": [("lm", "epochs")], "epochs": [("classifier", "epochs")],
    "device": [("lm", "device"), ("classifier", "device")], "quiet": [("lm", "quiet"), ("classifier", "quiet")],
    "sep": [("run", "sep")], "no_header": [("run", "header")], "extra_texts": [("run", "extra_texts")],
    "self_train": [("run", "self_train")],
}


_TARGET_FLAGS = ("label_col", "label_cols", "category_cols", "target_cols")


def flag_overrides(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for dest, keys in FLAG_KEYS.items():
        v = getattr(args, dest, None)
        if v is None or v is False:
            continue
        if dest == "no_header":  # --no-header sets run.header = false
            v = False
        for section, key in keys:
            out.append((section, key, v))
        if dest in _TARGET_FLAGS:  # one target kind on the command line replaces the config file's
            out += [("data", k, None) for k in _TARGET_FLAGS if k != dest]
    return out


def config_from_args(args: argparse.Namespace, *, base: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The config dataclasses of a training command: its config file, ``--set`` items, named
    flags and ``--SECTION.KEY`` flags, layered by :func:`~ulmfit_ml.utils.config_files.resolve_config`."""
    file_sections = base if base is not None else (load_config_file(args.config) if getattr(args, "config", None) else {})
    sets = [parse_set(s) for s in (getattr(args, "set", None) or [])]
    return resolve_config(file_sections, sets + flag_overrides(args), flags=getattr(args, "config_flags", None) or [])


class _HelpConfig(argparse.Action):
    """``--help-config``: print the flags jsonargparse generates for the command's sections, exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, const: tuple[str, ...], help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, const=const, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        sections_parser(self.const).print_help()
        parser.exit(0)


def _config_flags(extras: list[str], sections: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split argparse's leftovers into ``--SECTION.KEY[=VALUE] [VALUE]`` flags (for jsonargparse)
    and the truly unrecognised ones."""
    flags: list[str] = []
    bad: list[str] = []
    i = 0
    while i < len(extras):
        tok = extras[i]
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else ""
        if sections and "." in name:  # an unknown section is named, with the close match, by resolve_config
            flags.append(tok)
            if "=" not in tok and i + 1 < len(extras) and not extras[i + 1].startswith("--"):
                flags.append(extras[i + 1])
                i += 1
        else:
            bad.append(tok)
        i += 1
    return flags, bad


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args``, except that a training command's ``--SECTION.KEY=VALUE`` flags
    (listed by ``--help-config``) are kept in ``args.config_flags`` for jsonargparse."""
    args, extras = parser.parse_known_args(argv)
    sections = COMMAND_SECTIONS.get(getattr(args, "command_name", ""), ())
    flags, bad = _config_flags(extras, sections)
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.config_flags = flags
    return args


_EPILOG = """\
config file (TOML) example:
  [data]
  text_col = "text"
  label_col = "labels"          # or label_cols = ["billing", "shipping", ...]
  label_delim = ";"
  [lm]
  arch = "cpu"                  # tiny | small | cpu | paper, or {emb_sz = 200, n_hid = 512, n_layers = 2}
  epochs = 2
  [classifier]
  epochs = [1, 1, 1, 2]
  lrs = [2e-2, 1e-2, 5e-3, 1e-3]
  [run]
  train = "data/train.csv"
  out = "runs/exp1"

every config key is a flag too: --SECTION.KEY=VALUE, e.g. --classifier.epochs=[1,1] --lm.lr=1e-3
(generated from the config dataclasses by jsonargparse; --help-config lists them with types and defaults).

precedence: defaults < --config < --set SECTION.KEY=VALUE < named flags < --SECTION.KEY=VALUE.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``ulmfit-ml`` argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="ulmfit-ml", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Multi-label text classification with ULMFiT (fastai AWD-LSTM): fine-tune a language model, "
                    "train and cross-validate classifiers, evaluate and predict from the shell.",
        epilog="Run `ulmfit-ml COMMAND --help` for the options of each command.\n\n" + _EPILOG)
    parser.add_argument("--version", action="version", version=f"ulmfit-ml {__version__}")
    common, cfg, data, lmf, reuse, clf = (_general_flags(), _config_file_flags(), _data_flags(), _lm_flags(),
                                          _reuse_flag(), _classifier_flags())
    scoring = _scoring_args()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_lm(sub, [common, cfg, data, lmf])
    _add_train(sub, [common, cfg, data, lmf, reuse, clf])
    _add_evaluate(sub, [common, scoring])
    _add_predict(sub, [common, scoring])
    _add_cv(sub, [common, cfg, data, lmf, reuse, clf])
    _add_pretrain(sub, [common])
    return parser


# ---------------------------------------------------------------------- flags shared by several commands
def _general_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("general")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    g.add_argument("--quiet", action="store_true", default=None,
                   help="no progress bars or log lines on the terminal (run.log still gets them)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    return common


def _config_file_flags() -> argparse.ArgumentParser:
    cfg = argparse.ArgumentParser(add_help=False)
    g = cfg.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", help="experiment config (.toml, or .json) with [data] [lm] [classifier] [run]")
    g.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config key, VALUE in TOML syntax (repeatable): --set classifier.epochs=[1,1] "
                        "--set lm.lr=1e-3 --set data.text_col=body")
    g.add_argument("--seed", type=int, help="seed of the split, the LM and the classifier ([run] seed)")
    g.add_argument("--out", metavar="DIR", help="run directory to write ([run] out; default runs/<command>-<time>)")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing run directory (only one ulmfit_ml wrote; never the current directory "
                        "or one holding an input)")
    g.add_argument("--help-config", action=_HelpConfig, const=COMMAND_SECTIONS["train"],
                   help="list every --SECTION.KEY=VALUE flag (one per config key) with its type and default")
    return cfg


def _data_flags() -> argparse.ArgumentParser:
    data = argparse.ArgumentParser(add_help=False)
    g = data.add_argument_group("data")
    g.add_argument("--train", metavar="FILE", help="labelled data: .csv .tsv .parquet .jsonl ([run] train)")
    g.add_argument("--text-col", help="text column ([data] text_col)")
    one = g.add_mutually_exclusive_group()  # two label formats at once: argparse refuses (exit 2)
    one.add_argument("--label-col", help="one delimited label column, e.g. 'a;b' ([data] label_col)")
    one.add_argument("--label-cols", type=_comma_list(str), metavar="A,B,...",
                     help="one 0/1 column per label ([data] label_cols)")
    one.add_argument("--category-cols", type=_comma_list(str), metavar="A,B,...",
                     help="columns that each hold one category: one softmax head per column ([data] category_cols)")
    one.add_argument("--target-cols", type=_comma_list(str), metavar="A,B,...",
                     help="numeric columns to predict (regression) ([data] target_cols)")
    g.add_argument("--extra-texts", type=_comma_list(str), metavar="FILE,...",
                   help="unlabelled files of texts (same text column): they join the LM corpus ([run] extra_texts)")
    g.add_argument("--label-delim", help="delimiter of --label-col (default ';')")
    g.add_argument("--sep", help="separator of the CSV/TSV files read (--train, --test, extra texts; default ',' or "
                                 "a tab for .tsv), e.g. --sep ';' ([run] sep)")
    g.add_argument("--no-header", action="store_true", default=None,
                   help="those CSV/TSV files have no header row: columns are named 0, 1, ... (e.g. --text-col 1 "
                        "--label-col 2) ([run] header = false)")
    return data


def _lm_flags() -> argparse.ArgumentParser:
    lmf = argparse.ArgumentParser(add_help=False)
    g = lmf.add_argument_group("language model")
    g.add_argument("--arch", help="AWD-LSTM size: tiny, small, cpu or paper ([lm] arch)")
    g.add_argument("--lm-epochs", type=int, metavar="N", help="LM fine-tuning epochs after the frozen one "
                   "([lm] epochs; default: 2, or 1 above 0.67M tokens)")
    return lmf


def _reuse_flag() -> argparse.ArgumentParser:
    reuse = argparse.ArgumentParser(add_help=False)
    reuse.add_argument("--lm", metavar="DIR", help="reuse a saved language model (an `lm` run directory or its lm/) "
                                                   "instead of fine-tuning one ([run] lm)")
    return reuse


def _classifier_flags() -> argparse.ArgumentParser:
    clf = argparse.ArgumentParser(add_help=False)
    g = clf.add_argument_group("classifier")
    g.add_argument("--epochs", type=_comma_list(int), metavar="E1,E2,...",
                   help="epochs of each gradual-unfreezing stage ([classifier] epochs; as many as unfreeze/lrs; "
                   "default: by the training split's size, 20 for small data)")
    return clf


def _scoring_args() -> argparse.ArgumentParser:
    """evaluate and predict: a saved model scores a table file."""
    scoring = argparse.ArgumentParser(add_help=False)
    scoring.add_argument("model", metavar="MODEL", help="a saved model directory, a train run directory, or a cv run "
                                                        "directory with saved fold models (probabilities averaged)")
    scoring.add_argument("input", metavar="FILE", help="the table to score (.csv .tsv .parquet .jsonl); evaluate: "
                                                       "with the training label columns")
    g = scoring.add_argument_group("input file")
    g.add_argument("--text-col", help="text column (default: the model's training text column)")
    g.add_argument("--threshold", type=float, help="one threshold for every label (default: the model's tuned ones)")
    g.add_argument("--sep", help="CSV/TSV input separator (default ',' or a tab for .tsv), e.g. --sep ';'")
    g.add_argument("--no-header", action="store_true", help="the CSV/TSV input has no header row: columns are "
                                                             "named 0, 1, ... (e.g. --text-col 1)")
    return scoring


# ---------------------------------------------------------------------- the sub-commands
_FMT = argparse.RawDescriptionHelpFormatter


def _add_lm(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lm", parents=parents, formatter_class=_FMT, epilog=_EPILOG,
                       help="fine-tune a language model on the texts of a file",
                       description="Fine-tune an AWD-LSTM language model on the texts of --train (labels are not "
                                   "needed). Writes a run directory with lm/ (reuse it with `train --lm DIR`), "
                                   "config, environment, history.csv and metrics.json.")
    p.set_defaults(command_name="lm")


def _add_train(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", parents=parents, formatter_class=_FMT, epilog=_EPILOG,
                       help="fine-tune the LM and train the classifier into a run directory",
                       description="ULMFiT end to end: fine-tune the LM on all texts (or reuse --lm), train the "
                                   "classifier with gradual unfreezing, tune thresholds on the validation split, "
                                   "save everything in a run directory (config.toml, data.json, environment.json, "
                                   "history.csv, metrics.json, plots/, model/, run.log). A checkpoint is kept after "
                                   "every epoch: continue an interrupted run with --resume RUN_DIR.")
    p.add_argument("--self-train", choices=SELF_TRAIN_MODES, metavar="MODE",
                   help="few labels: train the classifier as a student of a teacher (blend: ULMFiT + TF-IDF, or self) "
                        "on the --extra-texts, scored by the teacher ([run] self_train). auto (the default): blend "
                        "when there are --extra-texts, multi-label targets and at most 5,000 labelled training "
                        "texts, on 2,000 of the extra texts; none: the classifier alone")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last completed epoch "
                                                       "(its config.json is used; only --quiet/--device may change)")
    p.set_defaults(command_name="train")


def _add_evaluate(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("evaluate", parents=parents, formatter_class=_FMT,
                       help="metrics report of a saved model on a labelled file",
                       description="Compute the full multi-label report (micro/macro F1, ROC-AUC, precision@k, "
                                   "per-label table) of MODEL on a labelled file with the training label columns.")
    p.add_argument("--out", metavar="FILE.json", help="write the report (summary + per label) as JSON")
    p.add_argument("--per-label", metavar="FILE.csv", help="write the per-label table")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out/--per-label files (never the input)")
    p.set_defaults(command_name="evaluate")


def _add_predict(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", parents=parents, formatter_class=_FMT,
                       help="predict probabilities / labels for an unlabelled file",
                       description="Predict every row of FILE. Formats: proba (row, [id], proba_<label>...), labels "
                                   "(row, [id], labels), both, submission (id + one probability column per label, "
                                   "named by label, in training label order: the Kaggle shape; needs --id-col).",
                       epilog="example: ulmfit-ml predict runs/exp1 test.csv --out submission.csv "
                              "--format submission --id-col id")
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="output table (.csv, .tsv, .jsonl: written chunk by chunk and resumable; .parquet)")
    p.add_argument("--format", choices=OUTPUTS, default="both",
                   help="what to write (default: both)")
    p.add_argument("--id-col", help="column copied to the output (required by --format submission)")
    p.add_argument("--at-least-one", action="store_true", help="give each text its most probable label when none passes")
    p.add_argument("--bs", type=int, default=128, help="prediction batch size (default 128)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 LSTM/linear weights on CPU: about 2x faster "
                                                       "(quality cost in bench/INFERENCE.md)")
    p.add_argument("--no-resume", action="store_true", help="restart a large CSV prediction instead of continuing it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the input)")
    g = p.add_argument_group("on a Dask cluster (pip install 'ulmfit_ml[dask]'; -o is then a directory of parts)")
    one = g.add_mutually_exclusive_group()
    one.add_argument("--dask-workers", type=int, metavar="N", help="start a local Dask cluster of N worker processes")
    one.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask cluster, e.g. tcp://host:8786")
    g.add_argument("--blocksize", type=int, metavar="BYTES", help="bytes of input per partition (default 64000000)")
    p.set_defaults(command_name="predict")


def _add_cv(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cv", parents=parents, formatter_class=_FMT, epilog=_EPILOG,
                       help="k-fold cross-validation with out-of-fold predictions",
                       description="Multi-label stratified k-fold CV (iterative stratification). One LM is "
                                   "fine-tuned once on all texts and reused by every fold. Writes oof.csv "
                                   "(out-of-fold probabilities), cv_metrics.csv (one row per fold), metrics.json "
                                   "(mean, std, OOF metrics, OOF-tuned thresholds) and, with --test, "
                                   "test_predictions.csv from the average of the fold models.")
    g = p.add_argument_group("cross-validation")
    g.add_argument("--folds", type=int, help="number of folds ([run] folds, default 5)")
    g.add_argument("--test", metavar="FILE", help="unlabelled file to predict with the averaged fold models ([run] test)")
    g.add_argument("--id-col", help="id column for oof.csv and the test predictions ([run] id_col)")
    p.set_defaults(command_name="cv")


def _add_pretrain(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pretrain", parents=parents, formatter_class=_FMT,
                       help="pretrain a general-domain language model on a raw text corpus",
                       description="Pretrain an AWD-LSTM LM (from scratch, or on from --init-from) on a general-domain corpus (.txt files "
                                   "with one paragraph per line, or folders of them): tokenised once into cached "
                                   "memory-mapped ids, trained with a sampled softmax, checkpointed to "
                                   "OUT/checkpoint every [pretrain] checkpoint_every seconds, saved to OUT/model. "
                                   "Fine-tune from it with --set lm.pretrained=\"OUT/model\". Options come from the "
                                   "[pretrain] section of --config, --set pretrain.KEY=VALUE and the flags.")
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help=".txt file(s) or folder(s) of .txt files")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: DIR/checkpoint while training, DIR/model at the end")
    p.add_argument("--config", metavar="FILE", help="config file; only its [pretrain] section is used")
    p.add_argument("--help-config", action=_HelpConfig, const=COMMAND_SECTIONS["pretrain"],
                   help="list every --pretrain.KEY=VALUE flag with its type and default")
    p.add_argument("--set", action="append", metavar="pretrain.KEY=VALUE", help="override a [pretrain] key (repeatable)")
    p.add_argument("--arch", help="AWD-LSTM size: tiny, small, cpu or paper")
    p.add_argument("--epochs", type=float, metavar="N", help="passes over the corpus, fractions allowed ([pretrain] epochs)")
    p.add_argument("--max-tokens", type=int, metavar="N", help="training tokens for the whole schedule ([pretrain] max_tokens)")
    p.add_argument("--backwards", action="store_true", default=None, help="a backward language model ([pretrain] backwards)")
    p.add_argument("--seed", type=int, help="random seed ([pretrain] seed)")
    p.add_argument("--init-from", metavar="LM", help="continue pretraining a language model: a shipped name (en-small) "
                                                     "or a saved LM directory ([pretrain] init_from)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint after an interruption")
    p.set_defaults(command_name="pretrain")
