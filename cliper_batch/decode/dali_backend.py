"""Frame decoding with NVIDIA DALI: ``fn.decoders.video`` on CPU (VP8/VP9/MJPEG) or NVDEC ('mixed').

How a call works:

1. The encoded file is read once through fsspec into memory (DALI decodes
   in-memory streams; memory use is the *encoded* size, not the decoded one).
2. PyAV demuxes those bytes (no decoding) to get every frame's presentation
   time - the same packet index, sorted by pts, that DALI builds (B-frames
   reordered, frames an edit list hides left out; see :func:`frame_timeline`).
   Timestamps map to frame indices by PTS - the frame displayed at ``t``
   - so variable frame rate is handled, and a file FFmpeg cannot parse fails
   here with :class:`DecodeError` before DALI sees it (DALI#5155: a corrupt
   file aborts the DALI pipeline).
3. The wanted indices go to ``fn.decoders.video(frames=...)`` (DALI decodes
   only what they need, seeking with its frame index), in chunks whose decoded
   size stays under ``chunk_bytes``, optionally followed by ``fn.resize``.
4. Rotation (``info.rotation``) is applied on the host after the copy to numpy;
   or, with :meth:`DaliDecoder.iter_frame_tensors`, frames become torch tensors
   that stay on the GPU for the NVDEC decoder (device-to-device copy, rotated there).

One pipeline per (resize yes/no) is built lazily and reused for every video;
input data, frame indices and output size are fed per run, so nothing that
changes between videos is baked into the graph. If a run fails the pipeline is
dropped and rebuilt on the next call. ``nvidia.dali`` is imported lazily, so
this module imports without DALI installed.
"""
from __future__ import annotations

import bisect
import io
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .probe import open_binary, rotate_upright
from ..types import VideoInfo
from .base import DecodeError, DecoderUnavailable, choose_frame, pre_rotation_size, time_eps, validate_request

__all__ = ["DaliDecoder", "DALI_CPU_CODECS", "DALI_GPU_CODECS", "dali_available", "frame_timeline", "FrameTimeline"]

# From the DALI 2.4 ``fn.decoders.video`` documentation and verified here for the CPU set.
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = frozenset({"vp8", "vp9", "mjpeg", "h264", "hevc", "av1", "mpeg4"})


def dali_available() -> bool:
    """Whether ``nvidia.dali`` can be imported (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class FrameTimeline:
    """Presentation times (seconds from the first frame) of every frame, in display order."""

    times: tuple[float, ...]
    durations: tuple[float | None, ...]
    codec: str

    def __len__(self) -> int:
        return len(self.times)


def frame_timeline(uri: str, data: bytes) -> FrameTimeline:
    """Demux (not decode) ``data`` with PyAV and list the video frames' presentation times."""
    import av

    from .probe import canonical_codec_name

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise DecodeError(uri, "no video stream")
            stream = container.streams.video[0]
            codec = canonical_codec_name(stream.codec_context)
            tb = float(stream.time_base)
            # Mirror DALI's own index (FramesDecoderBase::BuildIndex): every packet of the
            # stream, keyed by pts (dts when pts is missing), sorted by that key - except
            # packets the demuxer flags as discarded: an edit list that starts the
            # presentation after the stream's first frames (a trimmed .mp4/.mov) keeps those
            # frames only as references. FFmpeg's decoder drops them, and so does DALI's
            # index (checked with DALI 2.4's CPU decoder on VP9 in .mp4 with such an edit
            # list: index 0 is the first displayed frame), so they must not count here.
            pts: list[tuple[int, int | None]] = []
            n_without_ts = 0
            try:
                for packet in container.demux(stream):
                    if packet.is_discard:
                        continue
                    key = packet.pts if packet.pts is not None else packet.dts
                    if key is None:
                        if packet.size:  # (PyAV's final empty flush packet has neither)
                            n_without_ts += 1
                        continue
                    pts.append((key, packet.duration or None))
            except av.FFmpegError:
                pass  # truncated / damaged tail: keep what was readable
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(uri, f"cannot parse video container ({type(exc).__name__}: {exc})") from exc
    if n_without_ts:
        raise DecodeError(uri, f"{n_without_ts} video packet(s) carry no timestamp; cannot map times to frames")
    if not pts:
        raise DecodeError(uri, "no video frames found in the container")
    pts.sort()
    origin = pts[0][0]
    times = tuple((p - origin) * tb for p, _ in pts)
    durations = tuple(d * tb if d else None for _, d in pts)
    return FrameTimeline(times, durations, codec)


