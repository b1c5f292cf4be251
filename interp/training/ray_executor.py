"""The Ray executor of ``interp sweep``: each ensemble is a Ray task (``pip install 'interp[ray]'``).

A task trains its ensemble with ``sweep.train_members`` straight into the sweep directory, so the
directory must be reachable under the same path from every node (a shared file system). A task
whose worker dies is retried by Ray (``max_retries``) and continues from its members' checkpoints;
nothing is lost or trained twice, and the runs end bit-identical to the in-process executor's
when both use the same number of threads (``--threads``).

Local use starts a private Ray instance (``ray.init``); ``--address auto`` joins the cluster this
machine belongs to (``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the
others), ``--address ray://HEAD:10001`` connects a client to a remote one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from interp.errors import InterpError
from interp.store import METRICS_FILE

MAX_RETRIES = 3


def _last_epoch(run_dir: str) -> int:
    """The last epoch recorded in a run's metrics (0 if none yet): how far a remote task has come."""
    try:
        with open(Path(run_dir) / METRICS_FILE, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
        return int(lines[-1].split(b",")[0]) if len(lines) > 1 else 0
    except (OSError, ValueError, IndexError):
        return 0


def run_groups(
    cfg_groups: Sequence[list[dict]],
    dir_groups: Sequence[list[str]],
    device: str,
    address: Optional[str],
    bar,
    on_group_done: Callable[[], object],
    threads: Optional[int],
    num_cpus: Optional[int] = None,
) -> None:
    """Run every ensemble as a Ray task; raise InterpError if one still fails after its retries."""
    try:
        import ray
    except ImportError:
        raise InterpError("the Ray executor needs Ray: pip install 'interp[ray]'") from None
    from interp.training.sweep import train_members

    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    per_task = threads or 1
    task = ray.remote(num_cpus=per_task, num_gpus=1 if device.startswith("cuda") else 0, max_retries=MAX_RETRIES)(
        train_members
    )
    pending = {task.remote(cfgs, dirs, per_task): dirs for cfgs, dirs in zip(cfg_groups, dir_groups)}
    all_dirs = [d for dirs in dir_groups for d in dirs]
    seen = 0
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
        for ref in done:
            dirs = pending.pop(ref)
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a task that failed after all retries
                raise InterpError(
                    f"Ray task for {len(dirs)} run(s) ({Path(dirs[0]).name}, ...) failed after "
                    f"{MAX_RETRIES} retries: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                ) from None
            index = on_group_done()
            bar.bar.set_postfix(
                runs=f"{int((index['status'] == 'done').sum())}/{len(index)}",
                grokked=int(index["T_grok"].notna().sum()),
            )
        progress = sum(_last_epoch(d) for d in all_dirs)
        bar.bar.update(max(0, progress - seen))
        seen = max(seen, progress)
