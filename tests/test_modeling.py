"""The multi-task model: masked losses, class weights, and a faithful save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from model.modeling import IGNORE_INDEX, BackboneWeightsError, MultiTaskClassifier
from model.preprocess import Preprocessing
from model.schema import Task, inverse_frequency_weights
from model.serialization import ModelFolderError, load_model_folder, save_model_folder
from model.tiny import build_tiny_backbone

TASKS = [Task("topic", ("military", "politics", "economy")), Task("stance", ("favor", "against", "none"), 0.5)]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    texts = ["اشتباكات في جنوب طرابلس", "جلسة للبرلمان في طبرق", "ارتفاع أسعار الوقود في سبها"] * 10
    return build_tiny_backbone(texts, tmp_path_factory.mktemp("bb") / "tiny", vocab_size=150)


def batch(tokenizer) -> dict[str, torch.Tensor]:
    return tokenizer(["اشتباكات في جنوب طرابلس", "ارتفاع أسعار الوقود"], padding=True, return_tensors="pt")


def test_masked_head_gets_no_gradient(backbone: str) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS)
    inputs = batch(AutoTokenizer.from_pretrained(backbone))
    labels = torch.tensor([[0, IGNORE_INDEX], [2, IGNORE_INDEX]])
    model(**inputs, labels=labels).loss.backward()
    # A zero gradient, not None: under DDP a head without a gradient fails the next step.
    assert model.heads["stance"].weight.grad is not None
    assert torch.all(model.heads["stance"].weight.grad == 0)
    assert model.heads["topic"].weight.grad.abs().sum() > 0


def test_batch_with_no_label_at_all_backpropagates_zero(backbone: str) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS)
    inputs = batch(AutoTokenizer.from_pretrained(backbone))
    loss = model(**inputs, labels=torch.full((2, 2), IGNORE_INDEX)).loss
    assert loss.item() == 0.0
    loss.backward()  # used to fail: the loss had no grad_fn
    for param in model.parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.all(param.grad == 0)


def test_loss_ignores_unlabelled_heads_in_its_value(backbone: str) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS).eval()
    inputs = batch(AutoTokenizer.from_pretrained(backbone))
    out = model(**inputs, labels=torch.tensor([[0, IGNORE_INDEX], [2, IGNORE_INDEX]]))
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits["topic"], torch.tensor([0, 2])))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_upper_layers_from_hidden_states_give_the_same_logits(backbone: str, pooling: str) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS, pooling=pooling).eval()
    inputs = batch(AutoTokenizer.from_pretrained(backbone))
    assert model.supports_layer_split() and (inputs["attention_mask"] == 0).any()  # padding in the batch
    with torch.no_grad():
        full = model(**inputs).logits
        for layers in (0, 1, model.config.encoder_config.num_hidden_layers):
            hidden = model.encode_lower(inputs["input_ids"], inputs["attention_mask"], layers)
            split = model(hidden_states=hidden, attention_mask=inputs["attention_mask"], from_layer=layers).logits
            assert all(torch.equal(full[name], split[name]) for name in full), layers


def test_loss_is_weighted_sum_of_tasks(backbone: str) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS).eval()
    inputs = batch(AutoTokenizer.from_pretrained(backbone))
    out = model(**inputs, labels=torch.tensor([[0, 1], [2, 2]]))
    topic = torch.nn.functional.cross_entropy(out.logits["topic"], torch.tensor([0, 2]))
    stance = torch.nn.functional.cross_entropy(out.logits["stance"], torch.tensor([1, 2]))
    assert torch.allclose(out.loss, topic + 0.5 * stance)


def test_label_smoothing_spreads_the_target_over_every_label(backbone: str) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS[:1])
    confident = {"topic": torch.tensor([[12.0, 0.0, 0.0]], requires_grad=True)}
    gold = torch.tensor([[0]])
    plain, smoothed = model.loss(confident, gold), model.loss(confident, gold, label_smoothing=0.3)
    assert plain.item() < 1e-4 < smoothed.item()  # a sure, right answer is still penalised: 0.2 of the target is elsewhere
    smoothed.backward()
    assert confident["topic"].grad[0, 0] > 0  # the gradient pulls the winning logit down


def test_mentions_without_a_none_label_are_refused_even_when_built_by_hand() -> None:
    from model.schema import SchemaError

    with pytest.raises(SchemaError, match="mentions need a 'none' label"):
        Task("topic", ("military", "politics"), mentions=("ليبي",))


def test_mentions_match_spelling_variants_and_each_expression_stands_alone() -> None:
    from model.schema import SchemaError

    task = Task("stance", ("favor", "against", "none"),
                mentions=("مصراتة", "أجدابيا", "عقيلة صالح", "(?i)libya", "(?P<n>حفتر)", "(?P<n>السراج)"))
    texts = ["قصف في مصراته", "طريق اجدابيا", "عقيله  صالح يلتقي", "LIBYA talks", "قوات حفـتر", "حكومة السراج",
             "مباراة الأهلي"]
    assert task.absent(texts).tolist() == [False] * 6 + [True]
    with pytest.raises(SchemaError, match="mentions must be a list"):
        Task("stance", ("favor", "against", "none"), mentions="حفتر")


def test_class_weights() -> None:
    assert inverse_frequency_weights([30, 10, 0]) == (0.4444, 1.3333, 1.3333)


def test_save_load_round_trip(backbone: str, tmp_path: Path) -> None:
    weighted = [Task("topic", TASKS[0].labels, class_weights=(1.0, 2.0, 3.0)),
                Task("stance", TASKS[1].labels, 0.5, mentions=("حفتر", "ليبي(?!ري)"))]
    model = MultiTaskClassifier.from_backbone(backbone, weighted, pooling="mean").eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    pre = Preprocessing(max_length=64, stride=8)
    save_model_folder(tmp_path / "m", model, tokenizer, pre, calibration={"topic": {"temperature": 1.5}})
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded, tok2, pre2, calibration = load_model_folder(tmp_path / "m")
    assert loaded.config.schema() == model.config.schema()
    assert loaded.config.task_labels("stance") == ["favor", "against", "none"]
    assert loaded.config.schema()[1].mentions == ("حفتر", "ليبي(?!ري)")  # the target words travel with the model
    assert pre2 == pre and calibration["topic"]["temperature"] == 1.5
    inputs = batch(tok2)
    with torch.no_grad():
        a, b = model(**inputs).logits, loaded(**inputs).logits
    for name in a:
        assert torch.equal(a[name], b[name])
    # registered with the Auto classes: plain transformers code can load it too
    assert AutoConfig.from_pretrained(tmp_path / "m").model_type == "nabaa-multitask"
    assert isinstance(AutoModel.from_pretrained(tmp_path / "m"), MultiTaskClassifier)
    assert torch.equal(loaded.class_weights_topic, torch.tensor([1.0, 2.0, 3.0]))


def test_interrupted_replace_keeps_a_loadable_folder(backbone: str, tmp_path: Path) -> None:
    model = MultiTaskClassifier.from_backbone(backbone, TASKS)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    dest = tmp_path / "best"
    save_model_folder(dest, model, tokenizer, Preprocessing())
    dest.rename(tmp_path / "best.old")  # as if killed between the two renames of a replace
    load_model_folder(dest)  # recovers the old folder
    assert dest.exists() and not (tmp_path / "best.old").exists()


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="no model.safetensors"):
        load_model_folder(tmp_path)


def test_backbone_with_only_pickle_weights_is_refused_unless_allowed(backbone: str, tmp_path: Path) -> None:
    """transformers would torch.load a pytorch_model.bin (a pickle) when no safetensors is there."""
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(backbone, pickled)
    encoder = AutoModel.from_pretrained(backbone)
    (pickled / "model.safetensors").unlink()
    torch.save(encoder.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(BackboneWeightsError, match=r"pytorch_model.bin.*model.allow_pickle_weights=true"):
        MultiTaskClassifier.from_backbone(str(pickled), TASKS)
    with pytest.warns(UserWarning, match="pickle"):
        model = MultiTaskClassifier.from_backbone(str(pickled), TASKS, allow_pickle=True)
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)


def test_backbone_prefers_safetensors_when_both_exist(backbone: str, tmp_path: Path, monkeypatch) -> None:
    import shutil

    both = tmp_path / "both"
    shutil.copytree(backbone, both)
    torch.save({"poison": torch.zeros(1)}, both / "pytorch_model.bin")
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or {})
    MultiTaskClassifier.from_backbone(str(both), TASKS)
    assert loads == []  # the pickle was never opened
