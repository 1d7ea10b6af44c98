"""Reading a configuration file: the shell's part of `onduty.config` (which does no I/O)."""

from __future__ import annotations

from pathlib import Path

from onduty.config import Config, ConfigError, parse_config_text

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
    return parse_config_text(text, source)
