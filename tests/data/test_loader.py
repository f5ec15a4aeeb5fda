import numpy as np
import pytest
import torch

from lucidlm.data import BatchLoader, Source, open_split, prepare
from lucidlm.errors import DataError


def test_batches_are_a_pure_function_of_seed_step_and_rank(data_dir):
    loader = BatchLoader(data_dir, block_size=16, batch_size=4, seed=7)
    x1, y1 = loader.batch("train", step=3)
    x2, y2 = BatchLoader(data_dir, block_size=16, batch_size=4, seed=7).batch("train", step=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (4, 16) and x1.dtype == torch.int64
    other_step = loader.batch("train", step=4)[0]
    other_rank = BatchLoader(data_dir, block_size=16, batch_size=4, seed=7, rank=1).batch("train", step=3)[0]
    other_seed = BatchLoader(data_dir, block_size=16, batch_size=4, seed=8).batch("train", step=3)[0]
    other_micro = loader.batch("train", step=3, micro_step=1)[0]
    for other in (other_step, other_rank, other_seed, other_micro):
        assert not torch.equal(x1, other)


def test_windows_are_contiguous_and_targets_shifted_by_one(data_dir):
    tokens = np.asarray(open_split(data_dir, "train"))
    loader = BatchLoader(data_dir, block_size=16, batch_size=8, seed=0)
    x, y = loader.batch("train", step=0)
    for row, offset in enumerate(loader.offsets("train", 0)):
        assert x[row].tolist() == tokens[offset : offset + 16].tolist()
        assert y[row].tolist() == tokens[offset + 1 : offset + 17].tolist()


def test_every_window_fits(tmp_path):
    (tmp_path / "t.txt").write_text("abcdefghijklmnopqrstuvwxyz" * 2)
    prepare([Source(tmp_path / "t.txt", "t")], tmp_path / "d", val_fraction=0.3, progress=False)
    loader = BatchLoader(tmp_path / "d", block_size=14, batch_size=64, seed=0)
    offsets = np.concatenate([loader.offsets("val", s) for s in range(50)])
    assert offsets.min() == 0 and offsets.max() == len(loader.splits["val"]) - 15


def test_text_shorter_than_a_block_is_a_clear_error(data_dir):
    with pytest.raises(DataError, match=r"the val split of .* has 700 tokens, fewer than block_size \+ 1 = 1025"):
        BatchLoader(data_dir, block_size=1024, batch_size=2)


def test_tampered_token_file_is_detected(data_dir):
    with open(data_dir / "val.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DataError, match="does not hold the 700 tokens"):
        open_split(data_dir, "val")
