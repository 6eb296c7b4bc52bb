"""Interleaved timing with medians, and peak memory of one call, on CPU or CUDA.

Timing: the sides of a comparison run round-robin in one process (A B A B ...), first `warmup` untimed rounds, then
`repeats` timed ones, so drift of the machine (other load, clock changes, allocator state) hits every side alike. Each
side reports the median of its timed calls.

Memory: the peak of one call is what its side keeps between calls (`resident_bytes`: the distinct storages of weights,
buffers, gradients, optimizer states and inputs) plus the highest amount the call allocates on top while it runs
(`transient_peak_bytes`). On CUDA the transient peak is `torch.cuda.max_memory_allocated()` minus what was allocated
at the start. On CPU, where no allocator keeps statistics, it comes from the allocation and free events that
`torch.profiler` records with `profile_memory=True`, replayed in time order: the highest running sum. Both count
tensor memory from PyTorch's allocator (not the Python heap, not library scratch space), the same quantity on both
devices.
"""

import functools
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

MEMORY_EVENT = "[memory]"
T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Waits for queued device work, so a timer read after it covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of `fn` takes, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def round_robin(cases: Mapping[str, Callable[[], T]], warmup: int, repeats: int) -> dict[str, list[T]]:
    """What each case returns, calling the cases in turn: `warmup` rounds whose results are dropped, then `repeats`."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    results: dict[str, list[T]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            results[name].append(fn())
    return results


def interleave(
    cases: Mapping[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each case, run round-robin: `warmup` untimed rounds, then `repeats` timed rounds."""
    return round_robin({name: functools.partial(timed, fn, device) for name, fn in cases.items()}, warmup, repeats)


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        for parameter in obj.parameters():
            yield parameter
            if parameter.grad is not None:
                yield parameter.grad
        yield from obj.buffers()
    elif isinstance(obj, torch.optim.Optimizer):
        for state in obj.state.values():
            yield from (value for value in state.values() if isinstance(value, torch.Tensor))
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def resident_bytes(*objects: Any) -> int:
    """Bytes of the distinct storages held by modules (weights, buffers, gradients), optimizers and tensor batches."""
    storages = {}
    for tensor in itertools.chain.from_iterable(_tensors(obj) for obj in objects):
        storage = tensor.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def transient_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """The most memory `fn` holds at once on top of what was allocated when it started."""
    if device.type == "cuda":
        synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        fn()
    # Every allocation and free of the CPU allocator while profiling, as (time, signed bytes) memory events.
    events = sorted(
        (
            event
            for event in profiler.profiler.kineto_results.events()
            if event.name() == MEMORY_EVENT and event.device_type() == DeviceType.CPU
        ),
        key=lambda event: event.start_ns(),
    )
    return max(itertools.accumulate(event.nbytes() for event in events), default=0)
