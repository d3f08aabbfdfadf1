"""Starting or joining Ray for a search or a study, quietly, and refusing resources it lacks."""

from __future__ import annotations

import logging
import os

from nas.config import ResourcesConfig, SearchConfigError

LOCAL_NODE_IP = "127.0.0.1"  # a local Ray talks to itself over loopback only
# Ray turns 127.0.0.1 into the machine's outward address unless clusters are off for this process
# (the switch is named for Windows and macOS, where they are off by default): a Ray started here
# for one machine then binds loopback only, never an interface the network can reach.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def quiet_ray() -> None:
    """Our progress lines and records say what happened; Ray's and Tune's chatter would not help.
    Tune's own advice on a stop (Tuner.restore(...)) and its missing-metrics warnings for stopped
    trials would contradict ours: a run resumes with `--resume`."""
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # verbose=0 means silent
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # the records keep the error text
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def start_ray(resources: ResourcesConfig, address: str | None, memory: int | None = None) -> bool:
    """Join `address` or start a local Ray; True if this call started it (and should stop it).
    memory: bytes of Ray's `memory` resource a local Ray offers trials (None: Ray's default)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        for name, value in LOOPBACK_ONLY.items():
            os.environ.setdefault(name, value)
        ray.init(num_cpus=resources.num_cpus, _memory=memory, include_dashboard=False,
                 _node_ip_address=LOCAL_NODE_IP, logging_level=logging.WARNING,
                 log_to_driver=False)
    return True


def check_resources(resources: ResourcesConfig) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse it now."""
    import ray

    have = ray.cluster_resources()
    for name, want, key in (("cpus_per_trial", resources.cpus_per_trial, "CPU"),
                            ("gpus_per_trial", resources.gpus_per_trial, "GPU")):
        if want > have.get(key, 0.0):
            raise SearchConfigError(f"resources.{name}", f"{want:g} per trial, but the Ray cluster "
                                    f"has {have.get(key, 0.0):g} {key}s")
