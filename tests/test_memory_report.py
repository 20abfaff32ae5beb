"""MemoryReport: JSON round trip, units in field names, invariants, rendering, the timeline plot, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from torch import nn

from modelmeter.analysis.memory import memory_profile
from modelmeter.report.memory import CATEGORIES, MemoryReport


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture(scope="module")
def train_report() -> MemoryReport:
    return memory_profile(mlp(), torch.randn(2, 8), train=True, optimizer="adamw", batch_sizes=[1, 2], fits=6000)


def test_to_dict_round_trip_and_units(train_report: MemoryReport) -> None:
    d = json.loads(json.dumps(train_report.to_dict()))
    assert MemoryReport.from_dict(d) == train_report
    sizes = [k for k in d if k.endswith("_bytes")]
    assert {"peak_bytes", "params_bytes", "gradients_bytes", "optimizer_state_bytes", "steady_peak_bytes",
            "activation_peak_bytes", "master_weights_bytes"} <= set(sizes)
    assert set(d["budget"][0]) >= {"params_bytes", "sum_bytes", "peak_bytes", "batch", "fits"}
    assert train_report.to_dict(include_timeline=False)["timeline"] is None


def test_timeline_invariants(train_report: MemoryReport) -> None:
    tl = train_report.timeline
    n = train_report.ops
    assert len(tl.total_bytes) == n and tl.categories == list(CATEGORIES)
    for i in range(n):  # categories sum to the total at every op
        assert sum(tl.bytes_by_category[c][i] for c in CATEGORIES) == tl.total_bytes[i]
    assert max(tl.total_bytes) == train_report.peak_bytes == tl.total_bytes[train_report.peak.event_index]
    assert sum(train_report.peak.by_category_bytes.values()) == train_report.peak_bytes
    # parameters, buffers and inputs are constant through the run
    for c in ("parameters", "buffers", "inputs"):
        assert len(set(tl.bytes_by_category[c])) == 1
    # phases tile the run in order
    spans = tl.phases
    assert [s.phase for s in spans] == ["forward", "loss", "backward", "optimizer"]
    assert spans[0].first == 0 and spans[-1].last == n - 1
    assert all(a.last + 1 == b.first for a, b in zip(spans, spans[1:]))
    # largest tensors alive at the peak, by size, none of them parameters
    sizes = [t.size_bytes for t in train_report.largest_at_peak]
    assert sizes == sorted(sizes, reverse=True)
    assert all(t.category not in ("parameters", "buffers") for t in train_report.largest_at_peak)


def test_rich_rendering_mentions_the_essentials(train_report: MemoryReport) -> None:
    console = Console(width=160, record=True, color_system=None)
    console.print(train_report)
    text = console.export_text()
    for needle in ("peak (this step)", "peak (steady state)", "largest tensors alive at the peak",
                   "memory budget per batch size", "largest batch that fits", f"{train_report.peak_bytes:,}"):
        assert needle in text


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_plot_writes_a_file(train_report: MemoryReport, tmp_path, ext: str) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / f"timeline.{ext}"
    assert train_report.plot(str(path)) == str(path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") if ext == "png" else b"<svg" in data[:2000]
    if ext == "svg":
        assert b"peak" in data  # the peak annotation


def test_plot_bad_path(train_report: MemoryReport, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from modelmeter.errors import InputError

    with pytest.raises(InputError, match="cannot write"):
        train_report.plot(str(tmp_path / "missing-dir" / "x.png"))


def test_cli_memory_command(tmp_path, capsys) -> None:
    from modelmeter.cli import main

    out = tmp_path / "mem.json"
    plot = tmp_path / "mem.svg"
    rc = main(["memory", "torchvision:resnet18", "--train", "--optimizer", "sgd", "--batch", "1,2",
               "--fits", "1GiB", "--json", str(out), "--plot", str(plot), "--no-timeline"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "resnet18" in text and "largest batch that fits" in text
    d = json.loads(out.read_text())
    assert d["schema"] == "modelmeter.memory/1"
    assert d["timeline"] is None and [b["batch"] for b in d["budget"]] == [1, 2]
    assert d["fit"]["max_batch"] >= 2 and d["train"] is True
    assert plot.exists()


def test_cli_memory_kv_and_errors(capsys) -> None:
    from modelmeter.cli import main

    assert main(["memory", "hf:llama-tiny", "--fits", "1GiB", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    kv = d["kv_cache"]
    assert kv["bytes_per_token"] == kv["layers"] * 2 * kv["kv_heads"] * kv["head_dim"] * kv["itemsize_bytes"]
    assert main(["memory", "torchvision:resnet18", "--optimizer", "adam"]) == 2  # needs --train
    assert "--train" in capsys.readouterr().err
    assert main(["memory", "torchvision:resnet18", "--fits", "lots"]) == 2
    with pytest.raises(SystemExit):
        main(["memory", "torchvision:resnet18", "--batch", "0,2"])


def test_memory_section_attached_to_a_profile_report() -> None:
    # the same capture feeds the counts and the memory: attach with dataclasses.replace
    import dataclasses

    from modelmeter.analysis.memory import analyze_memory, capture_with_lifetimes
    from modelmeter.analysis.totals import build_report
    from modelmeter.report.model import Report

    m = mlp()
    trace, records = capture_with_lifetimes(m, torch.randn(2, 8), train=True, optimizer="sgd")
    report = build_report(m, trace)
    report = dataclasses.replace(report, memory=analyze_memory(m, trace, records))
    assert report.totals.ops == report.memory.ops  # one trace, both analyses
    d = json.loads(report.to_json())
    assert d["memory"]["peak_bytes"] == report.memory.peak_bytes
    assert Report.from_dict(d).memory == report.memory  # rebuilt as a MemoryReport
    console = Console(width=160, record=True, color_system=None)
    from modelmeter.report.render import report_renderable

    console.print(report_renderable(report))
    assert "peak (this step)" in console.export_text()
