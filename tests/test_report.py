"""The Report value and its derived forms: JSON (schema-valid, lossless), CSV, Markdown, invariants."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from torch import nn

import modelmeter as mm
from modelmeter.report.export import MODULE_FIELDS, modules_csv, to_markdown, validate
from modelmeter.report.model import Report


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(self.lin(x)) + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.block = Block()
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.block(self.block(self.emb(ids)))  # the same block called twice
        return self.head(h) * 0.5  # functional op in the root's own forward


@pytest.fixture(scope="module")
def reports() -> tuple[Report, Report]:
    ids = torch.zeros(2, 3, dtype=torch.long)
    return mm.profile(Net(), ids), mm.profile(Net(), ids, train=True, optimizer="adamw")


def test_rows_sum_to_totals(reports: tuple[Report, Report]) -> None:
    for r in reports:
        for field in ("macs", "flops", "bytes_read", "bytes_written"):
            own = sum(getattr(m, f"own_{field}") for m in r.modules)
            assert own == getattr(r.totals, field), field
            assert getattr(r.module(""), field) == getattr(r.totals, field)
        assert sum(p.macs for p in r.totals.phases.values()) == r.totals.macs
        assert sum(o.flops for o in r.ops) == r.totals.flops


def test_reused_and_tied(reports: tuple[Report, Report]) -> None:
    r = reports[0]
    # params: emb 10*6 = 60 (head tied: once), block lin 36+6 = 42, norm 6+6 = 12 -> 114
    assert r.totals.params == 114
    assert r.module("block").calls == 2 and r.module("block.lin").calls == 2
    # lin: 2 calls x (6 rows x 6 x 6) = 432 MACs; head: 6 rows x 6 x 10 = 360 MACs
    assert r.module("block.lin").macs == 432
    assert r.module("head").macs == 360
    assert r.totals.macs == 432 + 360
    # the "* 0.5" runs in the root's own forward: 6 x 10 = 60 FLOPs there
    assert r.module("").own_flops == 60


def test_backward_attributed_to_forward_module(reports: tuple[Report, Report]) -> None:
    r = reports[1]
    bw = [e for e in r.events if e.phase == "backward" and e.macs]
    assert {e.module for e in bw} == {"head", "block.lin"}
    # head backward: grad_input (6x10 @ 10x6 = 360) + grad_weight (10x6 @ 6x6 = 360) = 720
    assert sum(e.macs for e in bw if e.module == "head") == 720
    # block.lin, two calls: grad_input and grad_weight each 6x6x6 = 216 per call -> 864
    assert sum(e.macs for e in bw if e.module == "block.lin") == 864


def test_json_round_trip_and_schema(reports: tuple[Report, Report]) -> None:
    for r in reports:
        d = json.loads(r.to_json(include_events=True))
        validate(d)
        assert d["schema"] == "modelmeter.report/1"
        back = Report.from_dict(d)
        assert back == r
        assert back.events == r.events
        assert d["provenance"]["conventions"]["causal"].startswith("only unmasked")


def test_json_rejects_foreign_dict() -> None:
    with pytest.raises(mm.ModelmeterError, match="not a modelmeter report"):
        Report.from_dict({"totals": {}})


def test_csv_one_row_per_module(reports: tuple[Report, Report]) -> None:
    r = reports[0]
    rows = list(csv.DictReader(io.StringIO(modules_csv(r))))
    assert list(rows[0]) == MODULE_FIELDS
    assert [row["path"] for row in rows] == [m.path for m in r.modules]
    assert sum(int(row["own_macs"]) for row in rows) == r.totals.macs


def test_markdown_contains_totals(reports: tuple[Report, Report]) -> None:
    md = to_markdown(reports[0])
    assert "| MACs | 792 | 792 |" in md
    assert "`block.lin`" in md
    assert "None: every op has a FLOP rule." in md


def test_fast_row_builder_makes_the_same_frozen_rows(reports: tuple[Report, Report]) -> None:
    import dataclasses

    from modelmeter.report.model import EventRow, ModuleRow, rows

    r = reports[1]
    values = [dataclasses.astuple(x) for x in r.modules]
    built = rows(ModuleRow, values)
    assert built == [ModuleRow(*v) for v in values] == r.modules
    assert all(type(x) is ModuleRow for x in built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built[0].path = "x"  # type: ignore[misc]
    assert dataclasses.replace(built[0]) == built[0]
    # events are named tuples: immutable, and a dict in JSON
    e = r.events[0]
    assert type(e) is EventRow and EventRow(*e) == e
    with pytest.raises(AttributeError):
        e.macs = 1  # type: ignore[misc]
    assert r.to_dict(include_events=True)["events"][0] == e._asdict()
