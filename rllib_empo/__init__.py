"""rllib_empo: robot policies that softly maximise aggregate human power (EMPO phase 2),
as a Ray RLlib algorithm with a staged warm-up.

    from rllib_empo import EmpoConfig
    algo = EmpoConfig().environment("rllib_empo/RockGate-v0").build_algo()

Importing the package registers the algorithm with Ray Tune as "EMPO" and every built-in
world as an env id (``rllib_empo/Corridor-v0``, ``rllib_empo/RockGate-v0``,
``rllib_empo/Crowd-v0``, and ``rllib_empo/World-v0`` taking ``env_config["world"]``).
"""
from rllib_empo.algorithm import Empo
from rllib_empo.config import EmpoConfig
from rllib_empo.env import EmpoEnv, register_envs
from rllib_empo.evaluation import compare_to_exact

__version__ = "0.1.0"
__all__ = ["Empo", "EmpoConfig", "EmpoEnv", "compare_to_exact"]


def _register() -> None:
    from ray.tune.registry import register_trainable
    register_envs()
    register_trainable("EMPO", Empo)


_register()