def torch_from_numpy(arr: np.ndarray):
    """``torch.from_numpy`` (torch imported lazily: this module must import without it)."""
    import torch

    return torch.from_numpy(arr)


def _rotate_tensor(img, rotation: int):
    """Torch twin of :func:`cliper_batch.decode.probe.rotate_upright`: ``(H, W, C)`` turned ``rotation`` degrees clockwise."""
    import torch

    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    return torch.rot90(img, k=-(rotation // 90) % 4, dims=(0, 1)).contiguous()


def _gpu_output_to_torch(tensor_gpu, device_id: int | None):
    """Copy one DALI ``TensorGPU`` into a new torch tensor on ``cuda:device_id``; returns (tensor, copy-done event).

    Ordering, made explicit rather than left to DALI's internals:

    1. *DALI's work -> the copy.* Our pipeline runs with the legacy
       synchronous executor and ``pipe.run()`` gets no ``cuda_stream``, so
       its outputs are host-synchronous (``Pipeline.run`` in DALI 2.4: "If
       skipped, the results are host-synchronous"): the decode has finished
       when ``run()`` returns.
    2. *torch's earlier work -> the copy.* The destination comes from torch's
       caching allocator, which may hand out a block that kernels still queued
       on torch's current stream were using. ``feed_ndarray(...,
       cuda_stream=torch's stream)`` (DALI 2.4 ``plugin/pytorch/torch_utils.py``)
       calls ``copy_to_external(ptr, stream, non_blocking=True)``, an async copy
       queued on that very stream, so it runs after them - the same choice as
       DALI's own ``DALIGenericIterator``.
    3. *the copy -> DALI reusing its output buffer.* The copy is asynchronous
       and DALI overwrites the same output buffer on its next run; the returned
       event is recorded on torch's stream right after the copy, and
       :class:`DaliDecoder` waits for it before the next ``run()`` (or before
       dropping a pipeline), so the host never blocks on the copy itself.
    """
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    device = torch.device("cuda", 0 if device_id is None else int(device_id))
    stream = torch.cuda.current_stream(device)
    dst = torch.empty(tuple(tensor_gpu.shape()), dtype=to_torch_type[tensor_gpu.dtype], device=device)
    feed_ndarray(tensor_gpu, dst, cuda_stream=stream)
    done = torch.cuda.Event()
    done.record(stream)
    return dst, done


class CopyFence:
    """The last device copy out of a DALI pipeline's output buffer; wait on it before the pipeline runs again."""

    def __init__(self) -> None:
        self._event = None

    def set(self, event) -> None:
        self._event = event

    def wait(self) -> None:
        """Block until that copy has finished (see ``_gpu_output_to_torch``); no-op if there is none."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None


class DaliDecoder:
    """:class:`~cliper_batch.decode.base.FrameDecoder` backed by DALI's video decoder.

    Args:
        device: 'cpu' (FFmpeg software decode inside DALI) or 'gpu' (NVDEC, DALI 'mixed').
        device_id: CUDA device index for 'gpu'.
        num_threads: DALI CPU worker threads.
        storage_options: fsspec options for remote URIs.
        chunk_bytes: cap on decoded full-resolution RGB bytes per pipeline run
            (default 256 MiB on CPU, 2 GiB on GPU where decoded frames live in device memory).
        max_chunk_frames: cap on frames per run (default 128 on CPU, 512 on GPU).

    Every run re-opens the in-memory file and DALI re-indexes it (a demux pass
    over the whole file), so bigger chunks mean fewer passes on long videos.

    Not re-entrant: runs are serialised with a lock, so sharing one instance
    between threads is safe but gains nothing.
    """

    def __init__(
        self,
        device: str = "cpu",
        device_id: int | None = None,
        num_threads: int = 2,
        storage_options: dict | None = None,
        chunk_bytes: int | None = None,
        max_chunk_frames: int | None = None,
    ):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if not dali_available():
            raise DecoderUnavailable("DALI decoder requested but nvidia.dali is not installed (pip install nvidia-dali-cuda130)")
        self.device = device
        self.device_id = (0 if device_id is None else int(device_id)) if device == "gpu" else None
        self.name = "dali-gpu" if device == "gpu" else "dali-cpu"
        self.codecs = DALI_GPU_CODECS if device == "gpu" else DALI_CPU_CODECS
        self.num_threads = int(num_threads)
        self.storage_options = dict(storage_options or {})
        gpu = device == "gpu"
        self.chunk_bytes = int(chunk_bytes) if chunk_bytes is not None else (2 << 30 if gpu else 256 << 20)
        self.max_chunk_frames = int(max_chunk_frames) if max_chunk_frames is not None else (512 if gpu else 128)
        if self.chunk_bytes < 1 or self.max_chunk_frames < 1:
            raise ValueError("chunk_bytes and max_chunk_frames must be >= 1")
        self._pipelines: dict[bool, object] = {}
        self._lock = threading.Lock()
        self._copy = CopyFence()  # the last device copy out of DALI's output buffer
        self.last_stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"DaliDecoder(device={self.device!r}, device_id={self.device_id})"

    # ----- pipeline --------------------------------------------------------------
    def _build(self, resize: bool):
        from nvidia.dali import Pipeline, fn, types

        pipe = Pipeline(
            batch_size=1,
            num_threads=self.num_threads,
            device_id=self.device_id,
            prefetch_queue_depth=1,
            exec_async=False,
            exec_pipelined=False,
        )
        with pipe:
            # no_copy: runs are synchronous and the caller keeps the bytes alive until run() returns.
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, no_copy=True)
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            if self.device == "gpu":
                # affine=False: do not pin DALI's threads to cores (they share the node with Ray workers).
                video = fn.decoders.video(encoded, frames=frames, device="mixed", affine=False)
            else:
                video = fn.decoders.video(encoded, frames=frames, device="cpu")
            if resize:
                hw = fn.external_source(name="size", dtype=types.FLOAT, ndim=1)
                video = fn.resize(video, size=hw, antialias=True)
            pipe.set_outputs(video)
        pipe.build()
        return pipe

    def _run(
        self, uri: str, data: np.ndarray, indices: np.ndarray, hw: tuple[int, int] | None, as_torch: bool = False
    ):
        """Decode ``indices`` (display order) of ``data``: (F, H, W, 3) uint8.

        Host numpy array by default. ``as_torch``: a torch tensor, on
        ``cuda:device_id`` for the GPU decoder (device-to-device copy, no host
        round trip; see :meth:`iter_frame_tensors`) or on the CPU otherwise.
        """
        key = hw is not None
        with self._lock:
            try:
                pipe = self._pipelines.get(key)
                if pipe is None:
                    pipe = self._pipelines[key] = self._build(key)
                self._copy.wait()  # DALI may overwrite the buffer the last copy reads from
                pipe.feed_input("encoded", [data])
                pipe.feed_input("frames", [indices.astype(np.int32)])
                if hw is not None:
                    pipe.feed_input("size", [np.asarray(hw, dtype=np.float32)])
                (out,) = pipe.run()
                if as_torch and self.device == "gpu":
                    arr, done = _gpu_output_to_torch(out[0], self.device_id)
                    self._copy.set(done)
                else:
                    if self.device == "gpu":
                        out = out.as_cpu()
                    arr = np.array(out[0], copy=True)
            except Exception as exc:  # DALI raises RuntimeError subclasses; any failure poisons the pipeline
                self._copy.wait()
                self._pipelines.pop(key, None)
                msg = str(exc).strip().splitlines()
                detail = next((line for line in msg if "Assert" in line or "not supported" in line), msg[0] if msg else "")
                raise DecodeError(uri, f"DALI {self.name} could not decode frames ({type(exc).__name__}: {detail})") from exc
        if arr.ndim != 4 or arr.shape[0] != len(indices) or arr.shape[-1] != 3:
            raise DecodeError(uri, f"DALI returned shape {tuple(arr.shape)} for {len(indices)} frames")
        if isinstance(arr, np.ndarray):
            if arr.dtype != np.uint8:
                arr = np.clip(arr, 0, 255).round().astype(np.uint8) if arr.dtype.kind == "f" else arr.astype(np.uint8)
            return torch_from_numpy(arr) if as_torch else arr
        import torch

        if arr.dtype != torch.uint8:
            arr = arr.float().clamp_(0, 255).round_().to(torch.uint8) if arr.dtype.is_floating_point else arr.to(torch.uint8)
        return arr

    # ----- public ------------------------------------------------------------
    def iter_frames(
        self,
        uri: str,
        info: VideoInfo,
        timestamps: Sequence[float],
        size: tuple[int, int] | None = None,
    ) -> Iterator[np.ndarray]:
        """See :meth:`FrameDecoder.iter_frames`."""
        yield from self._iter(uri, info, timestamps, size, as_torch=False)

    def iter_frame_tensors(
        self,
        uri: str,
        info: VideoInfo,
        timestamps: Sequence[float],
        size: tuple[int, int] | None = None,
    ) -> Iterator["torch.Tensor"]:
        """Like :meth:`iter_frames`, but each frame is a torch uint8 ``(H, W, 3)`` tensor.

        For the GPU decoder the frames stay on ``cuda:device_id``: DALI's
        output (a ``TensorListGPU``) is copied device-to-device into a
        torch-owned tensor with ``nvidia.dali.plugin.pytorch.feed_ndarray``
        on torch's current stream, after DALI's run has finished and before
        its next run may reuse the buffer (an event; see
        ``_gpu_output_to_torch``), so there is no host round trip and the
        frame stays valid after DALI reuses its buffers. Rotation
        is applied on the device. For ``dali-cpu`` the tensors are on the CPU.
        Frames of one decode chunk are views into one chunk tensor.
        """
        yield from self._iter(uri, info, timestamps, size, as_torch=True)

    def load_indices(self, uri: str, info: VideoInfo, timestamps: Sequence[float]) -> tuple[np.ndarray, list[int]]:
        """Read ``uri`` into memory and map each timestamp to DALI's frame index: (encoded bytes, indices).

        Raises :class:`DecodeError` for unreadable files, codecs this decoder
        lacks and timestamps with no frame near them, before DALI sees the file.
        """
        try:
            with open_binary(uri, **self.storage_options) as fh:
                raw = fh.read()
        except (OSError, ValueError) as exc:
            raise DecodeError(uri, f"cannot read file ({type(exc).__name__}: {exc})") from exc
        if not raw:
            raise DecodeError(uri, "file is empty (0 bytes)")
        timeline = frame_timeline(uri, raw)
        if timeline.codec not in self.codecs:
            raise DecodeError(
                uri, f"codec {timeline.codec!r} is not supported by {self.name} (supported: {', '.join(sorted(self.codecs))})"
            )
        indices = [self._index_for(uri, info, timeline, t) for t in timestamps]
        return np.frombuffer(raw, dtype=np.uint8), indices

    @staticmethod
    def chunk_plan(indices: Sequence[int], chunk: int) -> Iterator[tuple[int, int, list[int]]]:
        """Split requests into runs: (start, stop, sorted distinct frame indices) with at most ``chunk`` distinct frames each."""
        start = 0
        while start < len(indices):
            wanted: set[int] = set()
            stop = start
            while stop < len(indices) and (indices[stop] in wanted or len(wanted) < chunk):
                wanted.add(indices[stop])
                stop += 1
            yield start, stop, sorted(wanted)
            start = stop

    def _iter(self, uri: str, info: VideoInfo, timestamps: Sequence[float], size, as_torch: bool):
        ts = validate_request(uri, timestamps, size)
        if not ts:
            return
        data, indices = self.load_indices(uri, info, ts)
        stored_w, stored_h = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
        pre = pre_rotation_size(info, size)
        hw = None if pre is None or pre == (stored_w, stored_h) else (pre[1], pre[0])
        per_frame = max(1, stored_w * stored_h * 3)
        chunk = max(1, min(self.max_chunk_frames, self.chunk_bytes // per_frame))
        stats = {"runs": 0, "decoded": 0}
        try:
            for start, stop, order in self.chunk_plan(indices, chunk):
                frames = self._run(uri, data, np.asarray(order, dtype=np.int32), hw, as_torch=as_torch)
                stats["runs"] += 1
                stats["decoded"] += len(order)
                row = {idx: i for i, idx in enumerate(order)}
                for k in range(start, stop):
                    img = frames[row[indices[k]]]
                    if as_torch:
                        yield _rotate_tensor(img, info.rotation) if info.rotation else img
                    else:
                        # A copy, so a frame the caller keeps does not pin the whole chunk.
                        yield rotate_upright(img, info.rotation) if info.rotation else img.copy()
                del frames
        finally:
            self.last_stats = stats

    @staticmethod
    def _index_for(uri: str, info: VideoInfo, timeline: FrameTimeline, t: float) -> int:
        """Index (display order) of the frame displayed at ``t``; DecodeError if the file has none near it."""
        i = bisect.bisect_right(timeline.times, t + time_eps(info)) - 1
        prev = (timeline.times[i], timeline.durations[i]) if i >= 0 else (None, None)
        nxt = timeline.times[i + 1] if i + 1 < len(timeline) else None
        pick = choose_frame(t, prev[0], prev[1], nxt, info)
        if pick is None:
            if i < 0:
                raise DecodeError(uri, f"no frame at t={t:.3f}s: first frame is at {timeline.times[0]:.3f}s")
            after = "the stream ends there" if nxt is None else f"the next one is at {nxt:.3f}s"
            raise DecodeError(
                uri, f"no frame at t={t:.3f}s: last frame before it is at {prev[0]:.3f}s and {after} (truncated or damaged file?)"
            )
        return i if pick == "prev" else i + 1
