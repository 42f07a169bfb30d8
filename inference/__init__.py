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
    from inference.classifier import Classifier, UncalibratedWarning

__all__ = ["Classifier", "UncalibratedWarning"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from inference import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
