"""Compiled specs against hand-written PyTorch with the same weights: same outputs."""

import torch
from torch import nn

from engine.compiler import compile_spec


def load(ref: nn.Module, model, mapping: dict[str, str]) -> None:
    state = {
        mapping[k.split(".", 2)[1]] + "." + k.split(".", 2)[2]: v
        for k, v in model.state_dict().items()
    }
    ref.load_state_dict(state, strict=True)


def test_cnn_matches_hand_written_sequential():
    spec = {
        "nodes": [
            {"id": "conv", "op": "conv2d", "params": {"out_channels": 8, "kernel_size": 3}},
            {"id": "relu", "op": "activation"},
            {"id": "pool", "op": "maxpool2d"},
            {"id": "flat", "op": "flatten"},
            {"id": "fc", "op": "linear", "params": {"out_features": 10}},
        ]
    }
    model, infos = compile_spec(spec, (1, 8, 8), seed=0)
    ref = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    load(ref, model, {"conv": "0", "fc": "4"})
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(model(x), ref(x), atol=1e-6)
    assert infos[2].output_shape == (8, 4, 4)


class HandLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 12)
        self.lstm = nn.LSTM(12, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids.long()))
        return self.head(out[:, -1])


def test_lstm_matches_hand_written_module():
    spec = {
        "nodes": [
            {
                "id": "embed",
                "op": "embedding",
                "params": {"num_embeddings": 50, "embedding_dim": 12},
            },
            {"id": "lstm", "op": "lstm", "params": {"hidden_size": 16}},
            {"id": "head", "op": "linear", "params": {"out_features": 2}},
        ]
    }
    model, _ = compile_spec(spec, (7,), seed=0)
    ref = HandLSTM()
    state = {
        k.removeprefix("layers.").replace("lstm.rnn.", "lstm."): v
        for k, v in model.state_dict().items()
    }
    ref.load_state_dict(state, strict=True)
    ids = torch.randint(0, 50, (4, 7)).float()
    model.eval()
    assert torch.allclose(model(ids), ref(ids), atol=1e-6)


class HandResidual(nn.Module):
    def __init__(self, c=6):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


def test_residual_block_matches_hand_written_module():
    conv = {"out_channels": 6, "kernel_size": 3, "padding": 1, "bias": False}
    spec = {
        "nodes": [
            {"id": "conv1", "op": "conv2d", "params": conv},
            {"id": "bn1", "op": "batchnorm"},
            {"id": "relu1", "op": "activation"},
            {"id": "conv2", "op": "conv2d", "params": conv},
            {"id": "bn2", "op": "batchnorm"},
            {"id": "skip", "op": "add", "inputs": ["bn2", "input"]},
            {"id": "out", "op": "activation"},
        ]
    }
    model, _ = compile_spec(spec, (6, 5, 5), seed=0)
    ref = HandResidual()
    ref.load_state_dict(
        {k.removeprefix("layers."): v for k, v in model.state_dict().items()}, strict=True
    )
    x = torch.randn(3, 6, 5, 5)
    model.train()
    ref.train()
    assert torch.allclose(model(x), ref(x), atol=1e-5)  # batch statistics
    model.eval()
    ref.eval()
    assert torch.allclose(model(x), ref(x), atol=1e-5)  # running statistics
