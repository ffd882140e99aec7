"""The frozen trunk (varro.engine.train.trunk, varro.engine.model.frozen): the layers below the first
trainable one run once per row, and every pass and step of a day starts above them with the same values
as a forward through all the layers."""

import copy

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from support.helpers import assert_step_rows_equal, scored_groups, tiny_config
from varro.engine.model.frozen import Frozen, recording, replaying
from varro.engine.model.memory import ModelShape, day_states_bytes
from varro.engine.model.tiny import write_tiny_model
from varro.engine.run.policy import Policy
from varro.engine.train.batching import make_chunks
from varro.engine.train.errors import TrainingError
from varro.engine.train.logprobs import PrefixCache, forward_hidden, prefix_kv
from varro.engine.train.trunk import Trunk


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    """A tiny Qwen3 model of 4 layers: LoRA on the top 2 leaves 2 frozen below them."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny4", seed=1, vocab_size=512, num_layers=4)


def open_policy(path, run_path, **train):
    cfg = tiny_config(path, minibatches=2, beta=0.05, learning_rate=2e-2, micro_batch=3, **train)
    return Policy.open(cfg, run_path)


def count_positions(monkeypatch, layer) -> list[int]:
    """A one-item list that counts the positions `layer` runs on from now."""
    seen = [0]
    cls = type(layer)
    original = cls.__call__

    def counted(self, x, *args, **kwargs):
        if self is layer:
            seen[0] += x.shape[0] * x.shape[1]
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", counted)
    return seen


def test_replaying_the_recorded_states_gives_the_whole_forward(four_layers, tmp_path):
    """A forward that starts at layer 2 from layer 1's recorded output equals the forward through all four
    layers, for a prompt and for rows on top of its cache, and the swap leaves the model as it was."""
    pol = open_policy(four_layers, tmp_path / "r")
    model = pol.model
    layers = list(model.layers)
    head = mx.array([[5, 9, 11, 3, 7]])
    rows = mx.array([[2, 4, 6], [8, 10, 12]])
    kv = prefix_kv(model, head)
    want = forward_hidden(model, kv, rows)
    with recording(model, 2) as rec:
        model(head)
        at_head = rec.out
        cache = [PrefixCache() for _ in layers]
        model(head, cache=cache)
        model(rows, cache=cache)
        at_rows = rec.out
    assert list(model.layers) == layers  # the stand-ins are gone
    kv2 = prefix_kv(model, head, Frozen(2, at_head))
    assert kv2[:4] == [None] * 4  # the frozen layers' keys and values were not computed
    for a, b in zip(kv[4:], kv2[4:]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-6)
    got = forward_hidden(model, kv2, rows, Frozen(2, at_rows))
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)
    assert list(model.layers) == layers
    with pytest.raises(ValueError, match="start"):
        with recording(model, 0):
            pass


@pytest.mark.parametrize("head_chunk", [0, 100])
def test_a_training_day_equals_the_one_through_every_layer(four_layers, tmp_path, monkeypatch, head_chunk):
    """Every value of every step row (pi_old, the reference pass, the loss, ratio, KL, entropy, the
    end-of-day KL and entropy) and the weights the day ends with equal those of the day that runs every
    forward through all four layers, to float32 rounding; and the frozen layers ran only for the trunk."""
    plain = open_policy(four_layers, tmp_path / "plain")
    plain.trainer.keep_states, plain.trainer.head_chunk = False, head_chunk
    groups = scored_groups(plain, seed=7)
    want = plain.trainer.train_day(copy.deepcopy(groups))

    trunk = open_policy(four_layers, tmp_path / "trunk")
    trunk.trainer.head_chunk = head_chunk
    seen = count_positions(monkeypatch, trunk.model.layers[0])
    day = copy.deepcopy(groups)
    got = trunk.trainer.train_day(day)

    assert len(got) == len(want) == 2 and not any(r["skipped"] for r in got)
    assert abs(want[1]["ratio_mean"] - 1.0) > 1e-4 and want[1]["kl"] > 1e-6  # off-policy, a KL to compare
    assert want[1]["kl_after"] > 1e-5
    assert_step_rows_equal(got, want)
    after, before = dict(tree_flatten(trunk.model.parameters())), dict(tree_flatten(plain.model.parameters()))
    for k in dict(tree_flatten(plain.model.trainable_parameters())):
        # Adam divides by a gradient's own size, so an entry whose gradient is near zero can move by a share
        # of a step on rounding alone (one entry in 512 here, by 4% of the learning rate); an error in the
        # trunk moves every entry
        d = np.abs(np.array(after[k]) - np.array(before[k]))
        assert d.max() < 0.1 * 2e-2 and (d > 1e-5).mean() < 0.01, k
    # layer 0 ran once over each kept prompt (less its last token) and its rows' positions: the trunk's build
    chunks = make_chunks([r for g in day if any(x.advantage != 0 for x in g) for r in g])
    width = sum(c.rows * c.inputs.shape[1] for c in chunks)
    assert seen[0] == sum(c.head.shape[1] for c in chunks) + width
    assert trunk.trainer.trunk is None  # the day's states are dropped with the day


def test_the_trunk_refuses_a_row_it_was_not_built_on(four_layers, tmp_path):
    pol = open_policy(four_layers, tmp_path / "t")
    groups = scored_groups(pol, seed=3)
    for g in groups:
        for r in g:
            r.advantage = 0.0
    trunk = Trunk.build(pol.model, groups[0], 0, lambda p: 0)
    assert trunk.start == 2 and trunk.nbytes() > 0
    with pytest.raises(TrainingError, match="output was not computed for rollout"):
        trunk.rows(make_chunks(groups[1])[0])
    with pytest.raises(TrainingError, match="not built on"):
        trunk.prompt(make_chunks(groups[1])[0])
    # what it holds, against the memory guard's count for the group's longest prompt and completion
    shape = ModelShape.from_model(pol.model)
    g = groups[0]
    head = len(g[0].prompt_tokens) - 1
    exact = (sum(len(r.completion_tokens) for r in g) + head) * shape.hidden * 4
    assert trunk.nbytes() == exact
    longest = max(len(r.completion_tokens) for r in g)
    ref = longest * len(g) * shape.hidden * 4  # the reference's kept states, not built here
    assert exact <= day_states_bytes(shape, len(g), len(g), head + 1, longest) - ref


def test_no_trunk_when_every_layer_trains(tiny_model_path, tmp_path):
    """LoRA on both of the 2-layer model's layers: nothing is frozen below a trainable layer."""
    pol = Policy.open(tiny_config(tiny_model_path), tmp_path / "all")
    groups = scored_groups(pol, seed=3)
    for r in groups[0]:
        r.advantage = 0.0
    assert Trunk.build(pol.model, groups[0], 0, lambda p: 0) is None
    with replaying(pol.model, None):
        pass
