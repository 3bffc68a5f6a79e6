"""The controller renderer is pinned byte for byte: refactoring ``search/render.py`` must not
change a single rendered character, for the seeds, random genomes and every block combination.

The digests below were taken from the renderer before it was split into building blocks; a
change that alters rendered source (on purpose) updates them in the same commit.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from typing import Iterable, Iterator

from mlflow_autotts.search.evolve import random_genome
from mlflow_autotts.search.genome import DEFAULT, SEEDS, SLOTS, Genome
from mlflow_autotts.search.render import render

SEED_DIGESTS: dict[str, str] = {
    "cmc": "3d7675e1104fadba704e54b7b22af960dc925aab9b5d6d58165406d021c5720c",
    "contest_race": "14631f6ca7bbaf38e0058e099a10ff8bc1d333cae0f17aaf962d985ccebe3ed6",
    "probe_mix": "14582762f01c9cd562f1b517f94182c45668014c204f0091ca7fcfeae4f1d632",
    "race_then_read": "490baab45487849f4d7c7a2a84ad1e17bea314bb436e1500cfeb2650f281be1d",
    "sequential_beta": "71475670756ac830071751f9a68d2b0bc2d0193382c2638be06eb6a4c935e0e4",
    "short_race": "c756610ddebd0e88d9d0279c689375f266ad9f0412ca501b01ef55fba03d9567",
    "short_race_capped": "1d62dfe94d770cc47b74e5095cb747621af7cc8296228370489368133fdcc7be",
    "short_sequential": "9ec0efd5dec73aced6a31a15d9a1229cbe475636ee4e7f5f930d546f3448d413",
    "shorter_margin": "4d2983fb68daf7beca273dcf7a967745172e7cf14e01ced668670b533b1769c7",
}
RANDOM_DIGEST = "cd9b33cdbafe2bf04c25af04d13192c5ea662e29ffaf34181e300764d5f1e2b9"
GRID_DIGEST = "c1e0f7f1cf56e9f873a237e31eea01534ea3d9a8ff654449d3b23b3c06edea8c"

KNOB_VARIANTS: tuple[dict, ...] = (
    {},  # warm-up on, no cap, no give-up
    {"warm_up": (0, 0), "cap": (20, 40), "futile_after": (10, 20), "futile_share": (0.3, 0.2)},
)
"""Knob settings that switch the optional lines (warm-up, budget cap, give-up) off and on."""


def random_genomes(n: int = 200, seed: int = 2024) -> Iterator[Genome]:
    """The evolve explorer's random draws, as tests/test_genome.py makes them."""
    rng = random.Random(seed)
    return (random_genome(rng) for _ in range(n))


def grid_genomes() -> Iterator[Genome]:
    """Every block combination, under each of ``KNOB_VARIANTS``."""
    for knobs in KNOB_VARIANTS:
        base = DEFAULT.with_knobs(**knobs)
        for options in itertools.product(*SLOTS.values()):
            yield base.with_blocks(**dict(zip(SLOTS, options)))


def sha(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def digest(genomes: Iterable[Genome]) -> str:
    """One digest over the renders in order (each render's digest, so boundaries count)."""
    h = hashlib.sha256()
    for g in genomes:
        h.update(sha(render(g)).encode())
    return h.hexdigest()


def test_seeds_render_byte_identical():
    assert {name: sha(render(g)) for name, g in sorted(SEEDS.items())} == SEED_DIGESTS


def test_random_genomes_render_byte_identical():
    assert digest(random_genomes()) == RANDOM_DIGEST


def test_every_block_combination_renders_byte_identical():
    assert digest(grid_genomes()) == GRID_DIGEST
