"""A grid's run directories without composing every job: the same directories, named by the same
settings hashes, as Hydra's composition of each job gives (``load_sweep_config``), at a fraction
of its cost.

Composing one job through Hydra takes about 0.1 s, and a grid has up to a thousand jobs. Its jobs
differ in a few config-group choices (``dataset=``, ``direction=``, ``mitigation=`` …) and in
plain values (``seed=3``, ``shift.alpha=0.2``). Hydra composes a job in two steps: the
configuration of its group choices, then its other overrides applied to it in order
(``OmegaConf.update``; a plain value changes just that value). So:

- Hydra composes one configuration per combination of a job's overrides that are not plain
  values: groups (Hydra's config repository tells them), ``hydra.*``, ``+key=``, ``++key=``,
  ``~key``, lists, dicts, and values with a ``$`` or ``???``;
- a job's plain values are set in that configuration in place, with ``OmegaConf.update`` as
  Hydra sets them;
- the settings that the hash reads (``shiftlab.identity``) are resolved once per combination;
  for a job, only the interpolations that may read a value it changes are resolved again, by
  OmegaConf, with the job's values, and kept for the next job with the same values. What an
  interpolation may read comes from its text: the keys it names, and for a resolver that reads
  the config's root what ``shiftlab.config.ROOT_READS`` declares; a nested, quoted or escaped
  interpolation, or any other resolver, may read anything;
- the run directory (``hydra.sweep.dir``/``hydra.sweep.subdir``) is resolved the same way, its
  ``${run_hash:}`` answered with the job's hash.

Hydra also records a job's overrides (``hydra.overrides.task``, ``hydra.job.override_dirname``),
which differ from job to job: a combination whose run directory may read them is composed
whole for each job. So is a job with a plain value whose key is not a value of the composed
configuration, or that another of its overrides also sets, adds or deletes, and every job where
the search path has more than the loader's (``hydra.searchpath``). A combination that fails to
compose is composed whole for each job, which raises Hydra's own error. The launcher composes
each job whole when it runs it. tests/test_grid_planning.py compares every job of every
experiment preset, and tricky overrides, with the whole composition.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import Container, DictConfig, OmegaConf

from shiftlab.config import ROOT_READS, register_resolvers
from shiftlab.identity import hash_of, settings, settings_hash, settings_of, settings_template
from shiftlab.runs.states import job_run_dir

Key = tuple[Any, ...]  # a node's place: its keys from the root (a list's items by index)

# Hydra's record of a job's overrides, which the fast path does not write.
RECORD = (("hydra", "overrides", "task"), ("hydra", "job", "override_dirname"))
RUN_DIR = (("hydra", "sweep", "dir"), ("hydra", "sweep", "subdir"))
# Stands for the settings hash in a run directory resolved once for several jobs.
HASH_STAND_IN = "\x00run_hash\x00"


@dataclass(frozen=True)
class Planned:
    run_dir: Path
    # The settings as the hash reads them (shiftlab.identity.settings, paths masked). Shared in
    # part with other jobs' settings: read them, never change them.
    settings: dict[str, Any]
    # The job's whole configuration, composed by Hydra as the launcher composes it (0.1 s).
    compose: Callable[[], DictConfig]


def plan(loader: ConfigLoader, master: DictConfig, jobs: Iterable[Sequence[str]]) -> list[Planned]:
    """Each job's run directory and settings, as ``loader.load_sweep_config(master, job)``
    composes them."""
    planner = _Planner(loader, master)
    with _known_hashes(planner.hashes):
        return [planner.plan(list(overrides)) for overrides in jobs]


@contextlib.contextmanager
def _known_hashes(hashes: dict[int, str]) -> Iterator[None]:
    """``${run_hash:}`` of a template's configuration (``hashes``: its id → the hash of the job
    set in it) from the fast path; of any other configuration, computed as always."""

    def run_hash(*, _root_: DictConfig) -> str:
        return hashes.get(id(_root_)) or settings_hash(_root_)

    OmegaConf.register_new_resolver("run_hash", run_hash, replace=True)
    try:
        yield
    finally:
        OmegaConf.clear_resolver("run_hash")
        register_resolvers()


class _Planner:
    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.loader, self.master = loader, master
        self.parser = OverridesParser.create(config_loader=loader)
        # A search path of the master config's own has groups the loader does not list.
        self.fast = not OmegaConf.select(master, "hydra.searchpath")
        self.parsed: dict[str, Override] = {}
        self.groups: dict[str, bool] = {}
        self.templates: dict[tuple[str, ...], _Template | None] = {}
        self.hashes: dict[int, str] = {}

    def plan(self, overrides: list[str]) -> Planned:
        compose = partial(self.loader.load_sweep_config, self.master, overrides)
        found = self._fast(overrides) if self.fast else None
        if found is not None:
            return Planned(*found, compose)
        config = compose()
        return Planned(job_run_dir(config), settings(config), lambda: config)

    def _fast(self, overrides: list[str]) -> tuple[Path, dict[str, Any]] | None:
        parsed = [self._parse(line) for line in overrides]
        if any(o.key_or_group == "hydra.searchpath" for o in parsed):
            return None
        groups = [self._is_group(o) for o in parsed]
        plain = [o for o, group in zip(parsed, groups, strict=True) if not group and _plain(o)]
        others = [o for o in parsed if not any(o is p for p in plain)]
        # A plain value that another override also sets, adds or deletes: their order counts.
        set_too = [
            o.key_or_group
            for o, group in zip(parsed, groups, strict=True)
            if not group and not any(o is p for p in plain)
        ]
        if any(_nested(p.key_or_group, key) for p in plain for key in set_too):
            return None
        combination = tuple(str(o.input_line) for o in others)
        if combination not in self.templates:
            self.templates[combination] = self._template(list(combination))
        template = self.templates[combination]
        if template is None:
            return None
        try:
            return template.plan(plain, self.hashes)
        except Exception:
            # OmegaConf refused a value (a read-only node, say): the whole composition says why.
            self.templates[combination] = None  # the template may be half changed
            return None

    def _parse(self, line: str) -> Override:
        if line not in self.parsed:
            self.parsed[line] = self.parser.parse_override(line)
        return self.parsed[line]

    def _is_group(self, override: Override) -> bool:
        """Whether Hydra composes ``override`` as a config-group choice: its key names a group
        of the config repository, and its value is no dict (``Overrides`` in Hydra's
        defaults_list.py)."""
        key = override.key_or_group
        if key not in self.groups:
            parent, _, name = key.rpartition("/")
            self.groups[key] = name in self.loader.list_groups(parent)
        return self.groups[key] and not isinstance(override.value(), dict)

    def _template(self, overrides: list[str]) -> _Template | None:
        try:
            return _Template(self.loader.load_sweep_config(self.master, overrides))
        except Exception:
            return None  # each job of it is composed whole, which raises Hydra's own error


_SCALARS = (bool, int, float, str, type(None))
_DOTTED_KEY = re.compile(r"[\w\-]+(\.[\w\-]+)*")


def _plain(override: Override) -> bool:
    """``key=value`` of one value: not Hydra's, an addition or deletion, a sweep, a list or
    dict, an interpolation or ``???`` (and not a group: ``_Planner._is_group``)."""
    value = override.value()
    return (
        override.type == OverrideType.CHANGE
        and override.value_type == ValueType.ELEMENT
        and override.package is None
        and not override.is_hydra_override()
        and _DOTTED_KEY.fullmatch(override.key_or_group) is not None
        and isinstance(value, _SCALARS)
        and not (isinstance(value, str) and ("$" in value or value == "???"))
    )


def _nested(a: str, b: str) -> bool:
    """Whether dotted keys ``a`` and ``b`` are one node or one holds the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


