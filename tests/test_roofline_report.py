"""Roofline results as data: JSON form, attachment to the Report, rich rendering, plots, the layer frontier."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from torch import nn

import modelmeter as mm
from modelmeter.analysis.roofline import KVCacheShape, attach, compare_devices, lm_estimate, sweep_batches
from modelmeter.report.roofline import (
    RooflineReport,
    frontier,
    plot_breakdown,
    plot_roofline,
    roofline_renderable,
)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 64)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))  # the add and relu are the block's own ops


def _model() -> nn.Module:
    return nn.Sequential(*[Block() for _ in range(3)], nn.LayerNorm(64))


@pytest.fixture(scope="module")
def rr():
    model = _model()
    sweep, per = sweep_batches(lambda b: mm.profile(model, torch.randn(b, 16, 64), name="mlp"), [1, 64],
                               ["h100-sxm", "a100-80gb"], launch_overhead_s=1e-6)
    base = per[1]
    return RooflineReport(model=base.model, dtype=base.dtype, devices=base.devices, sweep=sweep,
                          notes=["a test note"])


def test_to_dict_is_json_and_carries_the_figures(rr):
    d = json.loads(json.dumps(rr.to_dict()))
    assert d["schema"] == "modelmeter.roofline/1"
    dev = d["devices"][0]
    assert dev["device"]["name"] == "h100-sxm"
    assert dev["predicted_s"] == pytest.approx(rr.devices[0].predicted_s)
    assert dev["bound"] in ("compute", "memory") and "ops" not in dev
    assert {m["path"] for m in dev["modules"]} >= {"", "0", "0.fc1"}
    assert d["sweep"]["batches"] == [1, 64]
    with_ops = rr.to_dict(include_ops=True)
    assert len(with_ops["devices"][0]["ops"]) == rr.devices[0].kernels


def test_attach_puts_the_roofline_in_the_json_report():
    model = _model()
    r = mm.profile(model, torch.randn(2, 16, 64))
    rep = attach(r, compare_devices(r, ["l4"]))
    d = json.loads(rep.to_json())
    assert d["roofline"]["devices"][0]["device"]["name"] == "l4"


def test_frontier_covers_the_model_once(rr):
    for d in rr.devices:
        rows = frontier(d)
        total = sum(m.own_time_s if own else m.time_s for _, m, own in rows)
        assert total == pytest.approx(d.predicted_s)
        labels = [label for label, _, _ in rows]
        assert labels[:3] == ["0 (own ops)", "0.fc1", "0.fc2"]  # deepest level that fits, model order
        shallow = frontier(d, depth=1)
        assert [label for label, _, _ in shallow] == ["0", "1", "2", "3"]


def test_rich_rendering_lists_devices_modules_sweep_and_notes(rr):
    console = Console(width=200, record=True, color_system=None)
    console.print(rr)
    text = console.export_text()
    for needle in ("h100-sxm", "a100-80gb", "predicted time per module", "0.fc1", "batch sweep", "a test note",
                   "ridge batch"):
        assert needle in text, needle
    console = Console(width=200, record=True, color_system=None)
    console.print(roofline_renderable(rr, depth=1, top=0))
    assert "slowest ops" not in console.export_text()


def test_lm_rendering():
    model = _model()
    pre = mm.profile(model, torch.randn(1, 32, 64))
    step = mm.profile(model, torch.randn(1, 1, 64))
    est, _, dec = lm_estimate(pre, step, KVCacheShape(layers=3, heads=4, kv_heads=2, head_dim=16), "h100-sxm",
                              batch=1, context=32)
    # KV cache: 3 layers x 2 x 2 heads x 16 x 4 bytes (fp32) = 768 B per token, x 32 tokens
    assert est.kv_bytes_per_token == 768 and est.kv_cache_bytes == 768 * 32
    rr = RooflineReport(model="mlp", dtype="fp32", devices=[dec], lm=[est])
    console = Console(width=200, record=True, color_system=None)
    console.print(rr)
    text = console.export_text()
    assert "time to first token" in text and "(768 B/token" in text


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plots_are_written(rr, tmp_path, suffix):
    pytest.importorskip("matplotlib")
    chart = plot_roofline(rr, tmp_path / f"roof.{suffix}")
    bars = plot_breakdown(rr, tmp_path / f"layers.{suffix}")
    for p in (*chart, *bars):
        data = p.read_bytes()
        assert len(data) > 5000
        if suffix == "png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert b"<svg" in data[:500]


def test_plot_rejects_unknown_formats(rr, tmp_path):
    pytest.importorskip("matplotlib")
    from modelmeter.errors import InputError

    with pytest.raises(InputError, match="png"):
        plot_roofline(rr, tmp_path / "roof.gif")
