"""The SLURM resources of a sweep's jobs, as ``vlab sweep submit``'s flags and a spec's
``slurm`` name them: plain data, validated on construction, readable without submitit."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlab.errors import ConfigError


@dataclass(frozen=True)
class SlurmOptions:
    """The SLURM resources of every job of a sweep (one array job per submission).

    A job is one run. It starts ``nodes`` x ``tasks_per_node`` processes (ranks) that train
    the run together (:mod:`vlab.slurm.ranks`): one process per GPU, so ``gpus_per_node``
    alone implies as many tasks per node. ``gpus_per_task`` is the single-process form (the
    GPUs of a one-task job), kept for the sweeps that recorded it. ``sbatch`` holds extra
    ``#SBATCH`` options (``{"constraint": "a100"}``); ``setup`` holds shell lines run before
    the job (``module load cuda``, activating an environment).
    """

    partition: str | None = None
    gpus_per_task: int = 0
    nodes: int = 1
    tasks_per_node: int | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = 60
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    sbatch: dict = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("cpus_per_task", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_task < 0:
            raise ConfigError("gpus_per_task", f"must be >= 0, got {self.gpus_per_task}")
        self._check_ranks()
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ConfigError("mem_gb", f"must be > 0, got {self.mem_gb}")
        # each value becomes one line of the job script: a line break would smuggle in more
        texts = {f"sbatch.{k}": f"{k}={v}" for k, v in self.sbatch.items()}
        texts.update({f"setup[{i}]": line for i, line in enumerate(self.setup)})
        texts.update({n: getattr(self, n) or "" for n in ("partition", "account", "qos")})
        for name, text in texts.items():
            if any(c in str(text) for c in "\n\r\0"):
                raise ConfigError(name, f"must be one line, got {text!r}")

    def _check_ranks(self) -> None:
        """Processes and GPUs must pair up: vlab trains one rank per GPU."""
        if self.nodes < 1:
            raise ConfigError("nodes", f"must be >= 1, got {self.nodes}")
        for name in ("tasks_per_node", "gpus_per_node"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be >= 1, got {value}")
        if self.gpus_per_node is not None and self.gpus_per_task:
            raise ConfigError(
                "gpus_per_task",
                "give either gpus_per_node (one process per GPU) or gpus_per_task (a "
                "one-process job), not both",
            )
        if self.gpus_per_task and self.ranks > 1:
            raise ConfigError(
                "gpus_per_task",
                f"is for one-process jobs; for {self.ranks} processes per run give "
                "gpus_per_node (one process per GPU)",
            )
        gpus, tasks = self.gpus_per_node, self.tasks_per_node
        if gpus is not None and tasks is not None and gpus != tasks:
            raise ConfigError(
                "tasks_per_node",
                f"{tasks} with gpus_per_node {gpus}: vlab runs one process per GPU "
                f"(give tasks_per_node {gpus}, or leave it out)",
            )

    @property
    def tasks(self) -> int:
        """Processes per node: ``tasks_per_node``, else one per GPU, else one."""
        return self.tasks_per_node or self.gpus_per_node or 1

    @property
    def ranks(self) -> int:
        """Processes that train one run together."""
        return self.nodes * self.tasks

    @property
    def gpus(self) -> int:
        """GPUs per node."""
        return self.gpus_per_node if self.gpus_per_node is not None else self.gpus_per_task
