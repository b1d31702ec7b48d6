"""Copies of the project's model repository with the CPU config changed: the one way tests and experiments edit one.

The config is read into Triton's ModelConfig message (``ara_reranker_server.triton_config``), changed there and
written back, never edited as text::

    edited_copy(tmp, max_queue_size=2)                                # a field by its keyword (FIELDS)
    edited_copy(tmp, {"dynamic_batching.priority_levels": 2})         # any field by its path in ModelConfig
    edited_copy(tmp, single_instance)                                 # or a function that edits the message
    edited_copy(tmp, model_py=source)                                 # and the model's code replaced
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

__all__ = ["FIELDS", "edited_copy", "edited_triton", "set_fields"]

# Keywords for the fields tests and experiments change most, and their paths in ModelConfig.
FIELDS = {
    "max_batch_size": "max_batch_size",
    "max_queue_delay_microseconds": "dynamic_batching.max_queue_delay_microseconds",
    "max_queue_size": "dynamic_batching.default_queue_policy.max_queue_size",
    "priority_levels": "dynamic_batching.priority_levels",
    "default_priority_level": "dynamic_batching.default_priority_level",
    "instances": "instance_group.0.count",
}

Edit = Callable[[Any], None]  # changes a ModelConfig message in place


def set_fields(config: Any, fields: Mapping[str, object]) -> None:
    """Set each field of ``config`` (a ModelConfig) named by its dotted path (``dynamic_batching.priority_levels``; a
    number indexes a repeated field, ``parameters.NAME`` sets a string parameter)."""
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        message = config
        for part in parents:
            if part == "parameters":
                message = message.parameters
            elif part.isdigit():
                message = message[int(part)]
            else:
                message = getattr(message, part)
        if parents and parents[-1] == "parameters":
            message[leaf].string_value = str(value)
        else:
            setattr(message, leaf, value)


def edited_copy(target: Path, *edits: Edit | Mapping[str, object], model_py: str | None = None, **fields: object) -> Path:
    """``target``/repository: a copy of the model repository whose CPU config has ``fields`` (keywords of FIELDS)
    set, then each of ``edits`` applied (a mapping of field paths to values, or a function changing the message);
    ``model_py``: the model's code replaced by this source. Returns the repository's path."""
    from ara_reranker_server import triton_config
    from ara_reranker_server.launcher.triton_launcher import MODEL_NAME, MODEL_REPOSITORY

    unknown = set(fields) - FIELDS.keys()
    if unknown:
        raise TypeError(f"unknown config fields {sorted(unknown)}: use {sorted(FIELDS)} or a path mapping")
    repository = Path(target) / "repository"
    shutil.copytree(MODEL_REPOSITORY, repository, ignore=shutil.ignore_patterns("__pycache__"))
    path = repository / MODEL_NAME / "configs" / "cpu.pbtxt"
    config = triton_config.load(path)
    set_fields(config, {FIELDS[name]: value for name, value in fields.items()})
    for edit in edits:
        set_fields(config, edit) if isinstance(edit, Mapping) else edit(config)
    path.write_text(triton_config.dump(config))
    if model_py is not None:
        (repository / MODEL_NAME / "1" / "model.py").write_text(model_py)
    return repository


@contextmanager
def edited_triton(model_dir: Path, *edits: Edit | Mapping[str, object], model_py: str | None = None,
                  **fields: object) -> Iterator[Any]:
    """A tritonserver serving ``model_dir`` from a temporary ``edited_copy`` of the model repository."""
    from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer

    with tempfile.TemporaryDirectory() as tmp:
        repository = edited_copy(Path(tmp), *edits, model_py=model_py, **fields)
        with TritonServer(TritonOptions(model_dir=model_dir, model_repository=repository)) as triton:
            yield triton
