"""One exception tree: every error ottrecon raises derives from ottrecon.errors.OttreconError (ottpay keeps its own)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import ottrecon
import webhook
import worker
from ottrecon.errors import ConfigError, OttreconError, ProblemsError


def our_exception_classes() -> list[type[BaseException]]:
    found = []
    for package in (ottrecon, webhook, worker):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name == "ottrecon.sql":
                continue
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    found.append(cls)
    return found


def test_every_error_of_ours_is_an_ottrecon_error() -> None:
    classes = our_exception_classes()
    assert len(classes) >= 15  # the walk found the tree, not nothing
    assert [c.__qualname__ for c in classes if not issubclass(c, OttreconError)] == []


def test_each_docstring_is_the_default_message_and_problems_are_named() -> None:
    for cls in our_exception_classes():
        if cls.__init__ is OttreconError.__init__:  # the plain shape: message optional
            assert str(cls()) == (cls.__doc__ or "").strip(), cls
    error = ProblemsError(["PORT is wrong", "REDIS_URL is not set"])
    assert error.problems == ["PORT is wrong", "REDIS_URL is not set"]
    assert str(error) == "PORT is wrong; REDIS_URL is not set"


def test_every_configuration_error_means_exit_2() -> None:
    # The CLI maps ConfigError (UsageError included) to exit 2 and any other OttreconError to exit 1.
    from ottrecon.commands.env import UsageError

    assert issubclass(UsageError, ConfigError)
