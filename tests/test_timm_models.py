"""timm's own generic model tests (``tests/test_models.py`` of huggingface/pytorch-image-models),
ported to the zoo: every test below is timm's, with timm's assertions and tolerances, parametrized
over every registered model (``test_model_default_cfgs`` over every ``name.tag``, as timm's
``include_tags=True``).

Where a timm test does not apply, it is listed here with the reason:

* ``test_model_inference``: compares ``timm/test_*`` checkpoints against tensors stored in their Hub
  repos; the zoo's published weights are instead re-evaluated on the real MNIST test set in
  ``test_published_weights.py``.
* ``test_model_default_cfgs_non_std``: for transformers/hybrids (timm's ``NON_STD_FILTERS``); every
  zoo model is a standard NCHW CNN and runs ``test_model_default_cfgs``.
* ``test_model_load_pretrained`` / ``test_model_features_pretrained``: run per published tag in
  ``test_published_weights.py`` (they need the weights mirror of ``RESMG_ZOO_HUB_DIR``).
* timm's size limits (``TARGET_*_SIZE``, ``MAX_*_SIZE``) never bind: the zoo's inputs are 28–32 px.

``test_model_forward_torchscript_with_features_fx`` runs for every model here (timm runs it for
``regnetx_002`` only).
"""

import math
import warnings

import pytest
import timm
import torch
from conftest import MODEL_NAMES
from timm import create_model, get_pretrained_cfg_value, list_models, set_scriptable
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

TAGGED_NAMES = [n for n in list_models(include_tags=True) if n.split(".")[0] in MODEL_NAMES]

# timm's targets (its tests/test_models.py)
TARGET_FWD_SIZE = MAX_FWD_SIZE = 384
TARGET_BWD_SIZE = 128
MAX_BWD_SIZE = 320
MAX_FWD_OUT_SIZE = 448
TARGET_JIT_SIZE = 128
MAX_JIT_SIZE = 320
TARGET_FFEAT_SIZE = 96
MAX_FFEAT_SIZE = 256
TARGET_FWD_FX_SIZE = 128
MAX_FWD_FX_SIZE = 256
TARGET_BWD_FX_SIZE = 128
MAX_BWD_FX_SIZE = 224

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def _get_input_size(model=None, model_name="", target=None):
    if model is None:
        assert model_name, "One of model or model_name must be provided"
        input_size = get_pretrained_cfg_value(model_name, "input_size")
        fixed_input_size = get_pretrained_cfg_value(model_name, "fixed_input_size")
        min_input_size = get_pretrained_cfg_value(model_name, "min_input_size")
    else:
        default_cfg = model.default_cfg
        input_size = default_cfg["input_size"]
        fixed_input_size = default_cfg.get("fixed_input_size", None)
        min_input_size = default_cfg.get("min_input_size", None)
    assert input_size is not None
    if fixed_input_size:
        return input_size
    if min_input_size:
        if target and max(input_size) > target:
            input_size = min_input_size
    else:
        if target and max(input_size) > target:
            input_size = tuple([min(x, target) for x in input_size])
    return input_size


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward(model_name, batch_size):
    """Run a single forward pass with each model"""
    model = create_model(model_name, pretrained=False)
    model.eval()
    input_size = _get_input_size(model=model, target=TARGET_FWD_SIZE)
    assert max(input_size) <= MAX_FWD_SIZE
    inputs = torch.randn((batch_size, *input_size))
    outputs = model(inputs)
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"

    # grad-checkpointing is supported by every zoo model: it must not change the output
    model.set_grad_checkpointing()
    outputs2 = model(inputs)
    assert torch.allclose(outputs, outputs2, rtol=1e-4, atol=1e-5), "Output does not match"


def _check_backward(model, outputs, num_params):
    """timm's checks after a forward of a 42-class model: every parameter gets a gradient, no NaN."""
    outputs.mean().backward()
    for n, x in model.named_parameters():
        assert x.grad is not None, f"No gradient for {n}"
    num_grad = sum([x.grad.numel() for x in model.parameters() if x.grad is not None])
    assert outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [2])
def test_model_backward(model_name, batch_size):
    """Run a single forward pass with each model"""
    input_size = _get_input_size(model_name=model_name, target=TARGET_BWD_SIZE)
    assert max(input_size) <= MAX_BWD_SIZE
    model = create_model(model_name, pretrained=False, num_classes=42)
    num_params = sum([x.numel() for x in model.parameters()])
    model.train()
    inputs = torch.randn((batch_size, *input_size))
    _check_backward(model, model(inputs), num_params)


