"""rmharness: a Hydra harness for benchmarking reward-model architectures (see README.md)."""


def load_reward_model(path, batch_size=None):
    """A reward model exported by a job (``<job_dir>/reward_model/``), ready to ``score(prompts, responses)``;
    see harness.export. Imported lazily, so ``import harness`` stays light."""
    from .export import load_reward_model as load

    return load(path, batch_size)
