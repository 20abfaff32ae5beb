"""The hardware and roofline commands through the CLI entry point."""

from __future__ import annotations

import json

import pytest

from modelmeter.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("MODELMETER_HARDWARE_FILE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


def test_hardware_list_and_show(capsys):
    assert main(["hardware", "list"]) == 0
    out = capsys.readouterr().out
    assert "h100-sxm" in out and "tpu-v5e" in out and "xeon-8480p" in out and "989.4" in out
    assert main(["hardware", "list", "--kind", "tpu", "--dtype", "int8"]) == 0
    out = capsys.readouterr().out
    assert "tpu-v4" in out and "h100-sxm" not in out
    assert main(["hardware", "show", "b200"]) == 0
    out = capsys.readouterr().out
    assert "4,500.0" in out and "2,250.0" in out and "sparse" in out and "[H8]" in out
    assert main(["hardware", "show", "h100", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "h100-sxm" and d["matrix_flop_per_s"]["bf16"] == 989.4e12


def test_hardware_json_list_round_trips(capsys):
    assert main(["hardware", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 21 and all(r["sources"] for r in rows)


def test_unknown_device_is_a_one_line_error(capsys):
    assert main(["hardware", "show", "h100-sxn"]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'h100-sxn'" in err and "h100-sxm" in err and "Traceback" not in err


def test_hardware_detect_and_calibrate(tmp_path, capsys):
    assert main(["hardware", "detect"]) == 0
    assert "cpu" in capsys.readouterr().out
    out_file = tmp_path / "hw.json"
    assert main(["hardware", "calibrate", "--seconds", "0.6", "--dtypes", "fp32", "--name", "cli-cpu",
                 "--output", str(out_file)]) == 0
    assert "saved device 'cli-cpu'" in capsys.readouterr().out
    entry = json.loads(out_file.read_text())["devices"][0]
    assert entry["name"] == "cli-cpu" and entry["matrix_flop_per_s"]["fp32"] > 0
    assert main(["hardware", "show", "local", "--hardware-file", str(out_file)]) == 0
    assert "measured" in capsys.readouterr().out


def test_hardware_file_override_in_roofline(tmp_path, capsys):
    f = tmp_path / "hw.json"
    f.write_text(json.dumps({"devices": [{"name": "half-h100", "extends": "h100-sxm",
                                          "memory_bandwidth_bytes_per_s": 1.675e12}]}))
    assert main(["roofline", "torchvision:resnet18", "--hardware", "h100-sxm,half-h100", "--hardware-file", str(f),
                 "--no-memory", "--json", str(tmp_path / "r.json"), "--top", "3"]) == 0
    d = json.loads((tmp_path / "r.json").read_text())["roofline"]
    full, half = d["devices"]
    assert half["memory_s"] == pytest.approx(2 * full["memory_s"])
    assert half["compute_s"] == pytest.approx(full["compute_s"])


def test_roofline_batch_sweep_plot_and_json(tmp_path, capsys):
    png = tmp_path / "plot.png"
    out = tmp_path / "r.json"
    assert main(["roofline", "torchvision:resnet18", "--hardware", "a100-80gb,l4", "--dtype", "bf16",
                 "--batch", "1,32", "--plot", f"{png},{tmp_path / 'plot.svg'}", "--json", str(out), "--ops",
                 "--launch-overhead", "4us", "--compute-efficiency", "0.8"]) == 0
    text = capsys.readouterr().out
    assert "batch sweep" in text and "a100-80gb" in text and "l4" in text
    for p in (png, tmp_path / "plot-layers.png", tmp_path / "plot.svg", tmp_path / "plot-layers.svg"):
        assert p.stat().st_size > 5000
    d = json.loads(out.read_text())
    rl = d["roofline"]
    assert d["schema"].startswith("modelmeter.report/") and rl["dtype"] == "bf16"
    dev = rl["devices"][0]
    assert dev["settings"] == {"compute_efficiency": 0.8, "memory_efficiency": 1.0, "launch_overhead_s": 4e-6,
                               "sparse": False}
    assert dev["overhead_s"] == pytest.approx(4e-6 * dev["kernels"])
    assert len(dev["ops"]) == dev["kernels"]
    assert dev["required_basis"].startswith("inference peak")
    assert rl["sweep"]["batches"] == [1, 32]
    assert d["provenance"]["dtype"] == "bfloat16"


def test_roofline_decode_of_a_small_language_model(tmp_path, capsys):
    out = tmp_path / "lm.json"
    assert main(["roofline", "hf:llama-tiny", "--hardware", "h100-sxm", "--decode", "--context", "64",
                 "--batch", "1,4", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "time to first token" in text and "per output token" in text
    lm = json.loads(out.read_text())["roofline"]["lm"]
    assert [e["batch"] for e in lm] == [1, 4]
    # llama-tiny: 2 layers x 2 (K, V) x 2 KV heads x head_dim 16 (64 / 4 heads) x 4 bytes (fp32) = 512 B per token
    assert lm[0]["kv_bytes_per_token"] == 512
    assert lm[1]["kv_cache_bytes"] == 512 * 64 * 4


@pytest.mark.parametrize("argv, message", [
    (["roofline", "torchvision:resnet18", "--hardware", "h100-sxm", "--dtype", "int8"], "cannot be counted"),
    (["roofline", "torchvision:resnet18", "--hardware", "t4", "--dtype", "bf16", "--no-memory"], "no bf16 peak"),
    (["roofline", "torchvision:resnet18", "--hardware", "h100-sxm", "--decode"], "decoder language model"),
    (["roofline", "hf:bert-base", "--hardware", "h100-sxm", "--decode"], "decoder language model"),
    (["roofline", "torchvision:resnet18", "--hardware", "nope"], "unknown device"),
])
def test_roofline_user_errors(argv, message, capsys):
    assert main(argv) != 0
    assert message in capsys.readouterr().err


def test_bad_option_values_are_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        main(["roofline", "torchvision:resnet18", "--hardware", "h100-sxm", "--compute-efficiency", "2"])
    with pytest.raises(SystemExit):
        main(["roofline", "torchvision:resnet18", "--hardware", "h100-sxm", "--launch-overhead", "soon"])
