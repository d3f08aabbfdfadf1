"""The CoAtNet layout study (section 2.2) as one command: five layouts matched in parameters,
trained at several data sizes with several seeds through Ray Tune, read at matched training loss
(generalization) and on a large deformed set (capacity), ranked against the paper's rankings."""

from nas.layout_study.config import StudyConfig, load_study_config
from nas.layout_study.runner import StudyResult, run_study

__all__ = ["StudyConfig", "StudyResult", "load_study_config", "run_study"]
