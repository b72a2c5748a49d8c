"""git, run isolated: the only way kaudit runs git.

No system or user config, no repository discovered above the directory it
runs in (not even a bare one a tree could smuggle in: safe.bareRepository),
no fsmonitor hook, no optional index writes. Only plumbing that reads
objects or parses patches is used on a user's repository, so its index,
HEAD and working files are never changed and none of its configured
programs (filters, diff drivers, hooks) run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kaudit.errors import UsageError

_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
         "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_EXEC_PATH", "GIT_NAMESPACE")


def git(args: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    home = str(cwd.resolve().parent)
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": home, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "HOME": home, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "GIT_ATTR_NOSYSTEM": "1"}
    for name in _DROP:
        env.pop(name, None)
    try:
        return subprocess.run(["git", "-c", "safe.bareRepository=explicit", "-c", "core.fsmonitor=false", *args],
                              cwd=cwd, input=stdin, capture_output=True, env=env)
    except FileNotFoundError as err:
        raise UsageError("git is not installed: check-patch reads patches and repositories with it") from err


def first_error_line(proc: subprocess.CompletedProcess[bytes], default: str) -> str:
    return (proc.stderr.decode("utf-8", errors="replace").strip().splitlines() or [default])[0]
