"""Module swaps on a model copy: how a backend puts its modules in place of the reference ones."""
from collections.abc import Callable

from torch import nn


def replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    """Replace, in place, every nn.Linear inside `module` by `make(linear)`."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                setattr(parent, name, make(child))


def retype(module: nn.Module, reference: type[nn.Module], replacement: type[nn.Module]) -> None:
    """Make, in place, every module of type `reference` inside `module` a `replacement`: a subclass that keeps the
    module's parameters and attributes and overrides only methods (as torch.nn.utils.parametrize swaps a module's
    class), so the copy's state dict and the reference's code stay as they are."""
    if not issubclass(replacement, reference):
        raise ValueError(f"replacement must subclass {reference.__name__}, got {replacement.__name__}")
    for child in module.modules():
        if type(child) is reference:
            child.__class__ = replacement
