import os

import numpy as np
import pytest
import torch
import torchvision

from pyfastviz.models import Preprocess, available_models, load_model, preprocess_of, sample_image


@pytest.mark.slow
@pytest.mark.parametrize("photo, label", [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_default_model_classifies_sample_photos(default_model, photo, label):
    x = default_model.preprocess.batch([sample_image(photo)])
    with torch.no_grad():
        top = default_model.top_classes(default_model.net(x), k=3)
    assert top[0][0][0] == label
    assert [p for _, p in top[0]] == sorted((p for _, p in top[0]), reverse=True)


@pytest.mark.slow
def test_default_preprocessing_matches_what_the_weights_were_trained_on(default_model):
    """The stem's batch norm holds the statistics of the training inputs. With the default
    preprocessing ((pixel - 127) / 128, EfficientNet-Lite's) the sample photos' stem activations
    have their variance (geometric mean over channels of variance / running variance: measured
    0.90); with ImageNet's mean/std it is 4.42 (inputs about twice too large)."""
    from dataclasses import replace

    from pyfastviz.models.zoo import IMAGENET_MEAN, IMAGENET_STD

    net = default_model.net
    photos = [sample_image(name) for name in ("chelsea", "coffee", "astronaut", "rocket", "china", "flower")]

    def variance_ratio(preprocess):
        with torch.no_grad():
            stem = net._conv_stem(preprocess.batch(photos))
        running = net._bn0.running_var
        kept = running > 1e-4  # channels that are dead in training have no spread to compare
        return (stem.var((0, 2, 3))[kept] / running[kept]).log().mean().exp().item()

    assert 0.7 <= variance_ratio(default_model.preprocess) <= 1.4
    assert variance_ratio(replace(default_model.preprocess, mean=IMAGENET_MEAN, std=IMAGENET_STD)) > 3


def test_loaded_nets_carry_their_preprocess(default_model):
    """Techniques given a net without preprocess= use the one load_model gave it."""
    from pyfastviz import fgsm

    net = default_model.net
    assert preprocess_of(net) == default_model.preprocess and preprocess_of(net, 96).size == 96
    assert preprocess_of(net, 96).mean == default_model.preprocess.mean
    assert preprocess_of(torch.nn.Conv2d(3, 4, 1)) == Preprocess(224)  # any other module: ImageNet's
    x = default_model.preprocess.batch([sample_image("chelsea")])[:, :, :64, :64]
    implicit = fgsm(net, x, epsilon=8 / 255).images
    assert torch.equal(implicit, fgsm(net, x, epsilon=8 / 255, preprocess=default_model.preprocess).images)
    assert not torch.equal(implicit, fgsm(net, x, epsilon=8 / 255, preprocess=Preprocess(64)).images)


def test_default_model_state(default_model):
    net = default_model.net
    assert default_model.name == "efficientnet_lite0" and default_model.name in available_models()
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert isinstance(net._blocks[1]._swish, torch.nn.ReLU6)
    assert len(default_model.class_names) == 1000


def test_default_model_accepts_other_sizes(default_model):
    with torch.no_grad():
        assert default_model.net(torch.zeros(2, 3, 193, 250)).shape == (2, 1000)


def test_class_index(default_model):
    assert default_model.class_index("Egyptian cat") == 285
    assert default_model.class_index("egyptian CAT") == 285
    assert default_model.class_index(285) == 285
    # "Cardigan" (the corgi) and "cardigan" (the sweater) differ only by case
    assert default_model.class_index("Cardigan") != default_model.class_index("cardigan")
    with pytest.raises(ValueError, match="ambiguous"):
        default_model.class_index("CARDIGAN")
    with pytest.raises(ValueError, match="out of range"):
        default_model.class_index(1000)


def test_class_index_bad_name_lists_close_names(default_model):
    with pytest.raises(ValueError, match="name_or_index='Egyptain cat'") as info:
        default_model.class_index("Egyptain cat")
    assert "'Egyptian cat'" in str(info.value)
    with pytest.raises(ValueError, match="name_or_index='cat'") as info:  # a word of class names: those first
        default_model.class_index("cat")
    assert "'tiger cat'" in str(info.value) and "'Egyptian cat'" in str(info.value)


def test_preprocess_shapes_and_inverse():
    pre = Preprocess(64)
    image = sample_image("rocket")  # 640 x 427, landscape
    x = pre(image)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert pre.batch([image, image.convert("L")]).shape == (2, 3, 64, 64)
    assert pre.batch([]).shape == (0, 3, 64, 64)
    x01 = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(pre.denormalize(pre.normalize(x01)), x01)
    low, high = pre.valid_range()
    assert low.shape == high.shape == (3, 1, 1)
    torch.testing.assert_close(pre.denormalize(low.expand(3, 2, 2)), torch.zeros(3, 2, 2))
    torch.testing.assert_close(pre.denormalize(high.expand(3, 2, 2)), torch.ones(3, 2, 2))
    assert pre.denormalize(torch.full((3, 2, 2), 100.0)).max() == 1.0
    with pytest.raises(ValueError, match="shape"):
        pre.normalize(torch.zeros(4, 8, 8))


def test_preprocess_centre_crops_the_shorter_side():
    from PIL import Image

    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 100, 100))  # left third blue: cropped away
    x = Preprocess(50, mean=(0, 0, 0), std=(1, 1, 1))(image)
    assert torch.allclose(x[:, :, 5:-5], torch.tensor([1.0, 0, 0]).view(3, 1, 1))


