"""train_style on a tiny loss network: exact resume from checkpoints, refused and damaged
checkpoints, the loss model left as found (also on errors), argument errors, the default
device, mixed precision on CUDA."""

import copy
import math
import os
import stat

import numpy as np
import pytest
import torch

import pyfastviz.fast_style.train as train_module
from pyfastviz.fast_style import TransformerNet, save_style_network
from pyfastviz.fast_style.train import CHECKPOINT_NAME, LOSSES
from pyfastviz.models import LoadedModel, Preprocess
from pyfastviz.models.zoo import PREPROCESS_ATTRIBUTE
from tests.fast_style.tiny import TinyLossNet, pixels, tiny_train
from tests.helpers import FailsLater, assert_same_state, model_state


@pytest.mark.parametrize("styles", [None, [pixels(3, 40, 36), pixels(3, 36, 44, seed=1)]],
                         ids=["single", "two-styles"])
def test_run_stopped_mid_way_resumes_to_the_uninterrupted_weights(tiny_net, tmp_path, styles, monkeypatch):
    full = tiny_train(tiny_net, styles, steps=3, seed=3)
    calls, train_step = [], train_module.train_step

    def stops_at_step_2(*args):  # the run dies after the step-1 checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return train_step(*args)

    monkeypatch.setattr(train_module, "train_step", stops_at_step_2)
    with pytest.raises(RuntimeError, match="interrupted"):
        tiny_train(tiny_net, styles, steps=3, seed=3, checkpoint_dir=tmp_path, checkpoint_every=1)
    resumed = tiny_train(tiny_net, styles, steps=3, seed=3, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert len(calls) == 4  # the resumed run took steps 2 and 3 only
    assert isinstance(full.network, TransformerNet)
    assert full.network.num_styles == (None if styles is None else 2)
    assert all(len(full.history[name]) == len(resumed.history[name]) == 3 for name in LOSSES)
    torch.testing.assert_close(resumed.history["total"], full.history["total"], rtol=1e-5, atol=0)
    for name, value in full.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temporary files left


def test_resume_refuses_a_checkpoint_past_steps(tiny_net, tmp_path):
    tiny_train(tiny_net, steps=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="steps=0 but the checkpoint .* is of step 1"):
        tiny_train(tiny_net, steps=0, checkpoint_dir=tmp_path)


def test_default_loss_model_is_loaded_on_cuda_when_there_is_one(monkeypatch):
    devices = []

    def load_model(device):
        devices.append(torch.device(device))
        raise RuntimeError("loaded")

    monkeypatch.setattr(train_module, "load_model", load_model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="loaded"):
        train_module.train_style(pixels(3, 16, 16), steps=0, progress=False)
    assert devices == [torch.device("cuda")]


def test_the_loss_model_comes_with_its_own_normalisation(monkeypatch):
    """The preprocess load_model gave the loss network normalises its input (the default model's
    mean/std are not ImageNet's), for loss_model=None and for a loaded net passed in; another
    nn.Module gets ImageNet's."""
    lite = Preprocess(224, (127 / 255,) * 3, (128 / 255,) * 3)
    loaded = TinyLossNet()
    setattr(loaded, PREPROCESS_ATTRIBUTE, lite)  # as load_model does
    monkeypatch.setattr(train_module, "load_model", lambda device: LoadedModel(loaded, "tiny", lite, ["a"]))
    used = []

    def perceptual_loss(*args):
        used.append(args[-1])
        raise RuntimeError("stop")

    monkeypatch.setattr(train_module, "PerceptualLoss", perceptual_loss)
    for loss_model in (None, loaded, TinyLossNet()):
        with pytest.raises(RuntimeError, match="stop"):
            train_module.train_style(pixels(3, 16, 16), loss_model=loss_model, steps=1, device="cpu",
                                     progress=False, content_layer="relu2",
                                     style_layers=["relu1"])
    assert used == [lite, lite, Preprocess(224)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_training_on_cuda(tiny_net):
    styles = [pixels(3, 40, 36), pixels(3, 36, 44, seed=1)]  # conditional norms: fp32 blends under autocast
    result = tiny_train(tiny_net.cuda(), styles, steps=10, lr=1e-2, mixed_precision=True)  # CPU fp32: 300x lower
    total = result.history["total"]
    assert all(math.isfinite(v) for name in LOSSES for v in result.history[name])
    assert total[-1] < 0.5 * total[0]
    assert all(p.dtype == torch.float32 and p.is_cuda and torch.isfinite(p).all() for p in result.network.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_trains_with_a_float64_or_bf16_loss_model(tiny_net, dtype):
    result = tiny_train(tiny_net.to(dtype), steps=2)
    assert all(math.isfinite(v) for v in result.history["total"])
    assert result.network.conv1.conv2d.weight.dtype == torch.float32


def test_numpy_normalisation_is_checkpointed_and_resumed(tiny_net, tmp_path):
    stats = np.array([[0.5, 0.4, 0.3], [0.25, 0.2, 0.3]], dtype=np.float32)
    preprocess = Preprocess(24, mean=tuple(stats[0]), std=tuple(stats[1]))
    tiny_train(tiny_net, steps=1, checkpoint_dir=tmp_path, preprocess=preprocess)
    resumed = tiny_train(tiny_net, steps=2, checkpoint_dir=tmp_path, preprocess=preprocess)
    assert len(resumed.history["total"]) == 2  # the checkpoint's configuration matched


def test_a_configuration_that_is_not_json_fails_before_training(tiny_net, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "tensors_sha256", lambda named: b"bytes")
    monkeypatch.setattr(train_module, "train_step", lambda *a: pytest.fail("trained before the config was checked"))
    with pytest.raises(TypeError, match="not JSON serializable"):
        tiny_train(tiny_net, checkpoint_dir=tmp_path)


def test_seed_changes_the_run(tiny_net):
    a, b = tiny_train(tiny_net, steps=1, seed=0), tiny_train(tiny_net, steps=1, seed=1)
    assert not torch.equal(a.network.conv1.conv2d.weight, b.network.conv1.conv2d.weight)


def test_resume_false_starts_over(tiny_net, tmp_path):
    tiny_train(tiny_net, steps=1, checkpoint_dir=tmp_path)
    fresh = tiny_train(tiny_net, steps=2, checkpoint_dir=tmp_path, resume=False, seed=1)
    assert len(fresh.history["total"]) == 2  # resuming would have refused the seed-0 checkpoint


@pytest.mark.parametrize("change, field", [(dict(size=36), "size"), (dict(tv_weight=0.5), "tv_weight"),
                                           (dict(styles=[pixels(3, 40, 36)] * 2), "num_styles"),
                                           (dict(styles=[pixels(3, 40, 36)]), "multi_style"),
                                           (dict(styles=pixels(3, 40, 36, seed=7)), "styles_sha256"),
                                           (dict(preprocess=Preprocess(24, (0.5,) * 3, (0.5,) * 3)), "loss_normalization")])
def test_checkpoint_of_another_configuration_is_refused(tiny_net, tmp_path, change, field):
    tiny_train(tiny_net, steps=1, checkpoint_dir=tmp_path)
    styles = change.pop("styles", None)
    with pytest.raises(ValueError, match=f"another configuration.*{field}: checkpoint"):
        tiny_train(tiny_net, styles, steps=2, checkpoint_dir=tmp_path, **change)


def test_checkpoint_of_other_content_images_or_loss_weights_is_refused(tiny_net, tmp_path):
    from pyfastviz.models import sample_image

    photos = [sample_image("chelsea").resize((40, 30)), sample_image("coffee").resize((40, 30))]
    tiny_train(tiny_net, content_images=photos, steps=1, checkpoint_dir=tmp_path)
    others = [sample_image("astronaut").resize((40, 30)), sample_image("rocket").resize((40, 30))]
    with pytest.raises(ValueError, match="another configuration.*content_sha256: checkpoint"):
        tiny_train(tiny_net, content_images=others, steps=2, checkpoint_dir=tmp_path)
    halved = copy.deepcopy(tiny_net)
    with torch.no_grad():
        for parameter in halved.parameters():
            parameter.mul_(0.5)
    with pytest.raises(ValueError, match="another configuration.*loss_model_sha256: checkpoint"):
        tiny_train(halved, content_images=photos, steps=2, checkpoint_dir=tmp_path)
    assert len(tiny_train(tiny_net, content_images=photos, steps=2, checkpoint_dir=tmp_path).history["total"]) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "network", "empty"])
def test_damaged_or_foreign_checkpoint_gives_a_clear_error(tiny_net, tmp_path, damage):
    path = tmp_path / CHECKPOINT_NAME
    if damage == "garbage":
        path.write_bytes(b"GIF89a not a checkpoint at all" * 10)
    elif damage == "truncated":
        tiny_train(tiny_net, steps=1, checkpoint_dir=tmp_path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"epoch": 3, "weights": [torch.zeros(2)]}, path)
    elif damage == "network":
        save_style_network(TransformerNet(), path)
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="checkpoint"):
        tiny_train(tiny_net, steps=2, checkpoint_dir=tmp_path)


