"""Talking to registries: the Distribution v2 client and a throwaway local registry."""

from .auth import RegistryAuth
from .client import AsyncRegistryClient, Manifest, Referrer, RegistryClient, digest_of
from .local import LocalRegistry, RegistryNotInstalled
from .push import PushedImage, push_image, push_referrer, push_signature

__all__ = [
    "AsyncRegistryClient",
    "LocalRegistry",
    "Manifest",
    "PushedImage",
    "Referrer",
    "RegistryAuth",
    "RegistryClient",
    "RegistryNotInstalled",
    "digest_of",
    "push_image",
    "push_referrer",
    "push_signature",
]