@pytest.mark.parametrize("model_name", TAGGED_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_default_cfgs(model_name, batch_size):
    """Run a single forward pass with each model"""
    model = create_model(model_name, pretrained=False)
    model.eval()
    assert model.num_classes >= 0
    assert model.num_features > 0
    assert model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.default_cfg
    pool_size = cfg["pool_size"]
    input_size = model.default_cfg["input_size"]
    output_fmt = getattr(model, "output_fmt", "NCHW")
    spatial_axis = get_spatial_dim(output_fmt)
    assert len(spatial_axis) == 2
    feat_axis = get_channel_dim(output_fmt)

    assert all([x <= MAX_FWD_OUT_SIZE for x in input_size])
    input_tensor = torch.randn((batch_size, *input_size))

    # test forward_features (always unpooled) & forward_head w/ pre_logits
    outputs = model.forward_features(input_tensor)
    outputs_pre = model.forward_head(outputs, pre_logits=True)
    assert outputs.shape[spatial_axis[0]] == pool_size[0], f"unpooled feature shape {outputs.shape} != config"
    assert outputs.shape[spatial_axis[1]] == pool_size[1], f"unpooled feature shape {outputs.shape} != config"
    assert outputs.shape[feat_axis] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size

    # test forward after deleting the classifier, output should be pooled, size(-1) == model.num_features
    model.reset_classifier(0)
    assert model.num_classes == 0
    outputs = model.forward(input_tensor)
    assert len(outputs.shape) == 2
    assert outputs.shape[1] == model.head_hidden_size
    assert outputs.shape == outputs_pre.shape

    # test model forward after removing pooling and classifier
    model.reset_classifier(0, "")
    outputs = model.forward(input_tensor)
    assert len(outputs.shape) == 4
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]

    # test classifier + global pool deletion via __init__
    model = create_model(model_name, pretrained=False, num_classes=0, global_pool="").eval()
    outputs = model.forward(input_tensor)
    assert len(outputs.shape) == 4
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]

    # check classifier name matches default_cfg
    if cfg.get("num_classes", None):
        classifier = cfg["classifier"]
        if not isinstance(classifier, (tuple, list)):
            classifier = (classifier,)
        for c in classifier:
            assert c + ".weight" in state_dict.keys(), f"{c} not in model params"

    # check first conv(s) names match default_cfg
    first_conv = cfg["first_conv"]
    if isinstance(first_conv, str):
        first_conv = (first_conv,)
    assert isinstance(first_conv, (tuple, list))
    for fc in first_conv:
        assert fc + ".weight" in state_dict.keys(), f"{fc} not in model params"


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward_torchscript(model_name, batch_size):
    """Run a single forward pass with each model"""
    input_size = _get_input_size(model_name=model_name, target=TARGET_JIT_SIZE)
    assert max(input_size) <= MAX_JIT_SIZE
    with set_scriptable(True):
        model = create_model(model_name, pretrained=False)
    model.eval()
    model = torch.jit.script(model)
    outputs = model(torch.randn((batch_size, *input_size)))
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"


def _check_features(model, outputs, input_size, batch_size, expected_channels, expected_reduction):
    feat_axis = get_channel_dim(getattr(model, "output_fmt", "NCHW"))
    spatial_axis = get_spatial_dim(getattr(model, "output_fmt", "NCHW"))
    assert len(expected_channels) == len(outputs)
    spatial_size = input_size[-2:]
    for e, r, o in zip(expected_channels, expected_reduction, outputs):
        assert e == o.shape[feat_axis]
        assert o.shape[spatial_axis[0]] <= math.ceil(spatial_size[0] / r) + 1
        assert o.shape[spatial_axis[1]] <= math.ceil(spatial_size[1] / r) + 1
        assert o.shape[0] == batch_size
        assert not torch.isnan(o).any()


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward_features(model_name, batch_size):
    """Run a single forward pass with each model in feature extraction mode"""
    model = create_model(model_name, pretrained=False, features_only=True)
    model.eval()
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()
    assert len(expected_channels) >= 3  # all models here should have at least 3 default feat levels
    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    assert max(input_size) <= MAX_FFEAT_SIZE
    outputs = model(torch.randn((batch_size, *input_size)))
    _check_features(model, outputs, input_size, batch_size, expected_channels, expected_reduction)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward_intermediates_features(model_name, batch_size):
    """Run a single forward pass with each model in feature extraction mode"""
    model = create_model(model_name, pretrained=False, features_only=True, feature_cls="getter")
    model.eval()
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()
    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    assert max(input_size) <= MAX_FFEAT_SIZE
    outputs = model(torch.randn((batch_size, *input_size)))
    _check_features(model, outputs, input_size, batch_size, expected_channels, expected_reduction)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward_intermediates(model_name, batch_size):
    """Run a single forward pass with each model in feature extraction mode"""
    model = create_model(model_name, pretrained=False)
    model.eval()
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    expected_channels = feature_info.channels()
    expected_reduction = feature_info.reduction()
    assert len(expected_channels) >= 3  # all models here should have at least 3 feature levels
    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    assert max(input_size) <= MAX_FFEAT_SIZE
    output_fmt = "NCHW"  # NOTE output_fmt determined by forward_intermediates() arg, not model attribute
    inpt = torch.randn((batch_size, *input_size))
    output, intermediates = model.forward_intermediates(inpt, output_fmt=output_fmt)
    _check_features(model, intermediates, input_size, batch_size, expected_channels, expected_reduction)

    output2 = model.forward_features(inpt)
    assert torch.allclose(output, output2)

    model.set_grad_checkpointing()
    output3, _ = model.forward_intermediates(inpt, output_fmt=output_fmt)
    assert torch.allclose(output, output3, rtol=1e-4, atol=1e-5), "Output does not match"


