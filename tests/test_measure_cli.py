"""``modelmeter bench`` through the CLI entry point, on a tiny factory model."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from modelmeter.cli import main

FACTORY = """
import torch
from torch import nn

def make(batch=1, **kw):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), torch.randn(batch, 16)
"""

QUICK = ["--budget-s", "0.03", "--warmup-s", "0.001", "--idle-s", "0", "--energy-window-s", "0.01"]


@pytest.fixture
def spec(tmp_path):
    f = tmp_path / "tiny.py"
    f.write_text(FACTORY)
    return f"{f}:make"


def test_bench_sweep_with_json(spec, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["bench", spec, "--batch", "1,2", "--peak-tflops", "0.001", "--energy", "--json", str(out), *QUICK])
    assert rc == 0
    text = capsys.readouterr().out
    assert "throughput sweep" in text and "best" in text and "MFU" in text and "energy" in text
    d = json.loads(out.read_text())
    b = d["benchmark"]
    assert b["schema"] == "modelmeter.benchmark/1"
    assert [r["batch"] for r in b["runs"]] == [1, 2]
    run = b["runs"][0]
    assert len(run["timing"]["samples_s"]) == run["timing"]["stats"]["n"] >= 5
    # forward MACs per sample 16*32 + 32*4 = 640 -> 1280 matmul FLOPs
    assert run["utilization"]["model_flops"] == 1280
    assert b["peak"]["kind"] == "override" and b["sweep"]["best_batch"] in (1, 2)
    assert run["energy"]["energy_per_call_j"] is not None
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(resources.files("modelmeter.report").joinpath("schema.json").read_text())
    jsonschema.validate(d, schema)
    from modelmeter.report.benchmark import Benchmark
    from modelmeter.report.model import Report

    back = Report.from_dict(d).benchmark
    assert isinstance(back, Benchmark) and back.to_dict() == b


def test_bench_training_step(spec, capsys):
    rc = main(["bench", spec, "--train", "--optimizer", "adam", "--threads", "1", "--peak-tflops", "0.001", *QUICK])
    assert rc == 0
    text = capsys.readouterr().out
    assert "training step" in text and "1 threads" in text


def test_bench_user_errors_are_one_line(spec, capsys):
    assert main(["bench", spec, "--budget-s", "0", *QUICK[2:]]) == 2
    assert "--budget-s must be > 0" in capsys.readouterr().err
    assert main(["bench", spec, "--device", "meta", *QUICK]) == 2
    assert "meta device" in capsys.readouterr().err
    assert main(["bench", spec, "--peak-tflops", "-1", *QUICK]) == 2
    assert "--peak-tflops" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", spec, "--batch", "0,2"])
    assert "batch sizes must be integers >= 1" in capsys.readouterr().err


def test_bench_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "bench" in capsys.readouterr().out


def test_progress_bar_follows_the_harness_callback():
    import io

    from rich.console import Console

    from modelmeter.cli.bench_cmd import _ProgressBar
    from modelmeter.measure import HarnessSettings, measure

    con = Console(file=io.StringIO(), force_terminal=True, width=100)
    with _ProgressBar(con) as bar:
        measure(lambda: sum(range(1000)), settings=HarnessSettings(budget_s=0.02, warmup_s=0.001), label="fwd",
                progress=bar)
        assert bar.key == ("fwd", "timed")
        task = bar.progress.tasks[-1]
        assert task.description == "fwd timed" and task.fields["n"] >= 5
