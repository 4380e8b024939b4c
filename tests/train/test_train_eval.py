"""Periodic evaluation during training: logged FIDs and the best-FID checkpoint (collapse guard)."""

import json
from dataclasses import replace

import pytest

from facegan import checkpoint
from facegan.errors import FaceganError
from facegan.metrics import evaluate as ev_mod
from facegan.train.toolbox import resume_config
from facegan.train.loop import train


class _ScriptedEvaluator:
    """Stands in for Inception: returns a scripted FID sequence, so the test needs no weights."""

    fids = [50.0, 30.0, 40.0, 20.0, 35.0, 36.0]
    calls = 0

    def __init__(self, *a, **k):
        pass

    def of_generator(self, G, n, names, seed=0, out_dir=None):
        fid = self.fids[_ScriptedEvaluator.calls]
        _ScriptedEvaluator.calls += 1
        return {"fid": fid, "kid_mean": fid / 1000, "kid_std": 0.001}


@pytest.fixture
def scripted(monkeypatch):
    _ScriptedEvaluator.calls = 0
    monkeypatch.setattr(ev_mod, "Evaluator", _ScriptedEvaluator)


@pytest.mark.slow
def test_eval_every_logs_fid_and_keeps_best_checkpoint(tiny_cfg, scripted):
    cfg = replace(tiny_cfg, eval_every=2, eval_n=8)
    train(cfg, progress=False)
    recs = [json.loads(s) for s in open(cfg.out + "/metrics.jsonl")]
    evals = [r for r in recs if "fid" in r]
    assert [(r["step"], r["fid"]) for r in evals] == [(2, 50.0), (4, 30.0), (6, 40.0), (8, 20.0)]
    tensors, meta = checkpoint.load(checkpoint.find(cfg.out + "/checkpoints/best.safetensors"))
    assert meta["step"] == 8 and meta["fid"] == 20.0 and any(k.startswith("G.") for k in tensors)
    # keep=2 prunes numbered checkpoints only
    assert (checkpoint.list_checkpoints(cfg.out)[0].parent / "best.safetensors").is_file()


def test_best_fid_survives_resume(tiny_cfg, scripted):
    cfg = replace(tiny_cfg, eval_every=2, eval_n=8, max_images=16 * 4)
    train(cfg, progress=False)  # FIDs 50, 30 → best at step 4
    assert checkpoint.best_fid(cfg.out) == 30.0
    train(resume_config(cfg.out, max_images=16 * 8), resume=True, progress=False)  # 40, 20
    assert checkpoint.best_fid(cfg.out) == 20.0
    assert checkpoint.load(cfg.out + "/checkpoints/best.safetensors")[1]["step"] == 8


def test_eval_metrics_choose_what_is_logged_and_must_include_fid(tiny_cfg, monkeypatch):
    """--eval-metrics reaches the evaluator and every score it returns is logged; a list without FID
    (the best checkpoint is kept by it) or with an unknown name is one line before any work."""
    asked = []

    class Recording(_ScriptedEvaluator):
        def of_generator(self, G, n, names, seed=0, out_dir=None):
            asked.append(list(names))
            return {"fid": 10.0 + len(asked), "swd": 5.0, "swd_16": 5.0, "n_real": 128.0, "n_fake": 8.0,
                    "seconds_metrics": 0.1}

    monkeypatch.setattr(ev_mod, "Evaluator", Recording)
    cfg = replace(tiny_cfg, eval_every=4, eval_n=8, eval_metrics="fid,swd")
    train(cfg, progress=False)
    evals = [json.loads(s) for s in open(cfg.out + "/metrics.jsonl") if '"fid"' in s]
    assert asked == [["fid", "swd"]] * 2
    assert [(r["fid"], r["swd"], r["swd_16"]) for r in evals] == [(11.0, 5.0, 5.0), (12.0, 5.0, 5.0)]
    assert not any("seconds_metrics" in r or "n_real" in r for r in evals)
    for bad, msg in (("kid,swd", "must include fid"), ("fid,nope", "unknown metric")):
        with pytest.raises(FaceganError, match=msg):
            train(replace(cfg, eval_metrics=bad, out=cfg.out + "-bad"), progress=False)
