"""Every message class in messages/: frozen, keyword-only, hashable, survives a JSON round trip."""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import types
import typing
from typing import Any

import msgspec
import pytest

import messages
from messages.base import Message


def all_message_classes() -> list[type[Message]]:
    found: dict[str, type[Message]] = {}
    for info in pkgutil.iter_modules(messages.__path__):
        module = importlib.import_module(f"messages.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, msgspec.Struct) and obj.__module__.startswith("messages"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def sample(tp: Any, depth: int = 0) -> Any:
    """A value of type ``tp`` (with containers filled) for round-trip tests."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return "any"
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return sample(non_none[0], depth) if non_none else None
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (sample(args[0], depth + 1),)
        return tuple(sample(a, depth + 1) for a in args)
    if origin is typing.Annotated:
        return sample(args[0], depth)
    if isinstance(tp, type):
        if issubclass(tp, bool):
            return True
        if issubclass(tp, enum.Enum):
            return next(iter(tp))
        if issubclass(tp, int):
            return 7
        if issubclass(tp, float):
            return 1.25
        if issubclass(tp, str):
            return "x"
        if issubclass(tp, bytes):
            return b"x"
        if issubclass(tp, msgspec.Struct):
            return build(tp, depth + 1)
    if tp is msgspec.Raw:
        return msgspec.Raw(b"{}")
    raise TypeError(f"no sample for {tp!r}")


def build(cls: type[msgspec.Struct], depth: int = 0) -> msgspec.Struct:
    """Every field filled; if the class's own validation refuses that combination (say, a
    trigger on a limit order), the fields with defaults keep their defaults."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = msgspec.structs.fields(cls)
    try:
        return cls(**{f.name: sample(hints[f.name], depth) for f in fields})
    except (ValueError, TypeError):
        required = [f for f in fields if f.required]
        return cls(**{f.name: sample(hints[f.name], depth) for f in required})


CLASSES = all_message_classes()


def test_the_package_has_messages() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"MinuteTick", "DailyRollover", "ActorFailed", "SafeShutdown", "ConnectionStatus"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_message_is_frozen_hashable_and_round_trips(cls: type[msgspec.Struct]) -> None:
    config = cls.__struct_config__
    assert config.frozen, f"{cls.__name__} must be frozen"
    instance = build(cls)
    if issubclass(cls, Message) and msgspec.structs.fields(cls):
        with pytest.raises(TypeError):  # keyword-only: positional construction is refused
            cls(*msgspec.structs.astuple(instance))
    hash(instance)
    fields = msgspec.structs.fields(cls)
    if fields:
        with pytest.raises(AttributeError):
            setattr(instance, fields[0].name, None)
    encoded = msgspec.json.encode(instance)
    assert msgspec.json.decode(encoded, type=cls) == instance


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_no_mutable_containers_in_fields(cls: type[msgspec.Struct]) -> None:
    hints = typing.get_type_hints(cls)
    for name, tp in hints.items():
        text = repr(tp)
        assert "list[" not in text and "dict[" not in text and "set[" not in text, f"{cls.__name__}.{name}: {text}"
