"""Active learning (``mlip learn CONFIG``): train an ensemble, explore with compiled MD,
select frames the ensemble disagrees on, label them with an oracle, repeat.

:mod:`~mlip.learn.config` reads the configuration, :mod:`~mlip.learn.selection`
holds the trust-level classification and the farthest-point diversity selection,
:mod:`~mlip.learn.loop` runs the iterations with a resumable state file.
"""

from mlip.learn.config import LearnConfig, load_learn_config
from mlip.learn.loop import IterationRecord, learn

__all__ = ["IterationRecord", "LearnConfig", "learn", "load_learn_config"]
