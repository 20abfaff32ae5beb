"""Build configuration beyond pyproject.toml: one optional C extension.

``modelmeter.capture._fastmeta`` is TensorMeta.of in C (see src/modelmeter/capture/_fastmeta.c). It uses
only the Python C API (no PyTorch headers). ``optional=True``: where no C compiler is available the
install goes on without it and the capture uses the Python implementation (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("modelmeter.capture._fastmeta", ["src/modelmeter/capture/_fastmeta.c"], optional=True),
    ]
)
