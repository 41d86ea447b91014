"""rllib_empo: robot policies that softly maximise aggregate human power (EMPO phase 2),
as a Ray RLlib algorithm with a staged warm-up.

    from rllib_empo import EmpoConfig
    algo = EmpoConfig().environment("rllib_empo/RockGate-v0").build_algo()

Importing the package registers the algorithm with Ray Tune as "EMPO" and every built-in
world as an env id (``rllib_empo/Corridor-v0``, ``rllib_empo/RockGate-v0``, ...,
and ``rllib_empo/World-v0`` taking ``env_config["world"]``).

Layers (each folder's ``__init__`` says what it may import; nothing imports upwards):
``theory`` (equations, parameters, warm-up schedule) <- ``worlds`` (protocol, registry,
built-in worlds) <- ``exact`` (state space, priors, solver) <- ``algorithm`` (the RLlib
algorithm) <- ``analysis`` (evaluation, rollouts, plots) <- ``cli``. ``humans`` and
``evaluation`` here are the public names of ``exact.priors`` and ``analysis.evaluation``.
"""
from rllib_empo.algorithm.empo import Empo, EmpoConfig
from rllib_empo.algorithm.env import EmpoEnv, register_envs
from rllib_empo.exact.compare import compare_to_exact

__version__ = "0.1.0"
__all__ = ["Empo", "EmpoConfig", "EmpoEnv", "compare_to_exact"]


def _register() -> None:
    from ray.tune.registry import register_trainable
    register_envs()
    register_trainable("EMPO", Empo)


_register()
