"""EGD in a plain PyTorch training loop: ``egalitarian.egd_for`` on any model, no trainer, no config.

    python examples/plain_pytorch.py            # a few seconds on one CPU thread

``egd_for(model, lr=...)`` whitens the hidden weight matrices (here the first two ``nn.Linear`` weights) and hands
everything else (biases, the output head) to an auxiliary AdamW at ``aux_lr``, in one ``torch.optim.Optimizer``:
``zero_grad``, ``step``, ``state_dict`` and LR schedulers work as for any torch optimizer.  The keywords below are
the README's recommended conventions for a new model (momentum whitened as in Muon, steps scaled to AdamW's RMS);
search ``lr`` from 1× to 10× your AdamW learning rate.  The task is synthetic (10 classes labelled by a random
teacher network), so the file runs anywhere; chance is 10% test accuracy.
"""

from __future__ import annotations

import torch
from torch import nn

from egalitarian import egd_for

torch.manual_seed(0)
torch.set_num_threads(1)
teacher = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
x = torch.randn(6000, 32)
with torch.no_grad():
    y = teacher(x).argmax(1)
x_train, y_train, x_test, y_test = x[:4000], y[:4000], x[4000:], y[4000:]

model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
opt = egd_for(model, lr=3e-3, aux_lr=1e-3, momentum=0.95, nesterov=True, momentum_position="before", scale="rms")
print(opt.routing)  # where each parameter went, and why

for step in range(1, 301):
    batch = torch.randint(0, len(x_train), (128,))
    loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0:
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        print(f"step {step}: training loss {loss.item():.3f}, test accuracy {accuracy:.3f}")
