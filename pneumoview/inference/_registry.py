"""The builder registry and the argument checks builders share.

This module imports no torch: the model modules register into it at import time, and
``pneumoview.inference.builders`` is the public face that imports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

from pneumoview.types import STAGES as TASKS
from pneumoview.types import Stage as Task

BuilderFn = TypeVar("BuilderFn", bound="Callable[..., nn.Module]")

REGISTRY: dict[str, Callable[..., nn.Module]] = {}
TASK_OF: dict[str, Task] = {}


def register(name: str, *, task: Task) -> Callable[[BuilderFn], BuilderFn]:
    """Decorator that registers a builder under ``name``; a name registered twice raises ``ValueError``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")

    def decorator(fn: BuilderFn) -> BuilderFn:
        if name in REGISTRY:
            raise ValueError(f"builder {name!r} is already registered (by {REGISTRY[name].__module__})")
        REGISTRY[name] = fn
        TASK_OF[name] = task
        return fn

    return decorator


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within ``[minimum, maximum]``, else ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_float(name: str, value: Any, *, minimum: float, maximum: float) -> float:
    """``value`` as a float within ``[minimum, maximum]``, else ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_floats(name: str, value: Any, length: int) -> tuple[float, ...]:
    """A sequence of ``length`` numbers (a TOML array arrives as a list) as a tuple of floats."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != length:
        raise ValueError(f"{name} must be a list of {length} numbers, got {value!r}")
    return tuple(check_float(f"{name}[{i}]", v, minimum=-1e6, maximum=1e6) for i, v in enumerate(value))
