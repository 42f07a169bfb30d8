"""nabaa's inference wing: load a trained model folder and score texts or whole dumps.

    >>> from inference import Classifier
    >>> clf = Classifier.from_pretrained("runs/demo/best")  # doctest: +SKIP
    >>> clf.predict(["نص المقال ..."])[0]["topic"]["label"]  # doctest: +SKIP
    'politics'

Never imports ``training`` (scoring must not pull in the training stack). ``Classifier`` is
imported on first use, so ``inference.analyze`` (DuckDB over scored files) starts without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.classifier import Classifier

__all__ = ["Classifier"]


def __getattr__(name: str) -> Any:
    if name == "Classifier":
        from inference.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