def test_preprocess_antialiases():
    from PIL import Image

    checker = Image.fromarray(((np.indices((400, 400)).sum(0) % 2) * 255).astype(np.uint8))
    x = Preprocess(50, mean=(0, 0, 0), std=(1, 1, 1))(checker)
    assert (x - 0.5).abs().max() < 0.05  # 1-pixel checkerboard shrunk 8x averages to grey


@pytest.mark.parametrize("name", ["squeezenet1_1", "resnet50"])  # resnet50's DEFAULT: resize 232
def test_torchvision_preprocess_equals_the_weights_transforms(tmp_path, name, monkeypatch):
    import pyfastviz.models.zoo as zoo

    builder, weights_enum = zoo._TORCHVISION[name]
    monkeypatch.setattr(zoo, "_load_state_dict", lambda net, path: None)  # the transform is what is tested
    preprocess = load_model(name, weights_path=tmp_path / "unused.pth").preprocess
    expected_transform = weights_enum.DEFAULT.transforms()
    for photo in ("rocket", "astronaut"):  # landscape and square
        image = sample_image(photo)
        torch.testing.assert_close(preprocess(image), expected_transform(image), atol=1e-6, rtol=0)


def test_vgg16_feature_weights_load_with_a_warning(tmp_path, monkeypatch):
    """torchvision's IMAGENET1K_FEATURES file (Gatys-style VGG16) has no class names: NaN classifier."""
    import pyfastviz.models.zoo as zoo

    monkeypatch.setattr(zoo, "_load_state_dict", lambda net, path: None)  # 528 MB of weights are not the point
    features = torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES
    with pytest.warns(RuntimeWarning, match="convolutional features only"):
        model = load_model("vgg16", weights_path=tmp_path / os.path.basename(features.url))
    assert len(model.class_names) == 1000
    assert model.preprocess.std == tuple(features.transforms().std)  # its own (Caffe-style) normalisation


def test_unknown_model_name():
    with pytest.raises(ValueError, match="name='vgg61'.*vgg16"):
        load_model("vgg61")


def test_torchvision_arch_without_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_model("squeezenet1_1")
    message = str(info.value)
    assert "squeezenet1_1-b8a52dc0.pth" in message
    assert str(tmp_path / "checkpoints") in message
    assert "weights_path=" in message


def test_torchvision_arch_from_weights_file(tmp_path):
    reference = torchvision.models.squeezenet1_1(weights=None)
    path = tmp_path / "squeeze.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_model("squeezenet1_1", weights_path=path)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[key], value)
    assert not loaded.net.training
    assert loaded.preprocess == Preprocess(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), resize=256)
    assert loaded.class_names[285] == "Egyptian cat"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x), reference.eval()(x))


def test_torchvision_arch_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    os.makedirs(tmp_path / "checkpoints")
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(),
               tmp_path / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")
    assert load_model("squeezenet1_1").name == "squeezenet1_1"


def test_older_torchvision_weights_are_found_and_get_their_own_transform(tmp_path, monkeypatch):
    # resnet50's DEFAULT is V2 (resize 232); older torchvision cached V1 (resize 256) as resnet50-0676ba61.pth
    import pyfastviz.models.zoo as zoo

    loaded = []
    monkeypatch.setattr(zoo, "_load_state_dict", lambda net, path: loaded.append(os.path.basename(path)))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "resnet50-0676ba61.pth").write_bytes(b"")
    assert load_model("resnet50").preprocess.resize == 256 and loaded == ["resnet50-0676ba61.pth"]
    assert load_model("resnet50", weights_path=tmp_path / "resnet50-11ad3fa6.pth").preprocess.resize == 232
    assert load_model("resnet50", weights_path=tmp_path / "my-finetune.pth").preprocess.resize == 232  # DEFAULT's


