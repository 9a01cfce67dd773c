"""Auxiliary over-parameterisation: the wide path trains the compact net, then vanishes."""

import pytest
import torch

from dnc import builders, stages
from dnc.config import ConfigError
from dnc.evaluation.flops import cost, count_params
from dnc.methods.auxiliary import AuxiliaryTask
from dnc.methods.auxiliary_net import forward_with_features
from dnc.train import checkpoint

SMALL = {
    "train.epochs": 1,
    "data.train_size": 384,
    "data.test_size": 128,
    "eval.latency_batch_sizes": [1],
    "eval.latency_repeats": 1,
}
SHAPE = (1, 8, 8)


@pytest.fixture()
def aux_params(tiny_params):
    return tiny_params.with_overrides({"method": "auxiliary", "split.factor": 1, **SMALL})


def task_for(params) -> AuxiliaryTask:
    model = builders.build_inference_model(params, 10, 1, 8)
    return builders.build_task(params, model)


def test_trains_evaluates_and_exports_only_the_compact_net(aux_params, tmp_path):
    result = stages.train(aux_params, None, tmp_path / "run")
    last = result.state.history[-1]
    assert {"train/ce", "train/ce_aux", "train/kd_aux"} <= set(last)
    metrics = stages.evaluate(aux_params, None, tmp_path / "run", tmp_path / "m.json")
    assert [row["label"] for row in metrics["curve"]] == ["compact"]
    assert metrics["curve"][0]["method"] == "auxiliary"
    # The exported model is the plain compact net: same keys, params and MACs as one built
    # fresh for method splitnet with the same model and split factor.
    fresh = builders.build_model(aux_params.with_overrides({"method": "splitnet"}), 10, 1, 8)
    saved = checkpoint.load(tmp_path / "run" / checkpoint.BEST)["model_state"]
    assert saved.keys() == fresh.state_dict().keys()
    loaded, _ = builders.load_model(aux_params, tmp_path / "run", 10, 1, 8)
    assert cost(loaded, SHAPE) == cost(fresh, SHAPE)
    assert metrics["ensemble"]["params"] == count_params(fresh)
    assert metrics["ensemble"]["macs"] == cost(fresh.members[0], SHAPE)["macs"]
    # ... while training carried the auxiliary module (resumable from last.pt).
    task_state = checkpoint.load(tmp_path / "run" / checkpoint.LAST)["task_state"]
    assert any(k.startswith("auxiliary.0.wide.") for k in task_state)


def test_compact_path_never_reads_the_auxiliary_path(aux_params):
    task = task_for(aux_params)
    member, aux = task.model.members[0], task.auxiliary[0]
    x = torch.randn(4, *SHAPE)
    member.eval(), aux.eval()
    logits, feats = forward_with_features(member, x)
    assert torch.equal(logits, member(x))
    # The connections start closed (zero BN scale): the wide path ignores the compact one.
    assert torch.equal(aux(x, feats), aux(x, [torch.zeros_like(f) for f in feats]))
    # Once open, the auxiliary loss alone reaches the compact blocks ...
    for connection in aux.connections.values():
        torch.nn.init.ones_(connection[1].weight)
    aux(x, feats).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in member.blocks.parameters())
    assert member.head.fc.weight.grad is None  # ... but not the compact head


def test_no_connection_means_no_gradient_into_the_compact_blocks(aux_params):
    task = task_for(aux_params.with_overrides({"auxiliary.attach": [0]}))
    member, aux = task.model.members[0], task.auxiliary[0]
    torch.nn.init.ones_(aux.connections["0"][1].weight)
    _, feats = forward_with_features(member, torch.randn(4, *SHAPE))
    aux(torch.randn(4, *SHAPE), feats).sum().backward()
    assert all(p.grad is not None for p in member.blocks[0].parameters())
    assert all(p.grad is None for p in member.blocks[1].parameters())


def test_auto_learns_hierarchical_gates_without_weight_decay(aux_params):
    params = aux_params.with_overrides({"auxiliary.attach": "auto", "auxiliary.gate_penalty": 0.1})
    task = task_for(params)
    aux = task.auxiliary[0]
    gates = aux.gates()
    assert sorted(gates) == [0, 1, 2, 3, 4]
    assert all(g.item() == pytest.approx(0.25) for g in gates.values())  # sigma(0) * sigma(0)
    groups = task.param_groups(5e-4)
    assert groups[-1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in aux.gate_logits.parameters()}
    parts = task.training_step(torch.randn(1, 8, *SHAPE), torch.arange(8), 0.0)
    assert "mean_gate" in parts and "gate_4" in parts
    parts["loss"].backward()
    assert aux.gate_logits["stage"].grad is not None


def test_divided_compact_net_trains_with_cotraining(aux_params):
    task = task_for(aux_params.with_overrides({"split.factor": 2}))
    assert len(task.auxiliary) == 2 and task.num_views == 2
    parts = task.training_step(torch.randn(2, 8, *SHAPE), torch.arange(8), 5.0)
    assert {"js", "ce_aux", "kd_aux"} <= set(parts)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"auxiliary.attach": [0, 7]}, r"^auxiliary\.attach: block 7 does not exist"),
    ],
)
def test_bad_auxiliary_config_fails_at_stage_start(aux_params, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        stages.train(aux_params.with_overrides(overrides), None, tmp_path / "run")


def test_bad_attach_fails_at_load(aux_params):
    with pytest.raises(ConfigError, match=r"^auxiliary\.attach: "):
        aux_params.with_overrides({"auxiliary.attach": "everywhere"})


def test_info_compares_compact_and_training_params(aux_params):
    from dnc.data import get_dataset_info
    from dnc.methods import get_method

    info = get_method("auxiliary").info(aux_params, get_dataset_info("digits"))["auxiliary"]
    assert info["training_params"] == info["compact_params"] + info["auxiliary_params"]
    assert info["auxiliary_params"] > info["compact_params"]