class _Template:
    """One combination's composed configuration, set to one job's plain values at a time."""

    def __init__(self, config: DictConfig) -> None:
        # The run directory: ${run_hash:} stands for the job's hash, put in afterwards, where
        # nothing else that the directory reads calls it.
        self.whole = _Interpolations(config, {**ROOT_READS, "run_hash": ()})
        self.usable = not any(
            place in self.whole.affected_by(record) for record in RECORD for place in RUN_DIR
        )
        self.hash_in_place = self.whole.calls_only_itself(RUN_DIR, "run_hash")
        self.converted: dict[tuple[str, str, str], Any] = {}
        # The settings: resolved once, and again where a job's values may change them.
        self.settings = _Interpolations(settings_template(config), ROOT_READS)
        self.resolved = OmegaConf.to_container(self.settings.config, resolve=True)

    def plan(
        self, plain: list[Override], hashes: dict[int, str]
    ) -> tuple[Path, dict[str, Any]] | None:
        keys = [str(o.key_or_group) for o in plain]
        if not self.usable or not all(self._settable(key) for key in keys):
            return None
        given = {_place(o.key_or_group): o.value() for o in plain}  # the last of a key wins
        values = {key: self._as_set(key, value) for key, value in given.items()}
        job_settings = self._settings(values)
        job_hash = hash_of(job_settings)
        set_job = _once(partial(self.whole.set, given))
        if not self.hash_in_place:
            set_job()
            hashes[id(self.whole.config)] = job_hash
            return job_run_dir(self.whole.config), job_settings
        hashes[id(self.whole.config)] = HASH_STAND_IN
        found = [self.whole.value(place, values, set_job) for place in RUN_DIR]
        sweep_dir, subdir = (str(value).replace(HASH_STAND_IN, job_hash) for value in found)
        return Path(sweep_dir) / subdir, job_settings

    def _settable(self, key: str) -> bool:
        """Whether ``key`` is a value of the composed configuration, in containers that are
        no interpolation: where a plain override sets just that value."""
        node: Any = self.whole.raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return not isinstance(node, dict | list)

    def _as_set(self, key: Key, value: Any) -> Any:
        """``value`` as the composed configuration holds it at ``key`` once set there (a typed
        value converts it)."""
        known = (".".join(key), type(value).__name__, repr(value))
        if known not in self.converted:
            self.whole.set({key: value})
            self.converted[known] = OmegaConf.select(self.whole.config, known[0])
        return self.converted[known]

    def _settings(self, values: dict[Key, Any]) -> dict[str, Any]:
        """The job's settings: the combination's, with the job's values, and the interpolations
        that may read them resolved again."""
        # Paths are masked in the settings; the logger and the launcher are not in them.
        changed = {key: value for key, value in values.items() if key[0] in self.settings.raw}
        changed = {key: value for key, value in changed.items() if key[0] != "paths"}
        set_job = _once(partial(self.settings.set, changed))
        replaced = {
            place: self.settings.value(place, changed, set_job)
            for place in self.settings.dependents(changed)
        }
        replaced.update(changed)
        return settings_of(_replaced(self.resolved, replaced))


