"""Registries fill themselves: every public module of a package is imported once, on first use; and
modules outside the package (a researcher's own loss, dataset, backbone or metric) are imported
when named with ``--plugin MODULE`` or ``$HYP2_PLUGINS`` (docs/extending.md)."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path
from typing import Sequence

#: the environment variable naming plugins for every command line (separated by os.pathsep)
ENV = "HYP2_PLUGINS"
#: source file -> plugin name, of every plugin imported (to name the plugin a failure comes from)
_LOADED: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def import_submodules(package: str) -> None:
    """Import every module of ``package`` whose name does not start with ``_`` (once)."""
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")


def plugin_names(argv: Sequence[str] | None) -> list[str]:
    """The plugins ``$HYP2_PLUGINS`` and the ``--plugin X`` / ``--plugin=X`` flags of ``argv`` name,
    in that order (read before parsing, so a plugin's entries appear in ``--help`` and choices)."""
    names = [n for n in os.environ.get(ENV, "").split(os.pathsep) if n.strip()]
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--plugin" and i + 1 < len(args):
            names.append(args[i + 1])
        elif arg.startswith("--plugin="):
            names.append(arg.split("=", 1)[1])
    return names


def load_plugin(name: str) -> None:
    """Import ``name``: a path to a ``.py`` file, or a dotted module name on ``sys.path`` (the
    current folder included). Importing it runs its ``register_*`` calls. Each is imported once.

    Raises:
        UserError: the file or module does not exist, or importing it failed (with the reason).
    """
    from .errors import UserError, reason

    path = Path(name)
    before = set(sys.modules)
    try:
        if name.endswith(".py"):
            if not path.is_file():
                raise UserError(f"--plugin {name}: no such file; pass a .py file or an importable module name")
            key = f"hyp2_plugin_{abs(hash(str(path.resolve())))}"
            if key not in sys.modules:
                spec = importlib.util.spec_from_file_location(key, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[key]
                    raise
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            importlib.import_module(name)
    except UserError:
        raise
    except SystemExit as e:  # a plugin may not end the program it is imported into
        raise UserError(f"--plugin {name}: importing it called sys.exit({e.code!r}); a plugin must only register "
                        f"its entries: fix the module, or drop --plugin") from None
    except Exception as e:  # noqa: BLE001 - whatever a plugin raises, the user gets one line
        raise UserError(f"--plugin {name}: importing it failed ({reason(e)}); fix the module, or drop --plugin") \
            from None
    for module in set(sys.modules) - before:
        source = getattr(sys.modules[module], "__file__", None)
        if source and not module.startswith("hyp2."):
            _LOADED[os.path.realpath(source)] = name


def plugin_failure(error: BaseException) -> str | None:
    """One line naming the plugin whose code raised ``error`` (the innermost of its frames in the
    traceback) and where, or None when no plugin's code is in it: then it is hyp2's own."""
    from .errors import reason

    tb, found = error.__traceback__, None
    while tb is not None:
        source = os.path.realpath(tb.tb_frame.f_code.co_filename)
        if source in _LOADED:
            found = (_LOADED[source], source, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return None
    name, source, line = found
    return f"plugin {name} failed ({reason(error)}) at {source}:{line}; fix the plugin, or drop --plugin {name}"


def add_plugin_flag(parser) -> None:
    """The ``--plugin MODULE`` flag every command line shares (read by :func:`load_plugins`)."""
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a dotted name or a .py file) first, so that the datasets, backbones, "
                             f"losses and metrics it registers can be used (repeatable; also ${ENV})")


def load_plugins(argv: Sequence[str] | None) -> list[str]:
    """Import every plugin :func:`plugin_names` finds; returns their names."""
    names = plugin_names(argv)
    for name in names:
        load_plugin(name)
    return names