def test_loss_model_is_left_as_found(tiny_net):
    tiny_net.train()
    tiny_net.conv3.requires_grad_(False)
    before = model_state(tiny_net)
    tiny_train(tiny_net, steps=2)
    assert_same_state(before, model_state(tiny_net))
    assert tiny_net.training and tiny_net.conv1.weight.requires_grad and not tiny_net.conv3.weight.requires_grad


def test_loss_model_is_restored_when_training_fails(tmp_path):
    torch.manual_seed(0)
    model = FailsLater(fail_at=4)  # style targets: call 1; step 1: calls 2-3; step 2 raises
    model.train()
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        tiny_train(model, steps=3, content_layer="conv2", style_layers=["conv1", "conv2"], checkpoint_dir=tmp_path)
    assert_same_state(before, model_state(model))
    assert list(tmp_path.iterdir()) == []  # no checkpoint was due, nothing half-written


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(size=0), ValueError, "size must be an int >= 1"),
    (dict(batch_size=2.0), ValueError, "batch_size"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(lr=0), ValueError, "lr must be"),
    (dict(style_weight=float("nan")), ValueError, "style_weight"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(checkpoint_every=0), ValueError, "checkpoint_every"),
    (dict(content_layer="nope"), ValueError, "content_layer"),
    (dict(style_layers=["relu1", "nope"]), ValueError, "style_layers"),
    (dict(device="meta"), ValueError, "device"),
    (dict(device="cpux"), ValueError, "device"),
    (dict(mixed_precision=True), ValueError, "mixed_precision"),
    (dict(mixed_precision="bf16"), TypeError, "mixed_precision"),
    (dict(content_images=[]), ValueError, "content_images"),
    (dict(content_images=[3]), TypeError, "content_images"),
    (dict(content_images="/nonexistent/folder"), ValueError, "content_images"),
    (dict(styles=[]), ValueError, "style_images"),
    (dict(styles=3), TypeError, "style_images"),
    (dict(styles=pixels(2, 3, 8, 8)), ValueError, "style_images"),
    (dict(styles=pixels(1, 8, 8)), ValueError, "style_images"),
    (dict(styles=pixels(3, 8, 8) * 255), ValueError, r"style_images: a tensor must hold pixels in \[0, 1\].*255"),
    (dict(styles=pixels(3, 8, 8) - 0.5), ValueError, r"style_images: a tensor must hold pixels in \[0, 1\]"),
    (dict(styles=torch.zeros(3, 0, 8)), ValueError, "style_images"),
    (dict(loss_model="vgg16"), TypeError, "model"),
])
def test_bad_arguments_name_the_argument(tiny_net, kwargs, error, match):
    kwargs = {"loss_model": tiny_net, **kwargs}
    styles = kwargs.pop("styles", None)
    with pytest.raises(error, match=match):
        tiny_train(kwargs.pop("loss_model"), styles, **kwargs)


