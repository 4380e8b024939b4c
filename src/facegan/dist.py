"""Many processes, one run: torchrun's environment, the process group, and the few collectives facegan uses.

Why one small module: training, evaluation and generation all need the same answers — which rank
am I, which device is mine, how do the ranks agree to stop, which rank stopped answering — and
they must be the same answers everywhere. With one process (no ``WORLD_SIZE`` in the
environment) every helper here is a no-op, so single-device code pays nothing.

Design choices that matter to users:
- launched by ``torchrun`` (or ``facegan … --nproc N``, which starts torchrun on this machine):
  NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU;
- control messages (stop flags, weight fingerprints, random states, errors) travel on a separate
  gloo group, so they never touch the GPU stream;
- a process-group timeout (``--dist-timeout``) turns a hung peer into an error; a heartbeat in
  the rendezvous store lets that error name the rank that stopped answering;
- work that only rank 0 does (writing a checkpoint) reports its failure to every rank, so no rank
  waits for a partner that has already given up.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from facegan.device import pick_device
from facegan.errors import FaceganError, error_line

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800.0  # --dist-timeout's default: a peer silent this long is an error naming it
HEARTBEAT_S = 1.0  # how often each rank writes "alive at step N" into the rendezvous store
BEAT_WRITE_S = 5.0  # the longest one heartbeat write may block (its own store connection's timeout)


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run directly."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        raise FaceganError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None


def rank_seed(seed: int, rank: int, stream: str) -> int:
    """The seed of a rank's own random stream: distinct for every (seed, rank, stream), stable across versions."""
    digest = hashlib.sha256(f"facegan/{stream}/{seed}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class Dist:
    """This process's place in the run. ``world == 1``: no process group, every collective a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _ctrl: Any = None
    _progress: list[int] = field(default_factory=lambda: [0])  # [step], shared with the heartbeat thread
    _stop: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None
    _wrapped: list[nn.Module] = field(default_factory=list)  # the DDP wrappers made by ``ddp``, retired by ``close``

    @property
    def step(self) -> int:
        """Steps taken so far, which the heartbeat reports; the training loop keeps it current."""
        return self._progress[0]

    @step.setter
    def step(self, value: int) -> None:
        self._progress[0] = value

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # ---- set-up and teardown -------------------------------------------------------------------
    @classmethod
    def setup(cls, device_name: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> "Dist":
        """Join the run torchrun started (or stay alone); picks this rank's device."""
        rank, world, local = env_world()
        device = pick_device(device_name)
        if world <= 1:
            return cls(device=device)
        if device.type == "mps":
            raise FaceganError("multi-process runs need CUDA (NCCL) or the CPU (gloo); use --device cpu on this Mac")
        if device.type == "cuda":
            if local >= torch.cuda.device_count():
                raise FaceganError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                                   "start at most that many processes per node")
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=timeout_s)
        # NCCL runs collectives asynchronously and its watchdog kills a process whose peer hangs;
        # blocking waits make the timeout an exception here instead, which lost() turns into one line
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        # torch.distributed.nn.functional takes ``group.WORLD`` as a default argument when it is first
        # imported, which DDP does (through torch._dynamo): imported after the group exists, it would
        # hold the group for the life of the process, past destroy_process_group (see close)
        import torch.distributed.nn as _captures_world  # noqa: F401 - "as": a bare import would make torch local here
        try:
            tdist.init_process_group(backend, timeout=timeout, **({"device_id": device} if backend == "nccl" else {}))
        except (RuntimeError, ValueError) as e:
            raise FaceganError(f"could not join the other {world - 1} rank(s) ({e}); check that every node "
                               "uses the same --rdzv-endpoint and that its port is reachable") from None
        d = cls(rank, world, local, device)
        try:
            d._ctrl = tdist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else tdist.group.WORLD
        except (RuntimeError, ValueError) as e:
            tdist.destroy_process_group()
            raise FaceganError(f"could not set up the control group with the other {world - 1} rank(s) ({e})") from None
        store = _beat_store()
        if store is not None:  # without one, lost() names no rank; nothing else needs it
            # the thread gets the store, the stop flag and the step cell: never the Dist, never a group
            d._beat = threading.Thread(target=_heartbeat, args=(store, rank, d._stop, d._progress),
                                       name="facegan-heartbeat", daemon=True)
            d._beat.start()
        return d

    def close(self) -> None:
        """Stop the heartbeat and wait for its thread, retire the DDP wrappers, then leave the groups.

        This order is what lets a finished run exit 0 on every rank, every time (issue #27):
        - an unjoined heartbeat thread could still be running when the interpreter shut down, and
          its last release of a process group or store runs a C++ destructor that gives up the GIL;
          a thread that asks for the GIL back during shutdown is ended by ``pthread_exit``, whose
          unwinding through ``noexcept`` code calls ``std::terminate`` ("terminate called without
          an active exception", SIGABRT, after the checkpoint was written);
        - a group must never be freed from C++ while this thread holds the GIL: gloo's destructor
          waits for its worker threads, one of which may still be freeing a finished collective's
          tensors and need the GIL, a deadlock. DDP's reducer is the C++ owner that could hold the
          last reference, so it goes first, while the groups are still registered; every owner
          left is a Python handle, whose release gives up the GIL while the group is destroyed;
        - the groups must be gone when this returns, not merely unregistered: a handle kept by
          anything (a DDP wrapper, which sits in a reference cycle and lives until the garbage
          collector runs at shutdown; this Dist; a default argument captured by a torch module
          imported after the group was made, see setup) keeps gloo's worker threads alive, and a worker
          still freeing the last collective's tensors asks for the GIL during shutdown and aborts
          the same way (seen in a core dump: ``runLoop`` → ``~AsyncAllgatherWork`` → ``take_gil``
          → ``pthread_exit`` while the main thread was in ``Py_FinalizeEx``). So the wrappers and
          this Dist drop their handles, and destroying the groups joins the workers here.
        Without leaving the groups, gloo aborts at exit after a failure.
        """
        self._stop.set()
        if self._beat is not None:  # each of its writes times out after BEAT_WRITE_S
            self._beat.join(HEARTBEAT_S + BEAT_WRITE_S + 1.0)
            if self._beat.is_alive():
                print("warning: the heartbeat thread did not stop: its rendezvous store is not answering", file=sys.stderr)
            self._beat = None
        for wrapped in self._wrapped:
            _retire(wrapped)
        self._wrapped.clear()
        self._ctrl = None  # with the wrappers' handles gone, the registry's are the last: destroying frees the groups
        if self.active and tdist.is_initialized():
            try:
                tdist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group is being thrown away anyway
                pass

    # ---- collectives (no-ops with one process) ---------------------------------------------------
    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """Average ``t`` over the ranks, in place (every rank gets the same values)."""
        if self.active:
            tdist.all_reduce(t)
            t.div_(self.world)
        return t

    def agree_max(self, value: int) -> int:
        """The largest of every rank's ``value``: how the ranks agree to stop at the same step."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self._ctrl)
        return int(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (small, picklable: random states, features), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj, group=self._ctrl)
        return out

    def first_then_rest(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on each node's local rank 0 first, then on the others.

        For work that fills a cache (preparing a dataset, Inception features of the real set):
        one process per node does it, the others then find it done.
        """
        leader = self.local_rank == 0
        first = self.on_main(fn, who=leader)[0]  # the leaders; every rank learns if one failed
        then = self.on_main(fn, who=not leader)[0]  # the others, now finding the work done
        return first if leader else then  # type: ignore[return-value]

    def on_main(self, fn: Callable[[], T], who: bool | None = None) -> tuple[T | None]:
        """Run ``fn`` on rank 0 only (or where ``who``: e.g. True everywhere for work every rank does
        its share of); every rank learns whether any failed, and the others stop with one line.

        Without this, a rank-0 error (a full disk while checkpointing) would leave the other ranks
        waiting at their next collective until the timeout. Returns ``(result,)`` (None elsewhere).
        """
        mine = self.is_main if who is None else who
        result, err = None, None
        if mine:
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised below, after telling the others
                err = e
        if self.active:
            msgs = self.gather(error_line(err) if err is not None else None)
            failed = [(r, m) for r, m in enumerate(msgs) if m is not None]
            if failed and err is None:
                r, m = failed[0]
                raise FaceganError(f"stopped because rank {r} failed: {m}")
        if err is not None:
            raise err
        return (result,)

    def sync_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Make every buffer identical on all ranks: BatchNorm running statistics are averaged, the rest
        (counters, spectral norm's u/v, the projected D's fixed projections) come from rank 0 — an
        average of equal values can still move them by a rounding step."""
        if not self.active:
            return
        for m in modules:
            for name, b in m.named_buffers():
                if name.endswith(("running_mean", "running_var")):
                    self.mean_(b.data)
                else:
                    tdist.broadcast(b.data, 0)

    def check_same(self, weights: dict[str, list[torch.Tensor]], step: int) -> None:
        """Stop with an error if any rank's weights differ from rank 0's (a bug or a hardware fault)."""
        if not self.active:
            return
        mine = {name: fingerprint(ts) for name, ts in weights.items()}
        prints = self.gather(mine)
        bad = sorted({f"rank {r} ({name})" for r, p in enumerate(prints) for name in p if p[name] != prints[0][name]})
        if bad:
            raise FaceganError(f"ranks diverged at step {step}: {', '.join(bad)} hold different weights from rank 0; "
                               "nothing was saved; this is a facegan bug or a hardware fault: please report it", exit_code=3)

    def lost(self, e: BaseException) -> FaceganError:
        """A failed collective as one line that names the rank(s) that stopped answering.

        Every rank writes a heartbeat into the rendezvous store each HEARTBEAT_S; the ranks whose
        heartbeat does not move for three periods after the failure are the ones named.
        """
        store = _store()

        def beats() -> dict[int, str | None]:
            out: dict[int, str | None] = {}
            for r in range(self.world):
                if r != self.rank:
                    key = f"facegan/alive/{r}"
                    out[r] = store.get(key).decode() if store.check([key]) else None
            return out

        try:
            failed = [f"rank {r} ({store.get(f'facegan/failed/{r}').decode()})" for r in range(self.world)
                      if r != self.rank and store.check([f"facegan/failed/{r}"])]
            before = {} if failed else beats()
            time.sleep(0 if failed else 3 * HEARTBEAT_S)
            after = beats() if before else {}
            silent = failed or [f"rank {r}" + (f" (last alive at step {b.split()[1]})" if b else " (never heard from)")
                                for r, b in before.items() if b == after[r]]
            if not silent and after:  # everyone still beats: the ones behind are stuck (a hang, not a death)
                steps = {r: int(b.split()[1]) for r, b in after.items() if b}
                top = max([*steps.values(), self.step])
                silent = [f"rank {r} (stuck at step {at})" for r, at in steps.items() if at < top]
        except Exception:  # noqa: BLE001 - the store lives with rank 0 / the first node: it may be gone too
            silent = ["the first node (its rendezvous store is unreachable)"] if self.rank else []
        who = ", ".join(silent) if silent else "another rank"
        at = f" at step {self.step}" if self.step else ""
        why = re.sub(r"\[[^\]]*\.(cc|cpp):\d+\]\s*", "", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        why = why.split(". This is typically")[0][:120]
        return FaceganError(f"lost contact with {who}{at} ({why}); see that rank's own output, "
                            "or raise --dist-timeout if it was only slow")


@contextmanager
def session(device_name: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Dist]:
    """This process's place in the run for the length of a command: joined, then left; a failed
    collective inside becomes one line naming the rank that stopped answering."""
    d = Dist.setup(device_name, timeout_s)
    try:
        yield d
    except Exception as e:
        if d.active and is_comm_error(e):
            raise d.lost(e) from None
        if d.active:  # tell the others why this rank is leaving, so their error can say so
            _tell_failed(d.rank, e)
        raise
    finally:
        d.close()


def is_comm_error(e: BaseException) -> bool:
    """Whether ``e`` comes from a collective whose peers failed (gloo/NCCL raise plain RuntimeErrors)."""
    if isinstance(e, getattr(tdist, "DistError", ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in (
        "gloo", "Gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out", "Broken pipe"))


def fingerprint(tensors: Iterable[torch.Tensor]) -> tuple[int, int]:
    """Two integer checksums of tensors' bits: exact (no float rounding), sensitive to order."""
    total, weighted = 0, 0
    for t in tensors:
        v = t.detach().contiguous().reshape(-1)
        bits = v.view({8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}[v.element_size()]).to(torch.int64)
        pos = torch.arange(1, bits.numel() + 1, device=bits.device) % 65_521
        total = (total + int(bits.sum())) % (1 << 62)
        weighted = (weighted + int((bits * pos).sum())) % (1 << 62)
    return total, weighted


