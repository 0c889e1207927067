"""Resumable training checkpoints through orbax: state + JSON metadata per step, committed atomically.

`ocp.CheckpointManager` writes each step into a temporary directory and
renames it when every host has finished (so a kill -9 mid-save leaves the
previous step as the latest), saves asynchronously (training continues while
bytes hit the disk), keeps the newest `keep` steps, and in a multi-host run
has each host write its own shards. A checkpoint holds the `TrainState`
(step, trainable f32 weights and adapters, optimizer state, RNG key) and
metadata: the data position, the data file's sha256 and the options a
resumed run must repeat. Frozen weights are not saved: they are reloaded
from the source checkpoint (or re-drawn from the seed), so a LoRA run's
checkpoints hold adapters, not a copy of the base model.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from pg2edge.config import ConfigError
from pg2edge.train.step import TrainState

CHECKPOINTS = "checkpoints"


class Checkpoints:
    """The checkpoints under `DIR/checkpoints`; use as a context manager so pending saves finish."""

    def __init__(self, out: Path, keep: int = 2) -> None:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
        self.directory = Path(out).absolute() / CHECKPOINTS
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def latest_step(self) -> int | None:
        """The newest fully committed step (uncommitted temporaries are ignored), or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: TrainState, meta: dict) -> None:
        """Start writing `step` (returns once the arrays are copied off the devices)."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
        """State laid out as `abstract_state` (ShapeDtypeStructs with shardings) and its metadata."""
        try:
            got = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{self.directory / str(step)}: checkpoint does not match this run's state "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        return got.state, dict(got.meta)

    def read_meta(self, step: int) -> dict:
        """Only the metadata of `step` (cheap: checked before building any state)."""
        got = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(got.meta)

    def wait(self) -> None:
        """Block until every started save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract(tree: object, shardings: object) -> object:
    """ShapeDtypeStructs carrying the target shardings: what orbax restores into."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
