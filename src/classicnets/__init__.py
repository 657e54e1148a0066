"""classicnets: the classic convolutional networks, faithful to their papers, inspectable, fast.

    >>> import classicnets
    >>> model = classicnets.create_model("vgg11", num_classes=10, in_channels=1, width=0.25, input_size=224)
    >>> print(classicnets.summary(model, (1, 224, 224)))
"""

__version__ = "0.1.0"

from classicnets.errors import ClassicNetsError


def __getattr__(name):
    # Lazy so that `import classicnets` and `classicnets --help` stay fast.
    if name in ("create_model", "list_models"):
        from classicnets.models import registry

        return getattr(registry, name)
    if name == "summary":
        from classicnets.inspect import summary

        return summary
    if name in ("train", "TrainConfig"):
        from classicnets import training

        return getattr(training, name)
    raise AttributeError(f"module 'classicnets' has no attribute {name!r}")


__all__ = ["ClassicNetsError", "TrainConfig", "create_model", "list_models", "summary", "train"]
