"""The CLI through its entry point: each command, JSON validity, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelmeter.cli import main
from modelmeter.report.export import validate


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


FACTORY = '''
import torch
from torch import nn

def make():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(2, 8)

def broken():
    return nn.Sequential(nn.Linear(8, 16), nn.Linear(5, 4)), torch.randn(2, 8)
'''


@pytest.fixture()
def factory(tmp_path: Path) -> Path:
    p = tmp_path / "net.py"
    p.write_text(FACTORY)
    return p


def test_profile_table(capsys: pytest.CaptureFixture[str], factory: Path) -> None:
    code, out, _ = run_cli(capsys, "profile", f"{factory}:make")
    assert code == 0
    # 2x8x16 + 2x16x4 = 256 + 128 = 384 MACs; params 8*16+16 + 16*4+4 = 212
    assert "384" in out and "212" in out
    assert "every op has a FLOP rule" in out


def test_profile_json_validates(capsys: pytest.CaptureFixture[str], factory: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "profile", f"{factory}:make", "--format", "json", "--train", "--optimizer", "sgd")
    assert code == 0
    d = json.loads(out)
    validate(d)
    assert d["totals"]["macs"] == 384 + 128 + 128 + 256  # forward + fc2 grad in/weight + fc1 grad weight
    assert d["provenance"]["train"] is True and d["provenance"]["optimizer"] == "sgd"


def test_profile_files(capsys: pytest.CaptureFixture[str], factory: Path, tmp_path: Path) -> None:
    j, c, m = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.md"
    code, _, _ = run_cli(capsys, "profile", f"{factory}:make", "--json", str(j), "--csv", str(c),
                         "--markdown", str(m), "--events")
    assert code == 0
    d = json.loads(j.read_text())
    validate(d)
    assert len(d["events"]) == d["totals"]["ops"]
    rows = list(csv.DictReader(io.StringIO(c.read_text())))
    assert rows[0]["path"] == "" and sum(int(r["own_macs"]) for r in rows) == 384
    assert "| MACs | 384 | 384 |" in m.read_text()


def test_profile_vision_and_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "profile", "torchvision:resnet18", "--format", "json")
    assert code == 0
    t = json.loads(out)["totals"]
    assert t["params"] == 11_689_512  # torchvision's published count for resnet18
    assert t["macs"] == 1_814_073_344  # torchvision lists 1.81 GFLOPS (that is MACs) at 224x224
    code, out, _ = run_cli(capsys, "profile", "hf:gpt2", "--seq", "64", "--format", "json")
    assert code == 0
    assert json.loads(out)["totals"]["params"] == 124_439_808


def test_compare(capsys: pytest.CaptureFixture[str], factory: Path) -> None:
    code, out, _ = run_cli(capsys, "compare", "torchvision:resnet18", "torchvision:resnet34", "--json", "-")
    assert code == 0
    d = json.loads(out)
    a, b = d["models"]
    assert a["relative_macs"] == 1.0
    assert b["relative_macs"] == pytest.approx(b["macs"] / a["macs"])
    assert b["params"] == 21_797_672  # torchvision's published count for resnet34
    code, out, _ = run_cli(capsys, "compare", "torchvision:resnet18", "torchvision:resnet34")
    assert code == 0 and "x MACs" in out and "1.00x" in out


def test_env(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "env", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["torch"] and d["cpu_count"] >= 1 and isinstance(d["cuda_devices"], list)


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["profile", "torchvision:resnet9000"], 2, "resnet9000"),
        (["profile", "hf:gpt7"], 2, "gpt7"),
        (["profile", "nonsense"], 2, "nonsense"),
        (["profile", "torchvision:resnet18", "--shape", "1x3xfoo"], 2, "1x3xfoo"),
        (["profile", "torchvision:resnet18", "--shape", "1x5x224x224"], 3, "conv1"),
        (["profile", "torchvision:resnet18", "--optimizer", "adam"], 2, "--train"),
        (["profile", "torchvision:resnet18", "--dtype", "fp7"], 2, "fp7"),
    ],
)
def test_bad_input_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str) -> None:
    got, out, err = run_cli(capsys, *argv)
    assert got == code
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("error: ")


def test_failing_factory_names_module(capsys: pytest.CaptureFixture[str], factory: Path) -> None:
    got, _, err = run_cli(capsys, "profile", f"{factory}:broken")
    assert got == 3
    assert "module '1' (Linear)" in err


def test_strict_exit_code(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "odd.py"
    p.write_text("import torch\nfrom torch import nn\n\nclass Odd(nn.Module):\n    def forward(self, x):\n"
                 "        return torch.special.bessel_j0(x)\n\ndef make():\n    return Odd(), torch.randn(4)\n")
    got, out, _ = run_cli(capsys, "profile", f"{p}:make")
    assert got == 0 and "special_bessel_j0" in out
    got, _, err = run_cli(capsys, "profile", f"{p}:make", "--strict")
    assert got == 4 and "bessel_j0" in err


def test_entry_point_subprocess_no_traceback() -> None:
    """The installed console script, as a user runs it: one line on stderr, non-zero exit."""
    proc = subprocess.run([sys.executable, "-m", "modelmeter", "profile", "torchvision:nosuchnet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    proc = subprocess.run([sys.executable, "-m", "modelmeter", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "profile" in proc.stdout


def test_profile_with_hardware_columns(capsys: pytest.CaptureFixture[str], factory: Path) -> None:
    code, out, _ = run_cli(capsys, "profile", f"{factory}:make", "--hardware", "rtx-3090,h100-sxm")
    assert code == 0
    assert "t rtx-3090" in out and "t h100-sxm" in out
    code, out, _ = run_cli(capsys, "profile", f"{factory}:make", "--hardware", "h100-sxm", "--format", "json")
    d = json.loads(out)
    validate(d)
    (dev,) = d["roofline"]["devices"]
    # fp32 on H100 SXM: 67e12 FLOP/s, 3.35e12 B/s. Every op here is memory-bound (intensity < 20 FLOP/B), so the
    # unfused prediction is the total bytes over the bandwidth (no launch overhead by default).
    assert dev["predicted_s"] == pytest.approx(d["totals"]["bytes_moved"] / 3.35e12)


def test_profile_unknown_device(capsys: pytest.CaptureFixture[str], factory: Path) -> None:
    code, _, err = run_cli(capsys, "profile", f"{factory}:make", "--hardware", "h900")
    assert code == 2 and "h900" in err


def test_profile_with_memory(capsys: pytest.CaptureFixture[str], factory: Path) -> None:
    code, out, _ = run_cli(capsys, "profile", f"{factory}:make", "--memory", "--format", "json")
    assert code == 0
    d = json.loads(out)
    validate(d)
    from modelmeter.report.model import Report

    back = Report.from_dict(d)
    assert back.memory is not None and back.memory.to_dict() == d["memory"]
    # inference peak of Linear(8,16)-ReLU-Linear(16,4) at batch 2 (fp32): parameters 212 x 4 = 848 B and
    # the input 2 x 8 x 4 = 64 B are alive throughout; fc1's output 2 x 16 x 4 = 128 B and the in-place-free
    # ReLU output (another 128 B) are both alive while ReLU runs: 848 + 64 + 128 + 128 = 1168 B
    assert d["memory"]["peak_bytes"] == 1168


def test_profile_speech_config_without_shape(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # a Whisper config.json: mel frames and decoder ids sized from the config, the whole model built
    transformers = pytest.importorskip("transformers")
    cfg = transformers.WhisperConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=10, max_target_positions=20,
        vocab_size=97, pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2)
    path = tmp_path / "config.json"
    cfg.to_json_file(str(path))
    code, out, err = run_cli(capsys, "profile", str(path), "--seq", "12", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    # 8 mel channels x (2 x 10 source positions) = 20 frames; 12 decoder ids (--seq)
    assert report["provenance"]["input_shapes"] == [[1, 8, 20], [1, 12]]
    assert report["modules"][0]["type"] == "WhisperForConditionalGeneration"


def test_profile_falls_back_to_real_buffers_when_the_meta_run_needs_their_values(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Mimi computes its convolutions' padding from buffers its constructor makes (torch.tensor(stride)):
    # under torch.device("meta") they hold no values, the reads are answered 0 and a later shape does not
    # fit. The CLI builds it again with parameters on meta and small buffers real, and says so; the counts
    # are then those of a CPU run with real weights
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "config.json"
    transformers.MimiConfig().to_json_file(str(path))
    code, out, err = run_cli(capsys, "profile", str(path), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["provenance"]["input_shapes"] == [[1, 1, 24000]]  # 1 channel, 24 kHz from the config
    assert any(n.startswith("built again with its small buffers real") for n in report["notes"])
    import modelmeter as mm
    from modelmeter.models import load

    cpu = load(str(path), device="cpu")
    real = mm.profile(cpu.model, cpu.inputs, device="cpu")
    assert (report["totals"]["macs"], report["totals"]["flops"], report["totals"]["bytes_read"]) == (
        real.totals.macs, real.totals.flops, real.totals.bytes_read)


@pytest.mark.parametrize("command", [["memory"], ["roofline", "--hardware", "h100-sxm"]])
def test_memory_and_roofline_fall_back_to_real_buffers_too(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]) -> None:
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "config.json"
    transformers.MimiConfig().to_json_file(str(path))
    code, out, err = run_cli(capsys, command[0], str(path), *command[1:])
    assert code == 0, err
    assert "built again with its small buffers real" in " ".join(out.split())  # the note, however it wraps


def test_profile_on_cpu_says_how_it_recorded(capsys: pytest.CaptureFixture[str], factory: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from modelmeter.capture import native

    # 2x8 @ 8x16 + 2x16 @ 16x4 = 256 + 128 = 384 MACs, whichever recorder runs
    code, out, _ = run_cli(capsys, "profile", f"{factory}:make", "--device", "cpu", "--format", "json")
    d = json.loads(out)
    assert code == 0 and d["totals"]["macs"] == 384
    assert d["provenance"]["capture"] == ("native" if native.load() is not None else "dispatch-mode")
    monkeypatch.setenv("MODELMETER_NATIVE", "0")
    code, out, _ = run_cli(capsys, "profile", f"{factory}:make", "--device", "cpu", "--format", "json")
    d = json.loads(out)
    assert code == 0 and d["totals"]["macs"] == 384 and d["provenance"]["capture"] == "dispatch-mode"
    validate(d)
