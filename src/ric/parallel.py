"""Several processes through accelerate: who does which rows, and who writes.

``accelerate launch --num_processes K -m ric ...`` (or ``torchrun``) starts K copies of the same
command. Every stage follows one rule, so a K-process run makes what a 1-process run makes:

* long work over rows (generation, scoring) is split into K interleaved parts, one per process,
  and gathered back in the original order once (``map_rows``);
* only the main process writes files (``on_main``), and the others wait until it has
  (``wait_for_everyone``), so every process reads the same saved state on resume;
* training is data-parallel inside ``ric.training.sft`` (each process takes its share of every
  micro-batch, so the global batch is the configured one).

With one process (the usual `ric ...` command) every helper is a no-op: no process group is made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def on_cpu() -> bool:
    """No CUDA device: processes run on the CPU and talk through gloo. accelerate must be told
    (``cpu=True``); otherwise it treats a launched CPU process as a lone one."""
    import torch

    return not torch.cuda.is_available()


@cache
def _state() -> Any:
    """accelerate's process state (made once; reads the launcher's environment variables)."""
    import atexit

    from accelerate import PartialState

    state = PartialState(cpu=on_cpu())
    if state.num_processes > 1:
        # A process group still alive at interpreter exit aborts it ("terminate called without an
        # active exception", exit -6) once its communication threads are torn down.
        atexit.register(state.destroy_process_group)
    return state


def launched() -> bool:
    """Whether this command is one of several processes (a launcher set WORLD_SIZE > 1); read
    from the environment, so asking makes no process group."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def num_processes() -> int:
    return int(_state().num_processes)


def process_index() -> int:
    return int(_state().process_index)


def is_main_process() -> bool:
    return bool(_state().is_main_process)


def wait_for_everyone() -> None:
    """A barrier: returns once every process has reached it."""
    if num_processes() > 1:
        _state().wait_for_everyone()


def own_share(items: Sequence[T]) -> list[T]:
    """This process's rows of ``items``: every K-th one, starting at its index (interleaved, so
    length-sorted work is spread evenly)."""
    return list(items[process_index() :: num_processes()])


def gather_shares(share: list[T], total: int) -> list[T]:
    """Every process's ``own_share`` results back in the order of the ``total`` original rows.
    Collective: every process must call it, and every process gets the whole list."""
    count = num_processes()
    if count == 1:
        return share
    shares = gather_objects(share)
    merged: list[Any] = [None] * total
    for index, part in enumerate(shares):
        merged[index::count] = part
    return merged


def gather_objects(value: T) -> list[T]:
    """Every process's ``value``, in process order (``[value]`` with one process). Collective:
    every process must call it, and every process gets the whole list."""
    if num_processes() == 1:
        return [value]
    from accelerate.utils import gather_object

    return list(gather_object([value]))


def map_rows(items: Sequence[T], work: Callable[[list[T]], list[R]]) -> list[R]:
    """``work`` over ``items`` split between the processes (one result per item), gathered in
    input order on every process. ``work`` sees only this process's rows."""
    return gather_shares(work(own_share(items)), len(items))


def on_main(write: Callable[[], None]) -> None:
    """Run ``write`` on the main process only, then wait for it everywhere."""
    if is_main_process():
        write()
    wait_for_everyone()