def _create_fx_model(model, train=False):
    # timm's: trace once and find the nodes that lead into the fx output node (several outputs in
    # train mode), then select those from the train nodes of torchvision's get_graph_node_names
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(),
        autowrap_functions=get_notrace_functions(),
        param_shapes_constant=True,
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes = [eval_nodes[-1]]
    train_return_nodes = [train_nodes[-1]]
    if train:
        tracer = NodePathTracer(**tracer_kwargs)
        graph = tracer.trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(node_name) for node_name in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]
    return create_feature_extractor(
        model,
        train_return_nodes=train_return_nodes,
        eval_return_nodes=eval_return_nodes,
        tracer_kwargs=tracer_kwargs,
    )


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward_fx(model_name, batch_size):
    """Symbolically trace each model and run single forward pass through the resulting GraphModule.
    Also check that the output of a forward pass through the GraphModule is the same as that from the original Module
    """
    model = create_model(model_name, pretrained=False)
    model.eval()
    input_size = _get_input_size(model=model, target=TARGET_FWD_FX_SIZE)
    assert max(input_size) <= MAX_FWD_FX_SIZE
    with torch.inference_mode():
        inputs = torch.randn((batch_size, *input_size))
        outputs = model(inputs)
        model = _create_fx_model(model)
        fx_outputs = torch.cat(tuple(model(inputs).values()))
    assert torch.all(fx_outputs == outputs)
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"
    # the zoo's addition: the input check (docs/contract.md §6) is a node of the traced graph, and runs there
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn((batch_size, input_size[0] + 1, *input_size[1:])))


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [2])
def test_model_backward_fx(model_name, batch_size):
    """Symbolically trace each model and run single backward pass through the resulting GraphModule"""
    input_size = _get_input_size(model_name=model_name, target=TARGET_BWD_FX_SIZE)
    assert max(input_size) <= MAX_BWD_FX_SIZE
    model = create_model(model_name, pretrained=False, num_classes=42)
    model.train()
    num_params = sum([x.numel() for x in model.parameters()])
    model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(model(torch.randn((batch_size, *input_size))).values()))
    _check_backward(model, outputs, num_params)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward_fx_torchscript(model_name, batch_size):
    """Symbolically trace each model, script it, and run single forward pass"""
    input_size = _get_input_size(model_name=model_name, target=TARGET_JIT_SIZE)
    assert max(input_size) <= MAX_JIT_SIZE
    with set_scriptable(True):
        model = create_model(model_name, pretrained=False)
    model.eval()
    model = torch.jit.script(_create_fx_model(model))
    with torch.inference_mode():
        outputs = torch.cat(tuple(model(torch.randn((batch_size, *input_size))).values()))
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("batch_size", [1])
def test_model_forward_torchscript_with_features_fx(model_name, batch_size):
    """Create a model with feature extraction based on fx, script it, and run a single forward pass"""
    input_size = _get_input_size(model_name=model_name, target=TARGET_JIT_SIZE)
    assert max(input_size) <= MAX_JIT_SIZE, "Fixed input size model > limit. Pick a different model to run this test"
    with set_scriptable(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = create_model(model_name, pretrained=False, features_only=True, feature_cfg={"feature_cls": "fx"})
    model.eval()
    model = torch.jit.script(model)
    with torch.inference_mode():
        outputs = model(torch.randn((batch_size, *input_size)))
    assert isinstance(outputs, list)
    for tensor in outputs:
        assert tensor.shape[0] == batch_size
        assert not torch.isnan(tensor).any(), "Output included NaNs"
