"""Config loading: typed overrides and clear errors before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, load_config

BASE = """
name: t
model: {backbone: tiny, max_length: 64}
data: {train_file: a.jsonl, dev_file: b.jsonl}
train: {epochs: 2}
tasks:
  - {name: topic, labels: [a, b, c]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_configs_load() -> None:
    shipped = sorted(Path("configs").glob("*.yaml"))
    assert {"tiny", "demo", "libya", "libya-gpu", "libya-arabert", "ant", "ant-gpu"} <= {p.stem for p in shipped}
    for path in shipped:
        cfg = load_config(path)
        assert [t.name for t in cfg.tasks], path


def test_typed_overrides_and_bare_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), ["train.epochs=5", "learning_rate=3e-5", "output_dir=/tmp/x",
                                              "model.pooling=mean", "data.test_file=null", "train.report_to=[tensorboard]",
                                              "train.max_lexical_weight={topic: 0.5}"])
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.train.learning_rate == pytest.approx(3e-5)
    assert str(cfg.run_dir) == "/tmp/x"
    assert cfg.model.pooling == "mean" and cfg.data.test_file is None
    assert cfg.train.report_to == ["tensorboard"]
    assert cfg.train.max_lexical_weight == {"topic": 0.5}


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (BASE.replace("epochs: 2", "epochz: 2"), [], "unknown key(s) ['epochz'] in 'train'"),
        (BASE.replace("epochs: 2", "epochs: two"), [], "train.epochs: expected int, got 'two'"),
        (BASE.replace("[a, b, c]", "[]"), [], "expected a list of at least 2 labels"),
        (BASE.replace("[a, b, c]", "[a, b, a]"), [], "duplicate label(s) ['a']"),
        (BASE, ["train.epochs=1.5"], "expected int, got 1.5"),
        (BASE, ["train.nope=1"], "unknown key 'nope' in 'train'"),
        (BASE, ["bogus=1"], "unknown key 'bogus'"),
        (BASE, ["epochs"], "expected key=value"),
        (BASE, ["model.pooling=max"], "model.pooling = 'max'; allowed: ['cls', 'mean']"),
        (BASE + "extra: 1\n", [], "unknown top-level key(s) ['extra']"),
        (BASE, ["train.max_lexical_weight={stance: 0.5}"], "max_lexical_weight names task 'stance'; the tasks are ['topic']"),
        (BASE, ["train.max_lexical_weight={topic: 1.5}"], "max_lexical_weight.topic = 1.5; must be in [0, 1]"),
        (BASE, ["train.max_lexical_weight={topic: high}"], "max_lexical_weight.topic: expected float, got 'high'"),
        (BASE, ["train.max_lexical_weight=0.5"], "train.max_lexical_weight: expected dict"),
        (BASE.replace("name: topic", "name: topic, colour: red"), [], "unknown key(s) ['colour']"),
        (BASE.replace("[a, b, c]}", "[a, b, c], mentions: [x]}"), [], "task's labels ['a', 'b', 'c'] have no 'none'"),
        (BASE.replace("[a, b, c]}", "[a, b, none], mentions: ['(x']}"), [], "'(x' is not a regular expression"),
        (BASE.replace("[a, b, c]}", "[a, b, none], mentions: []}"), [], "expected a non-empty list of regular"),
        (BASE.replace("[a, b, c]}", "[a, b, none], mentions: nowhere.txt}"), [], "tasks[0].mentions: cannot read"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), overrides)
    assert message in str(err.value)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, BASE + "x: !!python/object/apply:os.system ['true']\n"))


def test_process_group_timeout_and_pickle_opt_in(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), ["train.process_group_timeout=36000", "model.allow_pickle_weights=true"])
    assert cfg.train.process_group_timeout == 36000 and cfg.model.allow_pickle_weights is True
    defaults = load_config(write(tmp_path, BASE))
    assert defaults.train.process_group_timeout == 7200 and defaults.model.allow_pickle_weights is False
    with pytest.raises(ConfigError, match="train.process_group_timeout must be at least 1"):
        load_config(write(tmp_path, BASE), ["train.process_group_timeout=0"])


def test_label_smoothing_is_a_share_below_one(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).train.label_smoothing == 0.0
    assert load_config(write(tmp_path, BASE), ["train.label_smoothing=0.1"]).train.label_smoothing == 0.1
    with pytest.raises(ConfigError, match=r"train.label_smoothing = 1.0; must be in \[0, 1\)"):
        load_config(write(tmp_path, BASE), ["train.label_smoothing=1.0"])


def test_mentions_file_is_read_next_to_the_config_and_saved_expanded(tmp_path: Path) -> None:
    (tmp_path / "targets.txt").write_text("# who the stance is about\nحفتر\n\nليبي(?!ري)\n", encoding="utf-8")
    text = BASE.replace("[a, b, c]}", "[favor, against, none], mentions: targets.txt}")
    cfg = load_config(write(tmp_path, text))
    assert cfg.tasks[0].mentions == ("حفتر", "ليبي(?!ري)")
    assert cfg.to_dict()["tasks"][0]["mentions"] == ["حفتر", "ليبي(?!ري)"]  # the run's saved config stands alone
    assert cfg.tasks[0].absent(["قوات حفتر", "انتخابات ليبيريا", "الليبيون"]).tolist() == [False, True, False]


def test_shipped_libya_configs_name_the_targets_of_every_stance_article() -> None:
    """The default schema's gate never silences a seeds article that has a stance: an article that
    takes a side toward a Libyan camp names Libya, a Libyan place or one of its actors."""
    import json

    from model.preprocess import build_preprocessing

    cfg = load_config("configs/demo.yaml")
    stance_tasks = [t for t in cfg.tasks if t.mentions]
    assert [t.name for t in stance_tasks] == ["stance_gna", "stance_haftar"]
    records = [json.loads(line) for line in Path("seeds/articles.jsonl").read_text(encoding="utf-8").splitlines()]
    pre = build_preprocessing(cfg.model)  # the text the gate sees: normalised title + opening, as predicted
    texts = [pre.prepare(r["text"], r["title"]) for r in records]
    for task in stance_tasks:
        silenced = [r["id"] for r, gone in zip(records, task.absent(texts)) if gone and r[task.name] != "none"]
        assert len(silenced) <= 1, silenced  # p7-218 names only a Tripoli district shared with Iraq
    gate = stance_tasks[0]
    assert gate.absent(["اجتماع الليبيين", "مباحثات ليبية", "انتخابات ليبيريا", "الحروب الصليبية", "خسرت الأسهم"]).tolist() \
        == [False, False, True, True, True]
