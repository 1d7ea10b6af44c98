"""Reading a configuration file: the shell's part of `onduty.config` (which does no I/O)."""

from __future__ import annotations

from pathlib import Path

from onduty.config import Config, ConfigError, parse_config_text
from onduty.learn.model import ModelProblem, load_model

__all__ = ["load_config"]


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; a problem names the file, the field and its line."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(source, [f"cannot read the file: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            source, [f"cannot read the file: not UTF-8 text (byte {error.start})"]
        ) from None
    config = parse_config_text(text, source)
    if config.learning.model is not None:
        config = _with_model_checked(config, Path(path).parent, source)
    return config


def _with_model_checked(config: Config, folder: Path, source: str) -> Config:
    """The configuration with `learning.model` resolved against the file's folder, once the
    artifact there is known to be usable; else the problem, naming the field."""
    assert config.learning.model is not None
    path = folder / config.learning.model
    try:
        load_model(path)
    except ModelProblem as problem:
        raise ConfigError(source, [f"learning.model: {problem}"]) from None
    learning = config.learning.model_copy(update={"model": str(path.resolve())})
    return config.model_copy(update={"learning": learning})
