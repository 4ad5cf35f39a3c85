"""Length-grouped batching (``train.group_by_length``) and the padding it saves.

With dynamic padding every batch is padded to its longest sequence, so a batch that mixes a 5-token and a
60-token sentence spends most of its compute on padding. Grouping sequences of similar length into a batch
removes most of it while the data order stays random, as Hugging Face's ``group_by_length`` does
(``LengthGroupedSampler``): one epoch is

  1. a random permutation of the examples,
  2. cut into mega-batches of ``mult × batch_size`` consecutive examples, ``mult`` = 50, or fewer on a small
     set so that there are about four mega-batches (⌊n / 4·batch_size⌋, at least 1),
  3. each mega-batch sorted by length, longest first (a stable sort: ties keep the permutation's order),
  4. the longest example of the epoch swapped into the first position, so the first batch is the largest
     one and an out-of-memory error happens at step 1, not hours in.

Consecutive ``batch_size`` slices of that order are the batches: a mega-batch is a whole number of batches,
so a batch never straddles two. Batches of one mega-batch run from long to short; which examples share a
mega-batch, and so a batch, changes every epoch.

Reproducible and resumable: all randomness is one ``torch.randperm`` on the generator the sampler is given,
drawn when an epoch's iteration starts. The training job gives it the loader's own generator
(``Run.generator``), whose state ``loop.fit`` saves at each epoch's start and restores on resume, so a
resumed run draws the same order as the run it continues.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

MEGA_BATCH_MULT = 50


def mega_batch_size(n: int, batch_size: int, mult: int | None = None) -> int:
    """Examples per mega-batch: ``mult × batch_size``, ``mult`` at most 50 and small enough for ~4 mega-batches."""
    if mult is None:
        mult = max(1, min(n // (4 * batch_size), MEGA_BATCH_MULT))
    return mult * batch_size


def length_grouped_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                         mult: int | None = None) -> list[int]:
    """One epoch's order of the indices ``0..len(lengths)-1`` (see the module docstring)."""
    n = len(lengths)
    if n == 0:
        return []
    lengths = np.asarray(lengths)
    perm = torch.randperm(n, generator=generator).numpy()
    size = mega_batch_size(n, batch_size, mult)
    megas = []
    for start in range(0, n, size):
        mega = perm[start:start + size]
        megas.append(mega[np.argsort(-lengths[mega], kind="stable")])  # longest first, ties in drawn order
    # each mega-batch's first example is its longest: bring the epoch's longest to the very front
    top = int(np.argmax([lengths[m[0]] for m in megas]))  # the first mega-batch holding the maximum
    megas[0][0], megas[top][0] = megas[top][0], megas[0][0]
    return np.concatenate(megas).tolist()


class LengthGroupedSampler(Sampler[int]):
    """Yields :func:`length_grouped_order` of ``lengths``, a fresh order per epoch from ``generator``.

    Use with ``DataLoader(batch_size=batch_size)`` (the same batch size): the loader's consecutive slices
    are then the length-grouped batches."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator):
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(generator, torch.Generator):
            raise ValueError("LengthGroupedSampler needs a torch.Generator (the loader's, so a resumed run replays it)")
        self.lengths = [int(x) for x in lengths]
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        # drawn when the epoch's first batch is asked for, from the generator's state at that moment
        yield from length_grouped_order(self.lengths, self.batch_size, self.generator)


def train_loader(data, batch_size: int, collate, generator: torch.Generator, group_by_length: bool) -> DataLoader:
    """The training job's loader: shuffled by ``generator``, length-grouped or uniformly at random.

    Random batching is exactly the loader cells were computed with before ``group_by_length`` existed
    (``shuffle=True`` on the same generator), so those cells still reproduce bitwise."""
    if not group_by_length:
        return DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=generator)
    sampler = LengthGroupedSampler(data.lengths, batch_size, generator)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=collate, generator=generator)


def epoch_batches(loader: DataLoader, generator_state: torch.Tensor) -> list[list[int]]:
    """The index batches ``loop.fit`` trains on in an epoch whose shuffling generator starts at
    ``generator_state``: fit's one draw per epoch (see ``loop.fit``), then the loader's own iteration,
    replayed on a copy of its sampler with a private generator (the loader's generator is not touched)."""
    gen = torch.Generator()
    gen.set_state(generator_state)
    torch.empty((), dtype=torch.int64).random_(generator=gen)  # loop.fit draws this before iter(loader)
    sampler = copy.copy(loader.sampler)
    sampler.generator = gen
    shadow = DataLoader(range(len(loader.dataset)), batch_size=loader.batch_size, sampler=sampler,
                        drop_last=loader.drop_last, generator=gen, collate_fn=list)
    return list(shadow)


def padding_counts(lengths: Sequence[int], batches) -> tuple[int, int]:
    """(padded tokens, all tokens) of ``batches`` of indices, each padded to its longest sequence."""
    lengths = np.asarray(lengths)
    padded = total = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        lens = lengths[np.asarray(batch)]
        size = int(lens.max()) * len(lens)
        total += size
        padded += size - int(lens.sum())
    return padded, total


def padding_fraction(lengths: Sequence[int], batches) -> float:
    """Padded tokens / all tokens (padding included) over ``batches``: 0 when every batch is one length."""
    padded, total = padding_counts(lengths, batches)
    return padded / total if total else 0.0


def order_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive ``batch_size`` slices of an order (the last may be short), as a DataLoader cuts them."""
    order = list(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
