"""The native op recorder (``recorder.cpp``): built on first use, cached, and optional.

A real-tensor inference run on CPU records its ops in C++ (a thread-local ``RecordFunction``
callback, the hook PyTorch's profiler uses) instead of a Python ``TorchDispatchMode`` call per op;
see ``recorder.cpp`` and ``tracer._State.finish_native``. The extension is compiled once per torch
and Python version with the system C++ compiler against the installed torch's headers (about 8 s),
and kept in ``$MODELMETER_CACHE`` (default ``~/.cache/modelmeter``). Without a compiler, or with
``MODELMETER_NATIVE=0``, every run uses the Python capture, which counts the same.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import warnings
from pathlib import Path
from types import ModuleType

_SOURCE = Path(__file__).with_name("recorder.cpp")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


def enabled() -> bool:
    """False when ``MODELMETER_NATIVE=0`` turns the native recorder off."""
    return os.environ.get("MODELMETER_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    root = os.environ.get("MODELMETER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "modelmeter")
    return Path(root) / "native"


def _build_key() -> str:
    import torch

    h = hashlib.sha256(_SOURCE.read_bytes())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    h.update(os.path.realpath(torch.__file__).encode())
    return h.hexdigest()[:16]


def _compile_command(out: Path) -> list[str]:
    import torch

    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        raise RuntimeError("no C++ compiler (c++, g++ or clang++) on PATH")
    root = os.path.dirname(torch.__file__)
    torch_lib = os.path.join(root, "lib")
    includes = [os.path.join(root, "include"), os.path.join(root, "include", "torch", "csrc", "api", "include"),
                sysconfig.get_paths()["include"]]
    cmd = [cxx, "-O2", "-DNDEBUG", "-std=c++20", "-fPIC", "-shared", "-fvisibility=hidden",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    for inc in includes:
        cmd += ["-isystem", inc]
    cmd += [str(_SOURCE), "-o", str(out), f"-L{torch_lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}"]
    if sys.platform == "darwin":
        cmd += ["-undefined", "dynamic_lookup"]
    return cmd


def _build(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run(_compile_command(Path(tmp)), capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(f"the C++ compiler failed: {lines[-1] if lines else proc.returncode}")
        os.replace(tmp, target)  # atomic: a process building the same file at once never sees half of it
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _configure(mod: ModuleType) -> None:
    """Hand the recorder the Python objects it builds values from. c10's ScalarType numbers are read
    off the recorder itself (each dtype's ``torch.empty`` call, as the dispatcher boxes it); Layout and
    MemoryFormat by their c10 names."""
    import torch

    from ..events import OpEvent, TensorMeta

    mod.configure([], [], [], torch.device, torch.Size, TensorMeta, OpEvent)
    dtypes = list(dict.fromkeys(v for v in vars(torch).values() if isinstance(v, torch.dtype)))
    if not mod.start():
        raise RuntimeError("another RecordFunction user (a profiler) is active")
    made = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for d in dtypes:
                try:
                    torch.empty(0, dtype=d)
                    made.append(d)
                except (RuntimeError, TypeError):
                    continue
    finally:
        mod.stop()
    dtypes = made
    table = mod.ops()
    plans = [(f"{name}.{overload or 'default'}", None, False, False, False) for name, overload in table]
    numbers = [ev.kwargs.get("dtype") for ev in mod.drain(plans, [""])]
    if len(numbers) != len(dtypes) or not all(isinstance(n, int) for n in numbers):
        raise RuntimeError("could not read c10's dtype numbers")
    dtype_table: list[object] = [None] * (max(numbers) + 1)
    for d, n in zip(dtypes, numbers):
        dtype_table[n] = d
    layout_names, memfmt_names = mod.enum_names()
    by_name = {"Strided": torch.strided, "Sparse": torch.sparse_coo, "SparseCsr": torch.sparse_csr,
               "SparseCsc": torch.sparse_csc, "SparseBsr": torch.sparse_bsr, "SparseBsc": torch.sparse_bsc,
               "Mkldnn": torch._mkldnn, "Jagged": getattr(torch, "jagged", None),
               "Contiguous": torch.contiguous_format, "Preserve": torch.preserve_format,
               "ChannelsLast": torch.channels_last, "ChannelsLast3d": torch.channels_last_3d}
    mod.configure(dtype_table, [by_name.get(n) for n in layout_names], [by_name.get(n) for n in memfmt_names],
                  torch.device, torch.Size, TensorMeta, OpEvent)


def _target() -> Path:
    return cache_dir() / f"_recorder-{_build_key()}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def needs_build() -> bool:
    """True when :func:`load` would compile the recorder first (turned on, not loaded in this process,
    neither built nor failed before for this torch and Python)."""
    if not enabled() or "module" in _STATE:
        return False
    target = _target()
    return not target.exists() and not target.with_name(target.name + ".failed").exists()


def load() -> ModuleType | None:
    """The compiled recorder, or None (turned off, or it cannot be built here: see :func:`status`)."""
    if not enabled():
        return None
    with _LOCK:
        if "module" in _STATE:
            return _STATE["module"]  # type: ignore[return-value]
        mod: ModuleType | None = None
        try:
            target = _target()
            failed = target.with_name(target.name + ".failed")
            if not target.exists():
                if failed.exists():  # a build that failed here before is not tried again in every process
                    raise RuntimeError(failed.read_text().strip() + f" (earlier build; delete {failed} to retry)")
                try:
                    _build(target)
                except Exception as exc:
                    failed.parent.mkdir(parents=True, exist_ok=True)
                    failed.write_text(f"{type(exc).__name__}: {exc}")
                    raise
            spec = importlib.util.spec_from_file_location(
                "modelmeter.capture.native._recorder", target,
                loader=importlib.machinery.ExtensionFileLoader("modelmeter.capture.native._recorder", str(target)),
            )
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            _configure(mod)
            _STATE["error"] = None
        except Exception as exc:  # no compiler, no headers, a torch it does not build against: the Python capture
            mod = None
            _STATE["error"] = f"{type(exc).__name__}: {exc}"
        _STATE["module"] = mod
        return mod


def status() -> str:
    """One line: whether real-tensor inference runs record natively, and if not, why."""
    if not enabled():
        return "off (MODELMETER_NATIVE=0): the Python capture records every run"
    mod = load()
    if mod is None:
        return f"not built ({_STATE.get('error')}): the Python capture records every run"
    return "built: real-tensor inference runs on CPU record ops natively"