def _once(function: Callable[[], None]) -> Callable[[], None]:
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            function()
            done = True

    return once


class _Interpolations:
    """A configuration's interpolations: what each may read, and each one's value by the values
    it may read (resolved by OmegaConf in the configuration, set to a job's values)."""

    def __init__(self, config: DictConfig, root_reads: dict[str, tuple[str, ...]]) -> None:
        self.config = config
        self.raw = OmegaConf.to_container(config, resolve=False)
        self.reads = _interpolations(self.raw, root_reads)
        self.affected: dict[Key, frozenset[Key]] = {}
        self.values: dict[tuple[Any, ...], Any] = {}
        self.changed: set[Key] = set()  # the keys set in ``config`` to other values than its own

    def affected_by(self, key: Key) -> frozenset[Key]:
        """The interpolations that may read ``key``, directly or through another one."""
        if key not in self.affected:
            found: set[Key] = set()
            frontier = [key]
            while frontier:
                new = [
                    place
                    for place, reads in self.reads.items()
                    if place not in found
                    and (reads is None or any(_overlaps(r, f) for r in reads for f in frontier))
                ]
                found.update(new)
                frontier = new
            self.affected[key] = frozenset(found)
        return self.affected[key]

    def dependents(self, changed: dict[Key, Any]) -> set[Key]:
        """The interpolations that may read one of ``changed`` (and are not changed)."""
        return set().union(*(self.affected_by(key) for key in changed)) - set(changed)

    def value(self, place: Key, changed: dict[Key, Any], set_job: Callable[[], None]) -> Any:
        """The value at ``place`` as ``OmegaConf.to_container(resolve=True)`` gives it, for a
        job that changes ``changed`` (``set_job`` sets them in the configuration)."""
        if place not in self.reads:
            return _at(self.raw, place)  # no interpolation
        read = tuple(
            (key, type(value).__name__, repr(value))
            for key, value in sorted(changed.items())
            if place in self.affected_by(key)
        )
        if (place, read) not in self.values:
            set_job()
            found = OmegaConf.select(self.config, _dotted(place))
            if isinstance(found, Container):
                found = OmegaConf.to_container(found, resolve=True)
            self.values[place, read] = found
        return self.values[place, read]

    def set(self, changed: dict[Key, Any]) -> None:
        """``changed`` set in the configuration as a plain override sets them, and the
        configuration's own values elsewhere."""
        for key in self.changed - set(changed):
            OmegaConf.update(self.config, _dotted(key), _at(self.raw, key), merge=True)
        for key, value in changed.items():
            OmegaConf.update(self.config, _dotted(key), value, merge=True)
        self.changed = set(changed)

    def calls_only_itself(self, places: Sequence[Key], resolver: str) -> bool:
        """Whether ``resolver`` is called by ``places`` only at their top level (its value part
        of theirs as it is), and by no other interpolation that they read."""
        if any(place in self.reads and self.reads[place] is None for place in places):
            return False
        read: set[Key] = set()
        frontier = [place for place in places if place in self.reads]
        while frontier:
            reads = [r for place in frontier for r in self.reads[place] or ()]
            new = [
                place
                for place in self.reads
                if place not in read and any(_overlaps(r, place) for r in reads)
            ]
            read.update(new)
            frontier = new
        return all(resolver not in _at(self.raw, place) for place in read - set(places))


