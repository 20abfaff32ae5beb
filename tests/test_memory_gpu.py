"""CUDA: the estimate against torch.cuda.max_memory_allocated (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelmeter.analysis.memory import memory_profile

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def mlp() -> nn.Module:
    torch.manual_seed(0)
    # every tensor a multiple of 512 B (the caching allocator's rounding): weights 4 MiB, biases 4 KiB,
    # activations 512 x 1024 x 4 = 2 MiB
    return nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024))


def measured_step_bytes(model: nn.Module, x: torch.Tensor, train: bool) -> tuple[int, int]:
    model = model.cuda()
    x = x.cuda()
    with torch.no_grad():  # create the cuBLAS workspace before measuring: it persists across steps
        model(x)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    model.train(train)
    with torch.set_grad_enabled(train):
        out = model(x)
        if train:
            out.sum().backward()
            torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=False).step()
    torch.cuda.synchronize()
    return base, torch.cuda.max_memory_allocated()


@pytest.mark.parametrize("train", [False, True])
def test_mlp_peak_matches_cuda_allocator(train: bool) -> None:
    x = torch.randn(512, 1024)
    est = memory_profile(mlp(), x, train=train, optimizer="sgd-momentum" if train else None)
    base, peak = measured_step_bytes(mlp(), x, train)
    static = est.params_bytes + est.buffers_bytes + est.inputs_bytes
    # the allocator's figure includes what was alive before the step (weights, input, workspace)
    assert abs((peak - base) - (est.peak_bytes - static)) <= 0.02 * (est.peak_bytes - static)


def test_capture_on_cuda_tensors_gives_the_meta_timeline() -> None:
    x = torch.randn(512, 1024)
    meta = memory_profile(mlp(), x, train=True, optimizer="adamw")
    cuda = memory_profile(mlp(), x, train=True, optimizer="adamw", device="cuda")
    assert cuda.timeline.total_bytes == meta.timeline.total_bytes


def test_resnet18_training_peak_within_10_percent() -> None:
    torchvision = pytest.importorskip("torchvision")
    x = torch.randn(8, 3, 224, 224)
    est = memory_profile(torchvision.models.resnet18(), x, train=True, optimizer="sgd-momentum")
    base, peak = measured_step_bytes(torchvision.models.resnet18(), x, True)
    static = est.params_bytes + est.buffers_bytes + est.inputs_bytes
    assert abs(peak - (base - static + est.peak_bytes)) <= 0.10 * peak  # cuDNN workspaces are extra
