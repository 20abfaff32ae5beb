"""A recurrent model for the benchmarks (``bench/_rnn_models.py:lstm_tagger``): embedding, a 2-layer
bidirectional LSTM and a linear head, as a sequence tagger is built."""

from __future__ import annotations

import torch
from torch import nn


class LSTMTagger(nn.Module):
    def __init__(self, vocab: int = 1000, dim: int = 128, hidden: int = 256, tags: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(ids))[0])


def lstm_tagger() -> tuple[nn.Module, torch.Tensor]:
    return LSTMTagger(), torch.randint(0, 1000, (8, 64))
