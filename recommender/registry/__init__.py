"""Talking to registries: the Distribution v2 client and a throwaway local registry."""

from .local import LocalRegistry, RegistryNotInstalled

__all__ = ["LocalRegistry", "RegistryNotInstalled"]
