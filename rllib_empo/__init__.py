"""rllib_empo: robot policies that softly maximise aggregate human power (EMPO phase 2),
as a Ray RLlib algorithm with a staged warm-up."""
__version__ = "0.1.0"
