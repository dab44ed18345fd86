"""models.CNN (EGD paper App. E, Table 8) and EGD on its conv kernels, against written-out references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from egalitarian.build import TASK_DERIVED, accepted_fields, build_model, build_run
from egalitarian.errors import ConfigError
from egalitarian.losses import cross_entropy
from egalitarian.methods import build_optimizer
from egalitarian.models import CNN
from egalitarian.tasks import TaskData


def small_cnn(**kwargs) -> CNN:
    torch.manual_seed(0)
    args = {"in_channels": 2, "height": 8, "width": 8, "num_outputs": 3, "channels": [3, 4, 5], "fc": 6}
    return CNN(**{**args, **kwargs})


def test_cnn_names_shapes_and_forward_equation() -> None:
    model = small_cnn()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes == {
        "convs.0.weight": (3, 2, 3, 3), "convs.0.bias": (3,), "convs.1.weight": (4, 3, 3, 3), "convs.1.bias": (4,),
        "convs.2.weight": (5, 4, 3, 3), "convs.2.bias": (5,),
        "fc.weight": (6, 5 * 1 * 1), "fc.bias": (6,),  # 8 -> 4 -> 2 -> 1 after three 2x2 pools
        "head.weight": (3, 6), "head.bias": (3,),
    }
    x = torch.randn(7, 2, 8, 8)
    h = x
    for i in range(3):
        conv = model.convs[i]
        h = F.max_pool2d(torch.relu(F.conv2d(h, conv.weight, conv.bias, padding=1)), 2)
    expected = F.linear(torch.relu(F.linear(h.reshape(7, -1), model.fc.weight, model.fc.bias)),
                        model.head.weight, model.head.bias)
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert torch.equal(model(x.reshape(7, -1)), model(x))  # flattened task rows are reshaped

    last = small_cnn(pool="last", height=6, width=4)
    assert last.fc.in_features == 5 * 3 * 2  # one pool after the last conv
    assert last(torch.randn(2, 2 * 6 * 4)).shape == (2, 3)


@pytest.mark.parametrize(("kwargs", "field", "value"), [
    ({"channels": []}, "channels", "[]"),
    ({"channels": [3, 0]}, "channels", "[3, 0]"),
    ({"kernel_size": 4}, "kernel_size", "4"),
    ({"fc": 0}, "fc", "0"),
    ({"pool": "avg"}, "pool", "'avg'"),
    ({"height": 4}, "pool", "'each'"),  # three halvings of 4 rows leave none
    ({"activation": "mish"}, "activation", "'mish'"),
])
def test_cnn_config_errors(kwargs: dict, field: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        small_cnn(**kwargs)
    assert str(info.value).startswith(f"{field} = {value}:"), str(info.value)


def image_task(n: int = 24) -> TaskData:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 2 * 8 * 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return TaskData(x, y, x[:4], y[:4], None, None, input_dim=128, num_outputs=3, vocab_size=None, target="class",
                    image_shape=(2, 8, 8))


def test_cnn_takes_its_dimensions_from_the_task() -> None:
    assert TASK_DERIVED["cnn"] == ("in_channels", "height", "width", "num_outputs")
    fields = accepted_fields("model", "cnn")
    assert fields[0] == "name" and not set(TASK_DERIVED["cnn"]) & set(fields)
    model = build_model({"model": {"name": "cnn", "channels": [3, 4, 5], "fc": 6}}, image_task())
    assert isinstance(model, CNN) and model.shape == (2, 8, 8) and model.head.out_features == 3
    flat = TaskData(torch.zeros(2, 5), torch.zeros(2).long(), torch.zeros(1, 5), torch.zeros(1).long(), None, None,
                    input_dim=5, num_outputs=2, vocab_size=None, target="class")
    with pytest.raises(ConfigError, match="model.name = 'cnn': needs an image task"):
        build_model({"model": {"name": "cnn"}}, flat)
    with pytest.raises(ConfigError, match="model.height"):
        build_model({"model": {"name": "cnn", "height": 8}}, image_task())
    with pytest.raises(ValueError, match="image_shape"):
        TaskData(torch.zeros(2, 5), torch.zeros(2), torch.zeros(1, 5), torch.zeros(1), None, None, input_dim=5,
                 num_outputs=2, vocab_size=None, target="class", image_shape=(1, 2, 2))


@pytest.mark.parametrize("backend", ["svd", "auto"])
def test_egd_whitens_every_conv_kernel_as_out_by_in_kh_kw(backend: str) -> None:
    """One EGD step with the paper's choice (every conv kernel and the FC layer): each of those moves by
    −lr·U Vᵀ of its gradient viewed as (out, in·kh·kw), with U, V from a float64 SVD here; the head and the
    biases take a plain SGD step.  tanh keeps every channel alive, so each whitened gradient has full rank
    and its U Vᵀ is unique.  (The head's cross-entropy gradient has rank classes − 1: its rows sum to 0.)"""
    model = small_cnn(activation="tanh")
    task = image_task()
    loss = cross_entropy(model(task.x_train), task.y_train)
    loss.backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    lr = 0.05
    opt = build_optimizer(list(model.named_parameters()), "egd", lr=lr, whiten=["convs.*.weight", "fc.weight"],
                          backend=backend)
    opt.step()
    for name, p in model.named_parameters():
        g = grads[name].double()
        if g.ndim >= 2 and name != "head.weight":
            matrix = g.reshape(g.shape[0], -1)  # (out, in*kh*kw)
            assert torch.linalg.matrix_rank(matrix) == min(matrix.shape)  # full rank: U Vᵀ is unique
            u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
            step = (u @ vh).reshape(g.shape)
        else:
            step = g
        assert torch.allclose(p.detach().double(), before[name].double() - lr * step, atol=1e-6), name
        if g.ndim == 4:  # the update, seen as a matrix, has every singular value 1
            moved = ((before[name] - p.detach()) / lr).double().reshape(g.shape[0], -1)
            assert torch.allclose(torch.linalg.svdvals(moved), torch.ones(g.shape[0], dtype=torch.float64),
                                  atol=1e-5)


def test_paper_whitening_choice_for_the_cnn_and_a_run_on_images(tmp_path) -> None:
    """App. E: EGD on every conv kernel and the FC layer (the head left to the base optimizer)."""
    model = small_cnn()
    opt = build_optimizer(list(model.named_parameters()), "egd_adam", whiten=["convs.*.weight", "fc.weight"])
    whitened = {id(p) for p in opt.whitened_params()}
    assert {n for n, p in model.named_parameters() if id(p) in whitened} == {
        "convs.0.weight", "convs.1.weight", "convs.2.weight", "fc.weight"}

    pytest.importorskip("sklearn")
    cfg = {"task": {"name": "mnist", "source": "digits", "n_train": 40, "n_test": 20},
           "model": {"name": "cnn", "channels": [4, 4, 4], "fc": 8},
           "optimizer": {"name": "egd_adam", "whiten": ["convs.*.weight", "fc.weight"]},
           "train": {"seed": 0}}
    run = build_run(cfg)
    assert run.model.shape == (1, 8, 8)  # the digits stand-in is 1 x 8 x 8
    loss = run.loss_fn(run.model(run.data.x_train), run.data.y_train)
    loss.backward()
    run.optimizer.step()
    assert torch.isfinite(run.model(run.data.x_test)).all()