def _place(key: str) -> Key:
    return tuple(key.split("."))


def _dotted(place: Key) -> str:
    """``place`` as OmegaConf.select reads it (``a.b[0].c``)."""
    text = ""
    for key in place:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
    return text


def _overlaps(a: Key, b: Key) -> bool:
    """Whether two places are one node or one holds the other."""
    n = min(len(a), len(b))
    return all(str(x) == str(y) for x, y in zip(a[:n], b[:n], strict=True))


def _at(tree: Any, place: Key) -> Any:
    for key in place:
        tree = tree[key]
    return tree


def _replaced(tree: Any, values: dict[Key, Any]) -> Any:
    """``tree`` with ``values`` at their places; the containers on their way are copied, the
    rest shared."""
    if () in values:
        return values[()]
    if not values:
        return tree
    below: dict[Any, dict[Key, Any]] = {}
    for place, value in values.items():
        below.setdefault(place[0], {})[place[1:]] = value
    copied = list(tree) if isinstance(tree, list) else dict(tree)
    for key, values_below in below.items():
        copied[key] = _replaced(tree[key], values_below)
    return copied


_INTERPOLATION = re.compile(r"\$\{([^${}\[\]'\"\\]*)\}")


def _interpolations(
    tree: Any, root_reads: dict[str, tuple[str, ...]], here: Key = ()
) -> dict[Key, tuple[Key, ...] | None]:
    """Every interpolation below ``tree`` (a container before resolving): what it reads."""
    found: dict[Key, tuple[Key, ...] | None] = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        place = (*here, key)
        if isinstance(value, dict | list):
            found.update(_interpolations(value, root_reads, place))
        elif isinstance(value, str) and "${" in value:
            found[place] = _reads(value, place, root_reads)
    return found


def _reads(text: str, place: Key, root_reads: dict[str, tuple[str, ...]]) -> tuple[Key, ...] | None:
    """The places that the interpolations of ``text`` (the value at ``place``) read; None where
    they may read any: a nested, quoted, escaped or unclosed interpolation, or a resolver other
    than ``oc.select``, ``oc.env`` and those of ``root_reads``."""
    inner = _INTERPOLATION.findall(text)
    if "\\" in text or len(inner) != text.count("${"):
        return None
    reads: list[Key | None] = []
    for interpolation in inner:
        name, colon, arguments = (part.strip() for part in interpolation.partition(":"))
        if not colon:
            reads.append(_key(name, place))
        elif name == "oc.select":
            reads.append(_key(arguments.split(",")[0].strip(), place))
        elif name == "oc.env":
            continue  # the environment: the same for every job
        elif name in root_reads:
            reads.extend(_place(key) for key in root_reads[name])
        else:
            return None
    if any(read is None for read in reads):
        return None
    return tuple(read for read in reads if read is not None)


def _key(key: str, place: Key) -> Key | None:
    """The place ``key`` names, as OmegaConf reads it from the value at ``place``: from the
    root, or with a leading dot from the value's own container, each further dot one up."""
    dots = len(key) - len(key.lstrip("."))
    base: Key = ()
    if dots:
        parent = place[:-1]
        if dots - 1 > len(parent):
            return None
        base = parent[: len(parent) - (dots - 1)]
    rest = key[dots:]
    parts = _place(rest) if rest else ()
    if any(not part for part in parts):
        return None
    return (*base, *parts)
