"""Typed identities: a model and a variant are named within a namespace. Code passes these around; the
"namespace/name" text form exists only at the edges that store or print it (`str()` and `parse`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ModelId:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class VariantId:
    """One Deployment of a model on one accelerator type (the ScaledObject's scale target)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @staticmethod
    def parse(text: str) -> VariantId:
        """The inverse of `str()`, for keys read back from a store."""
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"not a namespace/variant key: {text!r}")
        return VariantId(namespace, name)
