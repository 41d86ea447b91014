"""Run by tests/algorithm/test_cluster.py in its own process: a two-node Ray cluster on this
machine (``ray.cluster_utils.Cluster``), EnvRunners placed on the second node, a few
iterations of training; prints one JSON line of what happened."""
import json
import os
import sys

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

torch.set_num_threads(1)
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=2, resources={"second_node": 2})
ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import small_config  # noqa: E402

algo = (small_config(warmup_v_h_e_steps=0, warmup_x_h_steps=0, warmup_q_r_steps=0,
                     beta_r_rampup_steps=0)
        .env_runners(num_env_runners=2, custom_resources_per_env_runner={"second_node": 1},
                     num_cpus_per_env_runner=0.5)
        .build_algo())
driver_node = ray.get_runtime_context().get_node_id()
runner_nodes = algo.env_runner_group.foreach_env_runner(
    lambda er: __import__("ray").get_runtime_context().get_node_id(), local_env_runner=False)
sizes = []
for _ in range(3):
    result = algo.train()
    sizes.append(algo.replay.sizes())
print(json.dumps({"driver_node": driver_node, "runner_nodes": runner_nodes,
                  "num_updates": algo.num_updates, "sizes": sizes,
                  "loss": {k: float(v) for k, v in (result.get("Loss") or {}).items()}}))
algo.stop()
ray.shutdown()
cluster.shutdown()
