"""Reading a uWSGI config file (``--ini``, ``--yaml``) into flare's options.

Only the ``[uwsgi]`` section (``uwsgi:`` in YAML) is read, and only the
options about processes, signals and time limits; every other option is
named in one warning line. uWSGI allows a key to repeat (``mule = a.py``
twice is two mules): each value counts.
"""

import configparser
import subprocess
import sys
from typing import Any, Dict, List, Tuple

#: Options flare reads. Everything else is reported as ignored.
HANDLED = {
    "workers", "processes", "mules", "mule", "farm", "spooler", "spooler-processes",
    "timer", "rbtimer", "cron", "unique-cron", "cron2", "touch-signal", "fs-signal",
    "harakiri", "mule-harakiri", "spooler-harakiri", "stats", "master", "module",
    "wsgi-file", "mule-msg-size",
}


_EMPTY = "\x00"


class _Repeated(dict):
    """configparser keeps a key's lines in a list while reading: repeated
    keys append to it instead of replacing it."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, list):
            # An empty value (`mule =`, a plain mule) would be dropped when
            # the lines are joined: keep a placeholder.
            value = [_EMPTY if v == "" else v for v in value]
        if key in self and isinstance(value, list) and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def read_ini(path: str) -> Dict[str, List[str]]:
    """The ``[uwsgi]`` section of an ini file, every key with all its values."""
    cp = configparser.ConfigParser(
        strict=False, interpolation=None, dict_type=_Repeated, empty_lines_in_values=False
    )
    cp.optionxform = str  # type: ignore[assignment]
    with open(path) as f:
        cp.read_file(f)
    if not cp.has_section("uwsgi"):
        raise ValueError(f"{path}: no [uwsgi] section")
    return {
        k: [v.strip().replace(_EMPTY, "") for v in cp.get("uwsgi", k, raw=True).split("\n")]
        for k in cp.options("uwsgi")
    }


def read_yaml(path: str) -> Dict[str, List[str]]:
    """The ``uwsgi:`` mapping of a YAML file (needs PyYAML)."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise ValueError("--yaml needs PyYAML (pip install pyyaml); --ini needs nothing") from None
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    section = doc.get("uwsgi") if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        raise ValueError(f"{path}: no `uwsgi:` mapping")
    out = {}
    for k, v in section.items():
        values = v if isinstance(v, list) else [v]
        out[str(k)] = ["" if x is None else (str(x).lower() if isinstance(x, bool) else str(x)) for x in values]
    return out


def _pair(text: str, what: str) -> Tuple[str, str]:
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"{what} {text!r}: give two values separated by a space")
    return parts[0], parts[1]


def _cron_command(command: str, unique: bool) -> Any:
    """A handler that runs a uWSGI cron command (in a shell, as uWSGI)."""
    running: List[Any] = []

    def run(num: int) -> None:
        if unique and running and running[0].poll() is None:
            return
        running[:] = [subprocess.Popen(command, shell=True)]

    return run


def to_run_options(opts: Dict[str, List[str]]) -> Tuple[Dict[str, Any], List[Any], List[str]]:
    """flare.run() keyword options, the setup steps to run in the master
    before the fork (signals sources), and the ignored option names."""
    run: Dict[str, Any] = {}
    steps: List[Any] = []
    last = lambda k: opts[k][-1]  # noqa: E731
    if "workers" in opts or "processes" in opts:
        run["workers"] = int(last("workers" if "workers" in opts else "processes"))
    mules = sum(int(v) for v in opts.get("mules", []))
    scripts = [v for v in opts.get("mule", [])]
    run["mules"] = mules
    run["mule_scripts"] = [s if s.endswith(".py") else "" for s in scripts] if scripts else []
    if any(s and not s.endswith(".py") for s in scripts):
        bad = [s for s in scripts if s and not s.endswith(".py")]
        raise ValueError(f"mule = {bad[0]}: flare runs mule scripts given as FILE.py (or an empty mule)")
    if "farm" in opts:
        run["farms"] = opts["farm"]
    if "spooler" in opts:
        per_dir = int(last("spooler-processes")) if "spooler-processes" in opts else 1
        run["spoolers"] = len(opts["spooler"]) * per_dir
        run["spooler_dirs"] = list(opts["spooler"])
    for key, name in (("harakiri", "worker_harakiri"), ("mule-harakiri", "mule_harakiri"), ("spooler-harakiri", "spooler_harakiri")):
        if key in opts:
            run[name] = float(last(key))
    if "stats" in opts:
        run["stats"] = last("stats")
    if "mule-msg-size" in opts:
        run["mule_msg_size"] = int(last("mule-msg-size"))
    for spec in opts.get("timer", []):
        num, secs = _pair(spec, "timer")
        steps.append(("timer", int(num), float(secs)))
    for spec in opts.get("rbtimer", []):
        num, secs = _pair(spec, "rbtimer")
        steps.append(("rbtimer", int(num), float(secs)))
    for key in ("touch-signal", "fs-signal"):
        for spec in opts.get(key, []):
            path, num = _pair(spec, key)
            steps.append(("file", int(num), path))
    for key in ("cron", "unique-cron"):
        for spec in opts.get(key, []):
            parts = spec.split(None, 5)
            if len(parts) != 6:
                raise ValueError(f"{key} {spec!r}: give minute hour day month weekday command")
            steps.append(("cron", tuple(int(x) for x in parts[:5]), parts[5], key == "unique-cron"))
    for spec in opts.get("cron2", []):
        fields, _, command = spec.partition(" ")
        kv = dict(f.split("=", 1) for f in fields.split(",") if "=" in f)
        when = tuple(int(kv.get(k, -1)) for k in ("minute", "hour", "day", "month", "week"))
        if not command.strip():
            raise ValueError(f"cron2 {spec!r}: give key=value,... then the command")
        steps.append(("cron", when, command.strip(), kv.get("unique") in ("1", "true")))
    app = None
    if "module" in opts:
        app = last("module")
    elif "wsgi-file" in opts:
        import os

        path = last("wsgi-file")
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        app = os.path.splitext(os.path.basename(path))[0]
    run["app"] = app
    ignored = [k for k in opts if k not in HANDLED]
    return run, steps, ignored


def apply_steps(steps: List[Any], cron_target: str) -> None:
    """Adds the config's timers, file monitors and crons in the master
    (before the fork), as uWSGI's master does."""
    from . import _core

    for step in steps:
        if step[0] == "timer":
            _core.add_timer(step[1], step[2])
        elif step[0] == "rbtimer":
            _core.add_rb_timer(step[1], step[2], None)
        elif step[0] == "file":
            _core.add_file_monitor(step[1], step[2])
        elif step[0] == "cron":
            # uWSGI runs a cron command itself; flare raises a signal whose
            # handler (in the first available worker, or mule) runs it.
            num = _core.available()
            _core.register(num, cron_target, _cron_command(step[2], step[3]))
            _core.add_cron(num, step[1])