def test_corrupt_weights_file_names_the_path(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        load_model("squeezenet1_1", weights_path=path)
    with pytest.raises(ValueError, match="broken.pth"):
        load_model(weights_path=path)


def test_an_unsafe_pickle_is_refused_without_the_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"weights": torchvision.models.squeezenet1_1}, path)  # a pickled function: weights_only refuses it
    with pytest.raises(ValueError, match=r"could not load weights from .*code.pth.*\(torch.load: ") as info:
        load_model("squeezenet1_1", weights_path=path)
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from DataParallel
    lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # a torch.compile'd model's
    lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()},  # DDP of a compiled model
    lambda sd: {**{f"module.{k}": v for k, v in sd.items()}, "n_averaged": torch.tensor(5)},  # AveragedModel (EMA)
    lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 1},  # Lightning
], ids=["state_dict", "model+module", "module", "compiled", "ddp+compiled", "ema", "lightning"])
def test_training_checkpoints_are_unwrapped(tmp_path, wrap):
    reference = torchvision.models.squeezenet1_1(weights=None)
    torch.save(wrap(reference.state_dict()), tmp_path / "checkpoint.pth")
    loaded = load_model("squeezenet1_1", weights_path=tmp_path / "checkpoint.pth")
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[key], value)


def test_mismatched_weights_file_names_the_path_and_counts_the_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet18.pth.* into SqueezeNet: 52 of its 52 keys are missing \('features.0"
                                         r".*and 49 more\); 122 keys are not its \('conv1.weight'.*and 119 more\); "
                                         "are they another architecture's") as info:
        load_model("squeezenet1_1", weights_path=path)
    assert len(str(info.value)) < 400  # not every key


@pytest.mark.parametrize("content", [None, torch.zeros(3), [1, 2]], ids=["None", "tensor", "list"])
def test_a_file_holding_no_state_dict_is_refused_clearly(tmp_path, content):
    torch.save(content, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=f"odd.pth'.*holds a {type(content).__name__}, not a state dict"):
        load_model("squeezenet1_1", weights_path=tmp_path / "odd.pth")


def test_a_fine_tune_with_other_classes_is_named_in_one_line(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), tmp_path / "ten.pth")
    with pytest.raises(ValueError, match=r"'fc.weight' is \(10, 512\) there, \(1000, 512\) here \(another "
                                         "number of classes") as info:
        load_model("resnet18", weights_path=tmp_path / "ten.pth")
    assert "\n" not in str(info.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_model("squeezenet1_1", weights_path=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="is a folder: give the weights file"):
        load_model("squeezenet1_1", weights_path=tmp_path)


def test_preprocess_sides_are_checked_and_preprocess_of_keeps_the_crop_ratio():
    from pyfastviz.models import preprocess_of

    for bad in (dict(size=0), dict(size=True), dict(size=224, resize=100), dict(size=224, resize=2.5)):
        with pytest.raises(ValueError, match="Preprocess (size|resize)"):
            Preprocess(**bad)
    net = torch.nn.Conv2d(3, 3, 1)
    net.pyfastviz_preprocess = Preprocess(224, resize=256)
    assert preprocess_of(net, 448) == Preprocess(448, resize=512)
    assert preprocess_of(net) is net.pyfastviz_preprocess


def test_preprocess_of_a_timm_model_is_its_pretrained_config():
    """timm models carry their normalisation in pretrained_cfg (MobileViT: mean 0, std 1; Inception:
    0.5/0.5); ImageNet's was assumed, which put fooling images 4.5x over their pixel budget."""
    import pyfastviz

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
    net.pretrained_cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "input_size": (3, 32, 32),
                          "crop_pct": 0.875, "num_classes": 5}
    assert preprocess_of(net) == Preprocess(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize=37)
    assert preprocess_of(net, 64) == Preprocess(64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize=74)
    images = torch.rand(2, 3, 32, 32)  # pixels in [0, 1] are the input itself
    net(images)
    fooled = pyfastviz.fgsm(net, images, epsilon=8 / 255)
    assert (fooled.images - images).abs().max() <= 8 / 255 + 1e-6
    net.pretrained_cfg = {"mean": (0.5, 0.5), "std": (0.5, 0.5)}  # not RGB: not used
    assert preprocess_of(net) == Preprocess(224)
