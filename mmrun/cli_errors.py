"""Turn any start-up failure into one line that names the key, file or row and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
from typing import List


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0].strip() if str(text).strip() else ""


def schema_keys(full_key: str) -> List[str]:
    """The keys the schema allows beside full_key ('exchange.sim.foo' -> SimConfig's fields)."""
    from omegaconf import OmegaConf

    from mmrun.config import Config

    node = OmegaConf.structured(Config)
    for part in full_key.split(".")[:-1]:
        node = node.get(part) if hasattr(node, "get") else None
        if node is None or not hasattr(node, "keys"):
            return []
    return [str(k) for k in node.keys()]


def one_line(exc: BaseException) -> str:
    """A single line for the terminal: Hydra and OmegaConf errors re-worded, ours as they are."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = exc.__cause__
    if isinstance(exc, MissingConfigException) and getattr(exc, "options", None) is not None:
        group, _, name = str(exc.missing_cfg_file).rpartition("/")
        hint = difflib.get_close_matches(name, exc.options, n=1)
        return (
            f"{group}={name} is not a known option: choose one of {', '.join(exc.options)}"
            + (f"; did you mean {hint[0]}?" if hint else "")
        )
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        key = str(cause.full_key)
        allowed = schema_keys(key)
        owner = getattr(cause, "object_type", None)
        if dataclasses.is_dataclass(owner):  # the node's own schema, e.g. the chosen strategy's keys
            allowed = [f.name for f in dataclasses.fields(owner)]
        hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
        return (
            f"{key}: unknown config key"
            + (f"; did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{hint[0]}?" if hint else "")
            + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
        )
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {_first_line(cause.msg)}"
    if isinstance(exc, OverrideParseException):
        return f"cannot parse the command-line override: {_first_line(str(exc))} (see the override grammar: key=value)"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the path and the cause: 'cannot write /proc/x/.hydra:
    No such file or directory (hydra.run.dir / hydra.sweep.dir choose the output folder)'."""
    import errno as _errno

    path = exc.filename if exc.filename is not None else ""
    cause = exc.strerror or type(exc).__name__
    if exc.errno == _errno.ENAMETOOLONG:
        path = str(path)[:60] + "..." if len(str(path)) > 60 else path
    where = f"cannot write {path}: " if path else ""
    return f"{where}{cause} (hydra.run.dir / hydra.sweep.dir choose the output folder)"
