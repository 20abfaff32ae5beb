"""Building the native recorder: turned off, no compiler, a failed build (none of these need it built)."""

from __future__ import annotations

import torch
from torch import nn

import modelmeter as mm
from modelmeter.capture import native


def _fresh(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(native, "_STATE", {})  # forget this process's loaded recorder
    monkeypatch.setenv("MODELMETER_CACHE", str(tmp_path))


def test_turned_off(monkeypatch, tmp_path) -> None:
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setenv("MODELMETER_NATIVE", "0")
    assert native.load() is None
    assert native.status().startswith("off (MODELMETER_NATIVE=0)")
    r = mm.profile(nn.Linear(4, 3), torch.randn(2, 4), device="cpu")
    assert r.provenance.capture == "dispatch-mode"
    assert r.totals.macs == 2 * 4 * 3  # 24: the count does not depend on the recorder


def test_a_failed_build_falls_back_and_is_not_retried(monkeypatch, tmp_path) -> None:
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails at once
    assert native.load() is None
    assert "the C++ compiler failed" in native.status()
    markers = list((tmp_path / "native").glob("*.failed"))
    assert len(markers) == 1
    # another process (a fresh state) reads the marker instead of compiling again
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("CXX", "/nonexistent/c++")  # would fail differently if it were run
    assert native.load() is None
    assert "earlier build" in native.status() and "the C++ compiler failed" in native.status()
    r = mm.profile(nn.Linear(4, 3), torch.randn(2, 4), device="cpu")
    assert r.provenance.capture == "dispatch-mode" and r.totals.macs == 24
