"""The multi-task model: masked losses, class weights, and a faithful save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from model.modeling import IGNORE_INDEX, MultiTaskClassifier
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
    assert model.heads["stance"].weight.grad is None or torch.all(model.heads["stance"].weight.grad == 0)
    assert model.heads["topic"].weight.grad.abs().sum() > 0


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


def test_class_weights() -> None:
    assert inverse_frequency_weights([30, 10, 0]) == (0.4444, 1.3333, 1.3333)


def test_save_load_round_trip(backbone: str, tmp_path: Path) -> None:
    weighted = [Task("topic", TASKS[0].labels, class_weights=(1.0, 2.0, 3.0)), TASKS[1]]
    model = MultiTaskClassifier.from_backbone(backbone, weighted, pooling="mean").eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    pre = Preprocessing(max_length=64, stride=8)
    save_model_folder(tmp_path / "m", model, tokenizer, pre, calibration={"topic": {"temperature": 1.5}})
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded, tok2, pre2, calibration = load_model_folder(tmp_path / "m")
    assert loaded.config.schema() == model.config.schema()
    assert loaded.config.task_labels("stance") == ["favor", "against", "none"]
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
