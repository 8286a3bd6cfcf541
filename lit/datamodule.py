"""Data loading for training: an endless, step-addressable training stream and a fixed validation set."""
import itertools
from collections.abc import Callable, Iterator

from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from lit.callbacks import completed_batches


class EndlessSampler(Sampler[int]):
    """Stream positions start, start + 1, ... forever (rank r of w takes the positions p with p % w == r).

    The training datasets draw item p from a generator seeded by (seed, p) alone (data/datasets.py), so the
    position is the whole state of the stream: a resumed run starts at the position its checkpoint reached.
    """

    def __init__(self, start: int = 0, rank: int = 0, world_size: int = 1):
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start * self.world_size + self.rank, self.world_size)


class StreamDataModule(LightningDataModule):
    """Training batches from an EndlessSampler that starts after the batches a checkpoint already consumed."""

    def __init__(
        self,
        train: Dataset,
        valid: Dataset,
        batch_size: int,
        num_workers: int,
        collate_fn: Callable | None = None,
    ):
        super().__init__()
        self.train, self.valid = train, valid
        self.batch_size, self.num_workers, self.collate_fn = batch_size, num_workers, collate_fn

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        consumed = completed_batches(trainer) * self.batch_size
        sampler = EndlessSampler(start=consumed, rank=trainer.global_rank, world_size=trainer.world_size)
        return self._loader(self.train, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid, sampler=None)

    def _loader(self, dataset: Dataset, sampler: Sampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            persistent_workers=self.num_workers > 0,
            drop_last=sampler is not None,
        )
