"""A plain run prints none of the library notices that no EMPO user can act on
(rllib_empo.algorithm.notices): a script that builds two algorithms and trains each once, in
its own Python process, joined to the test session's Ray cluster."""
import os
import subprocess
import sys

NOTICES = ("on the new API stack", "RLModuleConfig", "Install gputil", "Overriding environment")

SCRIPT = """
from rllib_empo import EmpoConfig
config = (EmpoConfig().environment("rllib_empo/RockGate-v0")
          .training(warmup_v_h_e_steps=4, warmup_x_h_steps=4, warmup_q_r_steps=4,
                    beta_r_rampup_steps=4, hidden_sizes=(16, 16)))
for _ in range(2):                 # a second algorithm re-registers RLlib's env id
    algo = config.build_algo()
    algo.train()
    algo.stop()
print("trained")
"""


def test_plain_run_prints_no_avoidable_notice(ray_session):
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address,
               PYTHONWARNINGS="default")          # show every warning the run raises
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained" in proc.stdout
    output = proc.stdout + proc.stderr
    for notice in NOTICES:
        assert notice not in output, f"{notice!r} printed:\n{output[-3000:]}"


def test_the_silenced_keys_are_the_ones_rllib_uses():
    """If RLlib renames a key or message, silencing it would quietly stop working."""
    import inspect

    from ray.rllib.algorithms import algorithm_config
    from ray.rllib.core.rl_module import rl_module
    from ray.tune.utils import util

    from rllib_empo.algorithm.notices import LOG_ONCE_KEYS, LOGGED_NOTICES
    assert '_on_new_api_stack"' in inspect.getsource(algorithm_config)
    assert f'old="{LOG_ONCE_KEYS[1]}"' in inspect.getsource(rl_module)
    assert LOGGED_NOTICES[0][1] in inspect.getsource(util)
