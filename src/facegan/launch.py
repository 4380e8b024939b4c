"""``facegan COMMAND … --nproc N``: start the same command as N ranks on this machine, through torchrun.

Why through torchrun and not ``mp.spawn``: it is the launcher every cluster scheduler speaks, so
``--nproc`` on a workstation and ``torchrun --nnodes 4 …`` on a cluster run exactly the same
code (README "Many GPUs and clusters"). It runs in this process (``torch.distributed.run``), so
its failures become facegan's one-line errors instead of a launcher traceback: a failed rank is
named with its exit code, and Ctrl-C / SIGTERM reach every rank, which finish their step and
write one checkpoint before all exit.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile

from facegan.errors import FaceganError

SHUTDOWN_S = 60  # how long torchrun lets the ranks finish a step and write a checkpoint after a signal


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def relaunch(nproc: int, argv: list[str] | None = None) -> int:
    """Run ``python -m facegan ARGV`` (minus ``--nproc``) as ``nproc`` ranks; the exit code to use.

    Each rank's own errors are printed by that rank; this adds one line naming the ranks that failed.
    """
    if "WORLD_SIZE" in os.environ:
        raise FaceganError("--nproc starts torchrun itself; under torchrun (WORLD_SIZE is set) leave it out")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its chatter; failures are reported below
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of torchrun's silent 1 thread per rank
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # torchrun's per-rank error files go to a folder it never removes (/tmp/torchelastic_*, one per run): ours is removed
    logs = tempfile.TemporaryDirectory(prefix="facegan-torchrun-")
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "--shutdown-timeout", str(SHUTDOWN_S), "--log-dir", logs.name,
                       "--module", "facegan", *strip_nproc(list(sys.argv[1:] if argv is None else argv))])
    try:
        run(args)
    except ChildFailedError as e:  # the first rank to fail is the cause; torchrun then stopped the others
        rank, first = e.get_first_failure()
        how = f"exit code {first.exitcode}" if first.exitcode >= 0 else f"killed by signal {-first.exitcode}"
        print(f"error: rank {rank} failed first ({how}); see its error above", file=sys.stderr)
        return first.exitcode if first.exitcode > 0 else 1
    except SignalException as e:
        return 128 + int(e.sigval) if e.sigval != signal.SIGINT else 130
    finally:
        logs.cleanup()
    return 0
