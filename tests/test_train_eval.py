"""Periodic evaluation during training: logged FIDs and the best-FID checkpoint (collapse guard)."""

import json
from dataclasses import replace

import pytest

from facegan import checkpoint
from facegan.metrics import evaluate as ev_mod
from facegan.train.harness import resume_config
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
