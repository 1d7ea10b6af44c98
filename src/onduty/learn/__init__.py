"""Training the learning agent's model from onduty's own log, and its artifact.

`examples(events)` walks a log for (features at the proposal → action → outcome) examples;
`train(events)` turns them into a `Model`, evaluated offline on a time-ordered split; `save_model`
writes it named by its content hash and `load_model` reads one back, refusing a corrupted or
incompatible file. Nothing here proposes an action yet.
"""

from onduty.learn.examples import Example, examples
from onduty.learn.model import Model, ModelProblem, load_model, save_model, train

__all__ = ["Example", "Model", "ModelProblem", "examples", "load_model", "save_model", "train"]
