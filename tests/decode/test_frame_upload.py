"""decode/staging.py: host frames reach the device through two reusable staging buffers, never aliased, values exact.

The CUDA path (pinned buffers, events) needs a GPU; the buffer rotation, growth and copy semantics are the same code
with ``pin=False`` on the CPU, which is what runs here."""
import numpy as np
import torch

from cliper_batch.decode.staging import FrameUpload, stack_to


def frames(n: int, seed: int, h: int = 6, w: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_uploads_are_exact_copies_that_survive_the_buffers_reuse():
    up = FrameUpload("cpu", pin=False)
    chunks = [frames(4, s) for s in range(5)]
    outs = [up(c) for c in chunks]  # five chunks through two buffers: each buffer rewritten twice
    for c, out in zip(chunks, outs):
        assert out.dtype == torch.uint8 and out.shape == (4, 6, 5, 3)
        assert np.array_equal(out.numpy(), np.stack(c)), "a later chunk overwrote an earlier result"
    assert up.allocations == 2
    ptrs = {s.buffer.data_ptr() for s in up._slots}
    assert len(ptrs) == 2 and not any(o.data_ptr() in ptrs for o in outs)


def test_a_shorter_chunk_reuses_the_buffer_and_a_larger_frame_grows_it():
    up = FrameUpload("cpu", pin=False)
    up(frames(4, 0)), up(frames(4, 1))
    short = frames(2, 2)
    assert np.array_equal(up(short).numpy(), np.stack(short)) and up.allocations == 2  # last chunk of a video
    big = frames(3, 3, h=8)
    assert np.array_equal(up(big).numpy(), np.stack(big)) and up.allocations == 3  # a larger video's frames


def test_tensor_frames_and_the_plain_path_agree():
    c = frames(3, 7)
    as_tensors = [torch.from_numpy(f) for f in c]
    up = FrameUpload("cpu", pin=False)
    want = np.stack(c)
    assert np.array_equal(up(as_tensors).numpy(), want)
    assert np.array_equal(stack_to(c, torch.device("cpu")).numpy(), want)
    assert np.array_equal(stack_to(c, torch.device("cpu"), up).numpy(), want)


def test_pinning_follows_the_device():
    assert FrameUpload("cuda:0").pin and not FrameUpload("cpu").pin
