"""XGBoost across the hosts of a SageMaker training job, with xgboost's own collective communicator.

SageMaker starts the same container on every host of a job and tells each which hosts there are and
which one it is (``SM_HOSTS``, ``SM_CURRENT_HOST``, from ``/opt/ml/input/config/resourceconfig.json``);
the train channel is sharded by S3 key, so each host holds some of the preprocessing's parts. As AWS's
own XGBoost container does (``sagemaker_xgboost_container/distributed.py``), the first host in sorted
order runs xgboost's tracker (``xgboost.tracker.RabitTracker``) on port 9099 of its address — the
training instances are single-tenant — and every host joins it (``xgboost.collective``), so each
``xgboost.train`` builds its histograms and trees over all hosts' rows (allreduce) and every host ends
with the same booster. Ranks follow the host order (task ids sorted), so rank 0 is the first host.

Only XGBoost trains this way; every other family trains on one instance (the pipeline gives them one).
A host whose shard is empty still takes part (xgboost handles an empty worker). Host names are resolved
with the system resolver, as the toolkit does when it waits for them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnosa.data.validate import shown
from processing.entry import host_names_problem
from processing.trainset import Rows

logger = logging.getLogger(__name__)

TRACKER_PORT = 9099  # xgboost's default and AWS's XGBoost container's choice
# Every host must have joined within this (its download and data loading included); once the group is up,
# communication has no timeout.
BOOTSTRAP_TIMEOUT_SECONDS = 900
# A host that starts before the first host's tracker listens retries its connection for this long.
CONNECT_RETRIES = 60


@dataclass(frozen=True)
class Cluster:
    """The hosts of a training job, in the service's (sorted) order, and the one this process runs on."""

    hosts: tuple[str, ...]
    current: str

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current)

    @property
    def is_leader(self) -> bool:
        """The host that runs the tracker and writes the model (SageMaker packs every host's model folder)."""
        return self.rank == 0


def cluster_from_env(environ: Mapping[str, str] | None = None) -> Cluster:
    """The cluster the training toolkit describes (``SM_HOSTS`` as a JSON list, ``SM_CURRENT_HOST``); one host
    when neither is set (a job run by hand)."""
    environ = os.environ if environ is None else environ
    raw = environ.get("SM_HOSTS")
    current = environ.get("SM_CURRENT_HOST")
    if raw is None and current is None:
        return Cluster(("algo-1",), "algo-1")
    hosts: Any  # a list of distinct names once host_names_problem passes it
    try:
        hosts = json.loads(raw) if raw is not None else [current]
    except (ValueError, RecursionError):  # nested deeper than Python's recursion limit: was a RecursionError
        raise ValueError(f"SM_HOSTS is not a JSON list of host names: {shown(raw)}") from None
    problem = host_names_problem(hosts)
    if problem:
        raise ValueError(f"SM_HOSTS: {problem}")
    current = current or hosts[0]
    if current not in hosts:
        raise ValueError(f"SM_CURRENT_HOST {shown(current)} is not one of SM_HOSTS {shown(hosts)}")
    return Cluster(tuple(sorted(hosts)), current)


@contextlib.contextmanager
def collective(cluster: Cluster, port: int = TRACKER_PORT,
               timeout: int = BOOTSTRAP_TIMEOUT_SECONDS) -> Iterator[None]:
    """Within this block, xgboost trains across ``cluster`` (a no-op for one host)."""
    if cluster.size == 1:
        yield
        return
    from xgboost import collective as xgb_collective
    from xgboost.tracker import RabitTracker

    address = socket.gethostbyname(cluster.hosts[0])
    tracker = None
    if cluster.is_leader:
        tracker = RabitTracker(n_workers=cluster.size, host_ip=address, port=port, sortby="task", timeout=timeout)
        tracker.start()
        logger.info("host %s: xgboost tracker on %s:%d for %d hosts", cluster.current, address, port, cluster.size)
    # Task ids padded so their sorted order is the host order: rank == position in SM_HOSTS.
    with xgb_collective.CommunicatorContext(dmlc_communicator="rabit", dmlc_tracker_uri=address,
                                            dmlc_tracker_port=port, dmlc_task_id=f"{cluster.rank:05d}",
                                            dmlc_retry=CONNECT_RETRIES, dmlc_timeout=timeout):
        logger.info("host %s joined the collective as rank %d of %d", cluster.current,
                    xgb_collective.get_rank(), xgb_collective.get_world_size())
        yield
    if tracker is not None:
        tracker.wait_for(timeout)


def is_distributed() -> bool:
    """Whether a collective with more than one worker is up in this process."""
    from xgboost import collective as xgb_collective

    return xgb_collective.is_distributed() and xgb_collective.get_world_size() > 1


def total(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over the hosts (the values themselves on one host)."""
    if not is_distributed():
        return values
    from xgboost import collective as xgb_collective

    return xgb_collective.allreduce(np.ascontiguousarray(values), xgb_collective.Op.SUM)


def gather(value: Any) -> list[Any]:
    """Every host's ``value``, in rank order (``[value]`` on one host)."""
    if not is_distributed():
        return [value]
    from xgboost import collective as xgb_collective

    rank = xgb_collective.get_rank()
    return [xgb_collective.broadcast(value if rank == root else None, root)
            for root in range(xgb_collective.get_world_size())]


def digest_of_parts(digests: Mapping[str, str]) -> str:
    """One sha256 for the training data however it was sharded: over every part's name and sha256, by name."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def fit_xgboost(estimator: Any, X: Rows, y: np.ndarray, w: np.ndarray, n_classes: int) -> Any:
    """Fit ``make_classifier('xgboost', ...)``'s estimator on this host's rows across the collective.

    ``XGBClassifier.fit`` infers the classes from the rows it is given, which a shard may lack; this fits
    what it would fit — the same parameters, ``QuantileDMatrix`` and objective — with ``n_classes`` fixed,
    through ``xgboost.train`` (which the collective distributes), and loads the booster into the estimator.
    The sparse step's indicator columns are agreed over all hosts (an indicator is one on every host)."""
    import xgboost as xgb

    from processing.features import SparseIndicators

    steps = list(getattr(estimator, "steps", [("xgboost", estimator)]))
    classifier = steps[-1][1]
    rows = X
    for _, step in steps[:-1]:
        if isinstance(step, SparseIndicators):
            step.fit(X)
            agreed = total((~step.indicator_).astype(np.int32)) == 0
            step.indicator_ = agreed
        rows = step.transform(rows)
    params = classifier.get_xgb_params()
    if n_classes > 2:
        params.update(objective="multi:softprob", num_class=n_classes)
    dtrain = xgb.QuantileDMatrix(rows, label=y, weight=w, nthread=classifier.n_jobs, max_bin=classifier.max_bin)
    booster = xgb.train(params, dtrain, classifier.get_num_boosting_rounds())
    classifier.load_model(bytearray(booster.save_raw("json")))
    return estimator
