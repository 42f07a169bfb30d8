"""The multi-task classifier: one encoder, pooling, one linear head per task.

Modules only; data, loops and scoring live in ``training/`` and ``inference/``.

    >>> from model.schema import Task
    >>> model = MultiTaskClassifier.from_backbone("path/to/backbone", [Task("topic", ("a", "b"))])  # doctest: +SKIP
    >>> out = model(input_ids, attention_mask, labels=labels)  # doctest: +SKIP
    >>> out.loss, out.logits["topic"].shape  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput

from model.schema import Task

try:  # transformers >= 5.2x declares a sub-config with a spec; earlier 5.x with a plain class
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # pragma: no cover - exercised on older transformers 5.x (e.g. 5.17)
    SubConfigSpec = None

IGNORE_INDEX = -100
POOLINGS = ("cls", "mean")


class MultiTaskConfig(PreTrainedConfig):
    """Encoder config plus the task schema.

    ``tasks`` is a list of ``{"name", "id2label", "weight", "class_weights", "mentions"}``
    dicts, so ``config.json`` alone tells which label each output index means.
    """

    model_type = "nabaa-multitask"
    if SubConfigSpec is not None:
        sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    else:
        sub_configs = {"encoder_config": AutoConfig}

    encoder_config: dict | PreTrainedConfig | None = None
    tasks: list | None = None
    pooling: str = "cls"
    head_dropout: float = 0.1

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None and not isinstance(self.encoder_config, PreTrainedConfig):
            # Earlier transformers 5.x leave the sub-config as read from config.json (a dict):
            # build it as later releases do, before the base class walks the sub-configs.
            encoder = dict(self.encoder_config or {})
            self.encoder_config = CONFIG_MAPPING[encoder.pop("model_type", "bert")](**encoder)
        super().__post_init__(**kwargs)

    @classmethod
    def from_tasks(
        cls, encoder_config: PreTrainedConfig, tasks: Sequence[Task], pooling: str = "cls", head_dropout: float = 0.1
    ) -> MultiTaskConfig:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} unknown; choose one of {POOLINGS}")
        return cls(
            encoder_config=encoder_config,
            tasks=[_task_entry(task) for task in tasks],
            pooling=pooling,
            head_dropout=head_dropout,
        )

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks or []]

    def task_labels(self, name: str) -> list[str]:
        entry = next(t for t in self.tasks if t["name"] == name)
        return [entry["id2label"][str(i)] for i in range(len(entry["id2label"]))]

    def schema(self) -> list[Task]:
        """The tasks as :class:`Task` objects (labels in output-index order)."""
        return [
            Task(
                name=t["name"],
                labels=tuple(self.task_labels(t["name"])),
                weight=t.get("weight", 1.0),
                class_weights=tuple(t["class_weights"]) if t.get("class_weights") else None,
                mentions=tuple(t.get("mentions") or ()),
            )
            for t in self.tasks
        ]


def _task_entry(task: Task) -> dict[str, Any]:
    weights = task.class_weights if isinstance(task.class_weights, tuple) else None
    return {
        "name": task.name,
        "id2label": {str(i): label for i, label in enumerate(task.labels)},
        "weight": task.weight,
        "class_weights": list(weights) if weights else None,
        "mentions": list(task.mentions),
    }


class BackboneWeightsError(ValueError):
    """A backbone has only pickle weights and the config does not allow loading them."""


def load_encoder(backbone: str, allow_pickle: bool = False) -> PreTrainedModel:
    """A backbone's encoder from its safetensors weights.

    transformers falls back to ``pytorch_model.bin`` (``torch.load``, a pickle: loading one can
    run code) when a checkpoint has no safetensors. That fallback happens only with
    ``allow_pickle=True`` (config ``model.allow_pickle_weights``), and says so.

    >>> load_encoder("aubmindlab/bert-base-arabertv02")  # doctest: +SKIP
    """
    try:
        return AutoModel.from_pretrained(backbone, add_pooling_layer=False, use_safetensors=True,
                                         trust_remote_code=False)
    except OSError as e:
        if "safetensors" not in str(e):
            raise
        if not allow_pickle:
            raise BackboneWeightsError(
                f"{backbone}: no safetensors weights (model.safetensors), only pickle ones "
                f"({', '.join(_pickle_files(backbone)) or 'e.g. pytorch_model.bin'}), which can run code "
                "when loaded. Convert the checkpoint to safetensors, or set model.allow_pickle_weights=true "
                "if you trust its source"
            ) from e
    warnings.warn(f"{backbone}: loading pickle weights (model.allow_pickle_weights=true)", stacklevel=2)
    return AutoModel.from_pretrained(backbone, add_pooling_layer=False, use_safetensors=False,
                                     trust_remote_code=False)


def _pickle_files(backbone: str) -> list[str]:
    folder = Path(backbone)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))


@dataclass
class MultiTaskOutput(ModelOutput):
    """``logits`` maps task name → ``[batch, n_labels]``; ``loss`` is the weighted sum."""

    loss: torch.Tensor | None = None
    logits: dict[str, torch.Tensor] | None = None


class MultiTaskClassifier(PreTrainedModel):
    """Encoder → pooling (CLS or attention-masked mean) → per-task dropout + linear head.

    ``labels`` is ``[batch, n_tasks]`` with :data:`IGNORE_INDEX` where a record has
    no label for a task, so that head gets no gradient from it (a zero one, see :meth:`loss`).
    """

    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: MultiTaskConfig):
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder_config, add_pooling_layer=False)
        hidden = config.encoder_config.hidden_size
        self.dropout = nn.Dropout(config.head_dropout)
        self.heads = nn.ModuleDict({t["name"]: nn.Linear(hidden, len(t["id2label"])) for t in config.tasks})
        for t in config.tasks:
            weights = t.get("class_weights")
            # A buffer so class weights follow the model across devices and into checkpoints.
            self.register_buffer(
                f"class_weights_{t['name']}",
                torch.tensor(weights if weights else [1.0] * len(t["id2label"]), dtype=torch.float),
            )
        self.post_init()

    @classmethod
    def from_backbone(
        cls, backbone: str, tasks: Sequence[Task], pooling: str = "cls", head_dropout: float = 0.1,
        allow_pickle: bool = False,
    ) -> MultiTaskClassifier:
        """A new classifier whose encoder starts from a pretrained backbone folder or hub id
        (safetensors weights; pickle ones only with ``allow_pickle``, see :func:`load_encoder`)."""
        encoder = load_encoder(backbone, allow_pickle=allow_pickle)
        config = MultiTaskConfig.from_tasks(encoder.config, tasks, pooling=pooling, head_dropout=head_dropout)
        model = cls(config)
        # Copy rather than re-use the module so post_init's weight init never touches it.
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
        from_layer: int = 0,
        **kwargs: Any,
    ) -> MultiTaskOutput:
        """Logits (and the loss when ``labels`` are given) from token ids, or from
        ``hidden_states`` already computed up to encoder layer ``from_layer`` (see
        :meth:`encode_lower`; training caches those of frozen layers)."""
        if hidden_states is not None:
            if attention_mask is None:
                attention_mask = hidden_states.new_ones(hidden_states.shape[:2], dtype=torch.long)
            hidden = self._run_layers(hidden_states, attention_mask, from_layer, None)
            return self._heads_output(hidden, attention_mask, labels)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._heads_output(hidden, attention_mask, labels)

    def supports_layer_split(self) -> bool:
        """Whether the encoder is a BERT-style stack :meth:`encode_lower` can cut (embeddings +
        ``encoder.layer``, bidirectional), so a cached lower part can feed the upper layers."""
        encoder = self.encoder
        return (hasattr(encoder, "embeddings") and hasattr(getattr(encoder, "encoder", None), "layer")
                and not getattr(encoder.config, "is_decoder", False))

    def encode_lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: int) -> torch.Tensor:
        """The hidden states after the embeddings and the lowest ``layers`` encoder layers:
        ``forward(hidden_states=..., from_layer=layers)`` on them gives the same logits as
        ``forward(input_ids)``.

        >>> h = model.encode_lower(ids, mask, 6)  # doctest: +SKIP
        >>> model(hidden_states=h, attention_mask=mask, from_layer=6).logits  # doctest: +SKIP
        """
        hidden = self.encoder.embeddings(input_ids=input_ids)
        return self._run_layers(hidden, attention_mask, 0, layers)

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
        # The mask the way BertModel.forward builds it (additive or None, per attention backend).
        mask = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.encoder.encoder.layer[start:stop]:
            hidden = layer(hidden, mask)
        return hidden

    def _heads_output(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None
    ) -> MultiTaskOutput:
        pooled = self.dropout(self.pool(hidden, attention_mask))
        logits = {name: head(pooled) for name, head in self.heads.items()}
        loss = self.loss(logits, labels) if labels is not None else None
        return MultiTaskOutput(loss=loss, logits=logits)

    def loss(self, logits: dict[str, torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Σ task weight × mean cross-entropy over the records labelled for that task (against
        targets smoothed by ``label_smoothing``: that share of each target spread over the labels).

        Every head is part of the loss graph in every batch: a task with no label in the
        batch adds a zero-weighted term, so its head gets a zero gradient rather than none.
        DDP (``find_unused_parameters=False``) otherwise fails on the next step, and a batch
        with no label at all could not be back-propagated.

        >>> model.loss({"topic": torch.zeros(1, 3, requires_grad=True)}, torch.tensor([[-100]]))  # doctest: +SKIP
        tensor(0., grad_fn=<AddBackward0>)
        """
        total = logits[next(iter(logits))].new_zeros(())
        for column, task in enumerate(self.config.tasks):
            target, task_logits = labels[:, column], logits[task["name"]]
            if not (target != IGNORE_INDEX).any():
                # cross_entropy over zero labelled records is NaN; a zero term keeps the head in the graph
                total = total + task_logits.sum() * 0.0
                continue
            weights = getattr(self, f"class_weights_{task['name']}").to(task_logits.dtype)
            ce = nn.functional.cross_entropy(task_logits, target, weight=weights, ignore_index=IGNORE_INDEX,
                                             label_smoothing=label_smoothing)
            total = total + task.get("weight", 1.0) * ce
        return total

    def soft_loss(self, logits: dict[str, torch.Tensor], soft: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Σ task weight × mean cross-entropy against soft labels (a teacher's probabilities),
        both sides softened at ``temperature`` and the term scaled by its square, so its gradients
        keep their size whatever the temperature (Hinton et al., 2015).

        ``soft`` is ``[batch, Σ labels]``: the tasks' probability vectors side by side, negative
        where a record has none for a task (that record is left out of the task's term).

        >>> model.soft_loss({"topic": torch.zeros(1, 2)}, torch.tensor([[0.5, 0.5]]))  # doctest: +SKIP
        tensor(0.6931)
        """
        total = logits[next(iter(logits))].new_zeros(())
        start = 0
        for task in self.config.tasks:
            task_logits = logits[task["name"]].float()
            width = task_logits.shape[-1]
            target = soft[:, start:start + width].float()
            start += width
            has = target[:, 0] >= 0
            if not has.any():
                total = total + task_logits.sum() * 0.0  # keeps the head in the graph (see loss)
                continue
            # Softening the teacher's probabilities p at T is softmax(log p / T).
            teacher = torch.log_softmax(target[has].clamp_min(1e-8).log() / temperature, dim=-1).exp()
            student = torch.log_softmax(task_logits[has] / temperature, dim=-1)
            ce = -(teacher * student).sum(-1).mean() * temperature**2
            total = total + task.get("weight", 1.0) * ce
        return total


AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
AutoModel.register(MultiTaskConfig, MultiTaskClassifier, exist_ok=True)
