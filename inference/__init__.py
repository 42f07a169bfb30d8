"""nabaa's inference wing: load a trained model folder and score texts or whole dumps.

    >>> from inference import Classifier
    >>> clf = Classifier.from_pretrained("runs/demo/best")  # doctest: +SKIP
    >>> clf.predict(["نص المقال ..."])[0]["topic"]["label"]  # doctest: +SKIP
    'politics'

Never imports ``training`` (scoring must not pull in the training stack).
"""

from inference.classifier import Classifier, UncalibratedWarning

__all__ = ["Classifier", "UncalibratedWarning"]
