"""AWD-LSTM sizes: the named presets, the resolved size dict every model is built from, dropout
scaling, and the bound check for counts that allocate memory up front."""
from __future__ import annotations

from typing import Any

from .valuetypes import check_keys

__all__ = ["ARCH_PRESETS", "MAX_ARCH", "resolve_arch", "scale_dropouts", "check_at_most"]

#: Named AWD-LSTM sizes. ``paper`` is fastai's/ULMFiT's (the only size the WikiText-103
#: weights fit); ``cpu`` trains in minutes on two CPU cores; ``tiny`` is for tests.
ARCH_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"emb_sz": 16, "n_hid": 32, "n_layers": 2},
    "small": {"emb_sz": 100, "n_hid": 256, "n_layers": 2},
    "cpu": {"emb_sz": 200, "n_hid": 512, "n_layers": 2},
    "paper": {"emb_sz": 400, "n_hid": 1152, "n_layers": 3},
}

_ARCH_KEYS = {"emb_sz", "n_hid", "n_layers", "output_p", "hidden_p", "input_p", "embed_p", "weight_p"}

#: bounds on the AWD-LSTM sizes, whose weights are allocated at once (paper: 400, 1152, 3)
MAX_ARCH = {"emb_sz": 8192, "n_hid": 8192, "n_layers": 16}


def check_at_most(key: str, value: Any, bound: int, why: str) -> None:
    """Refuse a count above ``bound`` before anything is allocated, naming the key, the value, the bound and
    why: the one wording of every memory bound (config counts, ``arch`` sizes, ``lr_find``'s ``num_it``,
    ``explain``'s ``n_steps``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > bound:
        raise ValueError(f"{key} = {value!r} is more than the limit of {bound:,}: {why}. Use at most {bound:,}.")


def resolve_arch(arch: str | dict[str, Any]) -> dict[str, Any]:
    """Turn a preset name or a partial config dict into an AWD-LSTM size dict.

    Args:
        arch: a key of :data:`ARCH_PRESETS`, or a dict with some of ``emb_sz``, ``n_hid``,
            ``n_layers`` (missing keys come from the ``paper`` preset) and dropout overrides.

    Returns:
        A new dict with at least ``emb_sz``, ``n_hid`` and ``n_layers``.
    """
    if isinstance(arch, str):
        if arch not in ARCH_PRESETS:
            raise ValueError(
                f"Unknown arch preset {arch!r}: expected one of {sorted(ARCH_PRESETS)} "
                "or a dict like {'emb_sz': 400, 'n_hid': 1152, 'n_layers': 3}."
            )
        return dict(ARCH_PRESETS[arch])
    if not isinstance(arch, dict):
        raise TypeError(f"arch must be a preset name or a dict, got {type(arch).__name__}.")
    check_keys(sorted(_ARCH_KEYS), arch, where="arch", error=ValueError)
    out = dict(ARCH_PRESETS["paper"])
    out.update(arch)
    for k in ("emb_sz", "n_hid", "n_layers"):
        if not isinstance(out[k], int) or out[k] < 1:
            raise ValueError(f"arch[{k!r}] must be a positive int, got {out[k]!r}.")
        check_at_most(f"arch[{k!r}]", out[k], MAX_ARCH[k], "the AWD-LSTM's weights are allocated at once (ULMFiT's "
                       "paper size is emb_sz 400, n_hid 1152, n_layers 3)")
    return out


def scale_dropouts(cfg: dict[str, Any], drop_mult: float) -> dict[str, Any]:
    """Multiply every ``*_p`` dropout of an AWD-LSTM config by ``drop_mult`` (as fastai does).

    ``weight_p`` is kept >= 1e-6: with ``weight_p == 0`` fastai's ``WeightDropout`` breaks on
    recent torch (``F.dropout(p=0)`` returns the Parameter itself, which then gets registered
    and the next reset fails), so ``drop_mult=0`` would crash.
    """
    out = dict(cfg)
    for k in out:
        if k.endswith("_p"):
            out[k] = out[k] * drop_mult
    if "weight_p" in out:
        out["weight_p"] = max(out["weight_p"], 1e-6)
    return out