def ddp(module: nn.Module, d: Dist) -> nn.Module:
    """``module`` wrapped for gradient all-reduce when there are several ranks; itself otherwise.

    ``broadcast_buffers=False``: each rank keeps its own BatchNorm statistics during a step (they
    are averaged before anything is saved or drawn); torch 2.13 warns that the flag is deprecated
    but its replacement still syncs buffers at start-up, which rank-local buffers must not do.
    """
    if not d.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*")
        ids = [d.device.index] if d.device.type == "cuda" else None
        wrapped = DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)
    d._wrapped.append(wrapped)  # its reducer is freed by Dist.close, before the groups (see there)
    return wrapped


def _retire(wrapped: nn.Module) -> None:
    """Free a DDP wrapper's C++ reducer now, and the logger that holds it, so that no C++ object is
    left to release a process group's last reference later, holding the GIL; and drop its group
    handle, so that destroying the groups frees them now (see :meth:`Dist.close`).
    The wrapper can no longer train afterwards; its module and parameters are untouched."""
    for name in ("logger", "reducer", "process_group"):  # DDP's own attributes, stable since torch 1.9
        if name in wrapped.__dict__:
            setattr(wrapped, name, None)


def _heartbeat(store: Any, rank: int, stop: threading.Event, progress: list[int]) -> None:
    """Write "alive at step N" into the store every HEARTBEAT_S until ``stop``; what :meth:`Dist.lost` reads.

    A failed write (a slow or vanished store host) is tried again a period later rather than
    ending the beat, so a slow store cannot make this rank look dead; the failing collective says
    what really went wrong.
    """
    while not stop.wait(HEARTBEAT_S):
        try:
            store.set(f"facegan/alive/{rank}", f"{time.time():.3f} {progress[0]}")
        except Exception:  # noqa: BLE001 - see above
            pass


def _store() -> Any:
    """The rendezvous key-value store of the default process group, if there is one."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # noqa: BLE001 - no group, or a torch without this (private, long-stable) helper
        return None


def _beat_store() -> Any:
    """The heartbeat's own connection to the rendezvous store, each write bounded by BEAT_WRITE_S
    (the shared one waits as long as --dist-timeout), so that :meth:`Dist.close` can always join
    it; None where there is none."""
    try:
        beat = _store().clone()
        beat.set_timeout(timedelta(seconds=BEAT_WRITE_S))
        return beat
    except Exception:  # noqa: BLE001 - no store, or one that cannot be cloned: no heartbeat rather than an unbounded one
        return None


def _tell_failed(rank: int, e: BaseException) -> None:
    store = _store()
    try:
        if store is not None:
            store.set(f"facegan/failed/{rank}", error_line(e)[:200])
    except Exception:  # noqa: BLE001 - best effort: the store may be gone
        pass
