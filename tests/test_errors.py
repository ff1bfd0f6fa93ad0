"""The one exception tree."""

from __future__ import annotations

import inspect

import pytest

import kmsbox
from kmsbox import errors
from kmsbox.errors import KmsboxError, ProviderError

_EXPECTED = {
    "ConfigError",
    "PluginError",
    "ProviderError",
    "KeyUnavailable",
    "IntegrityError",
    "SecretNotFound",
    "NamespaceNotFound",
    "SecretExpired",
    "SecretDisabled",
    "ConflictError",
    "StorageError",
}


def _classes() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    }


def test_the_tree_is_exactly_the_documented_one() -> None:
    classes = _classes()
    assert set(classes) == _EXPECTED | {"KmsboxError"}
    assert set(errors.__all__) == set(classes)
    for name in _EXPECTED:
        cls = classes[name]
        # NamespaceNotFound is the one refinement: a SecretNotFound whose namespace is missing too.
        parent = errors.SecretNotFound if name == "NamespaceNotFound" else KmsboxError
        assert cls.__bases__ == (parent,), f"{name} should derive directly from {parent.__name__}"
    assert KmsboxError.__bases__ == (Exception,)


def test_every_error_is_exported_from_the_package() -> None:
    for name, cls in _classes().items():
        assert getattr(kmsbox, name) is cls
        assert name in kmsbox.__all__


@pytest.mark.parametrize("name", sorted(_EXPECTED | {"KmsboxError"}))
def test_every_error_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(_classes()[name])
    assert doc and len(doc) > 20 and doc != inspect.getdoc(Exception)


def test_provider_error_carries_transient_and_code() -> None:
    cause = RuntimeError("ThrottlingException")
    try:
        try:
            raise cause
        except RuntimeError as exc:
            raise ProviderError("KMS throttled the request", transient=True, code="ThrottlingException") from exc
    except ProviderError as error:
        assert error.transient is True
        assert error.code == "ThrottlingException"
        assert error.__cause__ is cause
        assert str(error) == "KMS throttled the request"
        assert repr(error) == "ProviderError('KMS throttled the request', transient=True, code='ThrottlingException')"


def test_provider_error_needs_transient_by_keyword() -> None:
    with pytest.raises(TypeError):
        ProviderError("x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ProviderError("x", True)  # type: ignore[call-arg]
    permanent = ProviderError("denied", transient=False)
    assert permanent.transient is False and permanent.code is None


def test_key_unavailable_has_the_seed_code() -> None:
    assert errors.KeyUnavailable.code == "key_version_unavailable"
    assert errors.KeyUnavailable("gone").code == "key_version_unavailable"


def test_catching_the_base_catches_every_error() -> None:
    for name in _EXPECTED:
        cls = _classes()[name]
        instance = cls("m", transient=False) if cls is ProviderError else cls("m")
        with pytest.raises(KmsboxError):
            raise instance
