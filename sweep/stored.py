"""Files of a trial's checkpoint wherever the sweep stores them: a local dir, a mount, s3:// or gs://.

Ray hands back a checkpoint as a path on its storage's filesystem, without the URI's scheme (an s3
checkpoint's path is "bucket/prefix/..."): printed as is it names a local path that does not exist.
`uri_of` puts the sweep's scheme back (checkpoints, the experiment's dir); the functions below read
and write through the filesystem the URI names (pyarrow's, as Ray does), never assuming a local disk.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pyarrow import fs as pafs


def uri_of(storage: str, fs_path: str | None) -> str | None:
    """`fs_path` (Ray's path on the storage's filesystem) as the user would write it: with the
    storage's scheme where it has one (s3://bucket/..., file:///...), unchanged otherwise."""
    if not fs_path or "://" not in storage or "://" in fs_path:
        return fs_path
    return f"{storage.split('://', 1)[0]}://{fs_path}"


@functools.lru_cache(maxsize=16)
def _root(checkpoint: str) -> tuple[pafs.FileSystem, str]:
    """The checkpoint's filesystem and its path there, once per checkpoint: a sweep's end reads and
    writes several files of one checkpoint, and an s3/gs filesystem is not free to build."""
    if "://" in checkpoint:
        return pafs.FileSystem.from_uri(checkpoint)
    return pafs.LocalFileSystem(), checkpoint


def _at(checkpoint: str, rel: str) -> tuple[pafs.FileSystem, str]:
    filesystem, root = _root(checkpoint)
    return filesystem, f"{root.rstrip('/')}/{rel}"


def has(checkpoint: str, rel: str) -> bool:
    """Whether `rel` (a file or a directory) exists in the checkpoint."""
    filesystem, path = _at(checkpoint, rel)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def read_json(checkpoint: str, rel: str) -> Any | None:
    """The JSON file `rel` of the checkpoint, or None when it is not there."""
    if not has(checkpoint, rel):
        return None
    filesystem, path = _at(checkpoint, rel)
    with filesystem.open_input_stream(path) as f:
        return json.loads(f.read().decode("utf-8"))


def write_json(checkpoint: str, rel: str, data: Any) -> None:
    """Write `rel` into the checkpoint (its parent dirs made as needed)."""
    filesystem, path = _at(checkpoint, rel)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as f:
        f.write(json.dumps(data, indent=1).encode("utf-8"))
