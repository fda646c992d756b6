"""Building and pushing one image of a repository, with shared layers, platforms and signatures.

Layers are keyed by what they are, so identical layers get identical digests everywhere:
a base family's layers (``debian``, ``python``...) are rebuilt every ``BASE_REBUILD_DAYS``
and shared by every image built on that family in that period, across repositories (what
makes layer de-duplication matter); a repository's dependency layer changes every ~20 builds;
the application layer is new in every build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import content
from .world import DAY, SECOND, World

__all__ = ["BASE_REBUILD_DAYS", "FAMILIES", "Repo", "build"]

BASE_REBUILD_DAYS = 30

# Compressed layer sizes of common base images (bytes), bottom first.
FAMILIES: dict[str, tuple[int, ...]] = {
    "debian": (29_150_000,),
    "ubuntu": (29_540_000,),
    "alpine": (3_410_000,),
    "distroless": (2_120_000, 10_980_000),
    "python": (29_150_000, 24_050_000, 64_390_000, 11_890_000),
    "node": (29_150_000, 24_050_000, 47_600_000, 2_280_000),
    "golang": (29_150_000, 24_050_000, 64_390_000, 69_350_000),
    "jdk": (29_540_000, 16_800_000, 190_200_000),
}


@dataclass
class Repo:
    """One repository being simulated, with its own random stream."""

    world: World
    rng: np.random.Generator
    rid: int
    name: str
    team: str
    family: str
    flavor: str  # oci | docker
    multiarch: bool
    signed: bool
    deps_median: float
    app_median: float
    attest: bool = False  # signed repositories that also push SLSA provenance (.att)
    builds: int = 0
    deps_generation: int = 0
    pusher: int = 0  # client id that pushes
    extra: dict[str, object] = field(default_factory=dict)
    # The long-gap reuse mechanisms that ``medium`` lacks draw from this stream only, so at
    # ``medium`` every other draw, and so the fleet, is what it was before they existed.
    reuse_rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    @property
    def short(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def family_layers(world: World, repo: int, family: str, t: int, arch: str,
                  media_type: str = content.MEDIA["oci"]["layer"]) -> list[int]:
    gen = (t - world.start_ns) // (BASE_REBUILD_DAYS * DAY)
    return [world.blob(f"{family}:{arch}:g{gen}:{i}:{size}", size, media_type, repo)
            for i, size in enumerate(FAMILIES[family])]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(np.clip(rng.lognormal(np.log(median), sigma), lo, hi))


def image_layers(r: Repo, t: int, arch: str, *, app: bool = True) -> list[int]:
    w = r.world
    media = content.MEDIA[r.flavor]["layer"]
    layers = family_layers(w, r.rid, r.family, t, arch, media)
    # the dependency layer grows a little with each generation (lock file updates)
    dsize = int(r.deps_median * (1 + 0.05 * (r.deps_generation % 7)))
    layers.append(w.blob(f"{r.name}:deps{r.deps_generation}:{arch}:{dsize}", dsize, media,
                         r.rid))
    if app:
        asize = _lognormal(r.rng, r.app_median, 0.5, 150_000, 250_000_000)
        layers.append(w.blob(f"{r.name}:app{r.builds}:{arch}:{asize}", asize, media, r.rid))
    return layers


def build(r: Repo, t: int, tags: list[int], *, labels: dict[str, str] | None = None,
          layers: list[int] | None = None, sign: bool | None = None) -> int:
    """Build and push one image (an index of two platforms when the repository is multi-arch).

    Pushes the platform manifests untagged, then the top manifest under ``tags[0]`` and the
    other tags as re-tags, then (when signed) the cosign signature ``sha256-<hex>.sig``.
    Returns the top manifest.
    """
    w = r.world
    r.builds += 1
    if r.rng.random() < 0.05:
        r.deps_generation += 1
    lab = {"org.opencontainers.image.source": f"https://git.example.internal/{r.name}",
           **(labels or {})}
    if r.multiarch:
        kids = []
        for arch in ("amd64", "arm64"):
            ls = layers if layers is not None else image_layers(r, t, arch)
            kid = w.image(r.rid, t, ls, flavor=r.flavor, platform=f"linux/{arch}", labels=lab)
            w.push(t - 20 * SECOND, kid, -1, r.pusher)
            kids.append(kid)
        top = w.index(r.rid, t, kids, flavor=r.flavor)
        w.push(t, top, tags[0] if tags else -1, r.pusher)
    else:
        ls = layers if layers is not None else image_layers(r, t, "amd64")
        top = w.image(r.rid, t, ls, flavor=r.flavor, labels=lab)
        w.push(t, top, tags[0] if tags else -1, r.pusher)
    for i, tag in enumerate(tags[1:]):
        w.retag(t + (i + 1) * SECOND, top, tag, r.pusher)
    if sign if sign is not None else r.signed:
        sig = w.signature(r.rid, top, t + 8 * SECOND)
        w.push(t + 8 * SECOND, sig, w.sig_tag(top), w.clients.cosign_ci())
        if r.attest:  # `cosign attest`: SLSA provenance next to the signature
            att = w.signature(r.rid, top, t + 11 * SECOND, kind="attestation")
            w.push(t + 11 * SECOND, att, w.sig_tag(top, ".att"), w.clients.cosign_ci())
    return top