def test_style_pixels_off_by_rounding_are_clamped(tiny_net):
    style = pixels(3, 40, 36)
    nudged = style.clone()
    nudged[0, 0, :2] = torch.tensor([-1e-4, 1 + 1e-4])
    style[0, 0, :2] = torch.tensor([0.0, 1.0])
    assert tiny_train(tiny_net, nudged, steps=1).history == tiny_train(tiny_net, style, steps=1).history


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_trains_inside_no_grad_and_inference_mode(tiny_net, tmp_path, context):
    """The same run as outside, style image made inside the context too (an inference tensor
    under inference_mode); the network comes out trainable."""
    expected = tiny_train(tiny_net, steps=2)
    with context():
        result = tiny_train(tiny_net, pixels(3, 40, 36), steps=2, checkpoint_dir=tmp_path)
    assert result.history == expected.history
    for name, value in expected.network.state_dict().items():
        assert torch.equal(result.network.state_dict()[name], value)
    assert all(p.requires_grad and not p.is_inference() for p in result.network.parameters())


def test_checkpoints_get_the_umasks_permissions(tiny_net, tmp_path):
    old = os.umask(0o022)
    try:
        tiny_train(tiny_net, steps=1, checkpoint_dir=tmp_path / "new" / "folder")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "folder" / CHECKPOINT_NAME).stat().st_mode) == 0o644


def test_default_layers_need_a_known_model():
    from pyfastviz.fast_style import train_style

    with pytest.raises(ValueError, match="no default style/content layers"):
        train_style(pixels(3, 16, 16), loss_model=TinyLossNet(), steps=0, progress=False)
