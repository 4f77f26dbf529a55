"""Declare a configurable value once: type, default, allowed range or choices, one-line doc.

Every configurable part of the sandbox (world, engine, experiment, and every extension point:
policies, rankers, response models, metrics, estimators) declares its fields with :func:`param`
on a dataclass. Validation and error messages are generated from that declaration
(:func:`check_fields`, :func:`from_mapping`), Hydra's ConfigStore is fed from it (in
``experiments/``), and nothing restates a default or a range elsewhere::

    @dataclass(frozen=True)
    class EngineConfig:
        days: float = param(14.0, gt=0, le=3650, doc="simulated days")

    from_mapping(EngineConfig, {"days": -1}, "engine")
    # ConfigError: engine.days = -1.0 is not allowed: a number in (0, 3650]

Extension points keep their built-ins in a :class:`Registry` (selected by ``name``) and accept a
user class by ``_target_`` (a dotted import path).

Nothing here imports Hydra: ``sim`` stays usable from plain Python.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import numbers
import pkgutil
import types
import typing
from typing import Any, Generic, Mapping, TypeVar

import numpy as np

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that is refused before any simulation starts."""

    def __init__(self, key: str, value: Any, allowed: str):
        if isinstance(value, np.generic):       # np.float64(0.0) -> 0.0 in the message
            value = value.item()
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r} is not allowed: {allowed}")


# --------------------------------------------------------------------------------------------
# Checkers: each takes the dotted key so that the message can name it.
# --------------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def range_text(kind: str, lo, hi, lo_closed: bool = True, hi_closed: bool = True) -> str:
    """``'a number in (0, 1]'``, ``'an integer >= 1'``, ... (the 'allowed' part of a message)."""
    if lo is not None and hi is not None:
        return f"{kind} in {'[' if lo_closed else '('}{lo}, {hi}{']' if hi_closed else ')'}"
    if lo is not None:
        return f"{kind} {'>=' if lo_closed else '>'} {lo}"
    if hi is not None:
        return f"{kind} {'<=' if hi_closed else '<'} {hi}"
    return kind


def check_int(key: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    allowed = range_text("an integer", lo, hi)
    if isinstance(v, (bool, np.bool_)) or not (
            isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real) and float(v).is_integer())):
        raise ConfigError(key, v, allowed)
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(key, v, allowed)
    return v


def check_float(key: str, v: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> float:
    allowed = range_text("a number", lo, hi, not lo_open, not hi_open)
    if not _is_number(v) or not math.isfinite(float(v)):
        raise ConfigError(key, v, allowed)
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(key, v, allowed)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(key, v, allowed)
    return v


def check_bool(key: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise ConfigError(key, v, "true or false")
    return bool(v)


def check_choice(key: str, v: Any, choices: typing.Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        hint = closest_text(v, choices) if isinstance(v, str) else ""
        raise ConfigError(key, v, "one of " + ", ".join(choices) + hint)
    return v


def check_optional_str(key: str, v: Any) -> str | None:
    if v is None or (isinstance(v, str) and v.strip()):
        return v
    raise ConfigError(key, v, "null or a non-empty string")


def closest_text(name: str, candidates: typing.Iterable[str]) -> str:
    """``" (did you mean 'hype_spread'?)"`` when a candidate is close to ``name``, else ``""``."""
    best = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{best[0]}'?)" if best else ""


def check_keys(prefix: str, given: Mapping[str, Any], known: typing.Iterable[str], what: str = "") -> None:
    """Refuse a key of ``given`` that is not in ``known``, naming the closest known key."""
    known = sorted(known)
    for k in given:
        if k not in known:
            raise ConfigError(f"{prefix}.{k}" if prefix else str(k), given[k],
                              f"unknown key{closest_text(k, known)}; known keys of "
                              f"{what or prefix or 'the config'}: " + ", ".join(known))


# --------------------------------------------------------------------------------------------
# Declaring fields
# --------------------------------------------------------------------------------------------
def param(default: Any = dataclasses.MISSING, *, doc: str, ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None,
          choices: typing.Sequence[str] | None = None, default_factory: Any = dataclasses.MISSING,
          nonempty: bool = False, allow_inf: bool = False) -> Any:
    """A dataclass field with its allowed values and a one-line doc.

    ``ge``/``gt``/``le``/``lt`` bound numbers (closed/open); ``choices`` lists the allowed strings
    (for a ``tuple[str, ...]`` field: the allowed items); ``nonempty`` refuses an empty string or
    sequence. Mutable defaults (tuples are fine) go through ``default_factory``. ``allow_inf``
    also accepts ``+inf`` for a number with no upper bound (e.g. "no clipping").
    """
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise TypeError("give at most one lower (ge/gt) and one upper (le/lt) bound")
    meta = {"doc": doc, "lo": ge if gt is None else gt, "lo_open": gt is not None,
            "hi": le if lt is None else lt, "hi_open": lt is not None,
            "choices": None if choices is None else tuple(choices), "nonempty": nonempty}
    if allow_inf:
        meta["allow_inf"] = True
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_doc(f: dataclasses.Field) -> str:
    return f.metadata.get("doc", "")


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def allowed_text(f: dataclasses.Field, hint: Any) -> str:
    """What a field accepts, in words (used by messages and ``--help``)."""
    m = f.metadata
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if m.get("choices") and origin is None:
        text = "one of " + ", ".join(m["choices"])
    elif hint is bool:
        text = "true or false"
    elif hint is int:
        text = range_text("an integer", m.get("lo"), m.get("hi"), not m.get("lo_open"), not m.get("hi_open"))
    elif hint is float:
        text = range_text("a number", m.get("lo"), m.get("hi"), not m.get("lo_open"), not m.get("hi_open"))
        text += " or inf" if m.get("allow_inf") else ""
    elif hint is str:
        text = "a non-empty string" if m.get("nonempty") else "a string"
    elif origin in (tuple, list):
        items = ("of " + ", ".join(m["choices"])) if m.get("choices") else ""
        text = f"a {'non-empty ' if m.get('nonempty') else ''}list {items}".rstrip()
    else:
        text = "a mapping" if dataclasses.is_dataclass(hint) else "any value"
    return f"null or {text}" if optional else text


def _check_value(key: str, f: dataclasses.Field, hint: Any, v: Any) -> Any:
    m = f.metadata
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if v is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    lo, hi, lo_open, hi_open = m.get("lo"), m.get("hi"), m.get("lo_open", False), m.get("hi_open", False)
    if hint is bool:
        return check_bool(key, v)
    if hint is int:
        try:
            v = check_int(key, v)
        except ConfigError:
            raise ConfigError(key, v, allowed_text(f, hint)) from None
        if (lo is not None and (v < lo or lo_open and v == lo)) or (hi is not None and (v > hi or hi_open and v == hi)):
            raise ConfigError(key, v, allowed_text(f, hint))
        return v
    if hint is float:
        if m.get("allow_inf") and _is_number(v) and float(v) == math.inf:
            return math.inf
        try:
            return check_float(key, v, lo, hi, lo_open, hi_open)
        except ConfigError:
            if m.get("allow_inf"):
                raise ConfigError(key, v, allowed_text(f, hint)) from None
            raise
    if hint is str:
        if m.get("choices"):
            return check_choice(key, v, m["choices"])
        if not isinstance(v, str) or (m.get("nonempty") and not v.strip()):
            raise ConfigError(key, v, allowed_text(f, hint))
        return v
    if origin in (tuple, list):
        if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, typing.Iterable):
            raise ConfigError(key, v, allowed_text(f, hint))
        items = list(v)
        if m.get("nonempty") and not items:
            raise ConfigError(key, v, allowed_text(f, hint))
        if m.get("choices"):
            for item in items:
                check_choice(key, item, m["choices"])
        return tuple(items) if origin is tuple else items
    return v


def check_field(cls: type, name: str, value: Any, key: str) -> Any:
    """Validate (and normalise) one value against the declaration of field ``name`` of ``cls``."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _check_value(key, f, _hints(cls)[name], value)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(obj: Any, prefix: str) -> None:
    """Validate (and normalise, e.g. ``3.0 -> 3`` for an int field) every declared field of a
    dataclass instance in place; raise :class:`ConfigError` naming ``prefix.field``.

    Call it from ``__post_init__`` so that constructing an object validates it, whether it came
    from a config file or from Python. Fields declared without :func:`param` are left alone.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if "doc" not in f.metadata:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = _check_value(key, f, hints[f.name], getattr(obj, f.name))
        object.__setattr__(obj, f.name, value)   # works for frozen dataclasses too


def from_mapping(cls: type[T], given: Mapping[str, Any] | None, prefix: str, **fixed: Any) -> T:
    """Build dataclass ``cls`` from a config mapping: unknown keys are refused (naming the closest
    known key), nested dataclass fields are built recursively, missing keys take their declared
    defaults, and every value is checked against its declaration.

    ``fixed`` are constructor arguments that do not come from the config.
    """
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigError(prefix, given, "a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in fixed}
    check_keys(prefix, given, fields, what=prefix)
    hints = _hints(cls)
    kwargs: dict[str, Any] = dict(fixed)
    for name, f in fields.items():
        if name not in given:
            continue
        v = given[name]
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            v = from_mapping(hint, v, f"{prefix}.{name}")
        kwargs[name] = v
    try:
        obj = cls(**kwargs)
    except ConfigError as err:
        # A __post_init__ that validated with its own prefix: re-key it under this one.
        if prefix and not err.key.startswith(prefix + "."):
            raise ConfigError(f"{prefix}.{err.key}", err.value, err.allowed) from None
        raise
    check_fields(obj, prefix)     # idempotent; covers classes without a validating __post_init__
    return obj


def describe(cls: type) -> list[tuple[str, Any, str, str]]:
    """``(field, default, allowed, doc)`` per declared field of a dataclass, for ``--help`` and
    the README's config table."""
    hints = _hints(cls)
    return [(f.name, field_default(f), allowed_text(f, hints[f.name]), field_doc(f))
            for f in dataclasses.fields(cls) if "doc" in f.metadata]


# --------------------------------------------------------------------------------------------
# Registries of extension points
# --------------------------------------------------------------------------------------------
class Registry(Generic[T]):
    """Built-in implementations of one extension point, by ``name``; user classes by ``_target_``.

    A built-in registers itself: the base class calls :meth:`add` from ``__init_subclass__`` for
    every subclass that sets its own ``name``. ``packages`` are imported (every module in them)
    the first time the registry is read, so a new built-in is one new class in one new module and
    touches no other file.

    Parameters
    ----------
    kind : str
        What the registry holds, in words ("policy", "ranker", ...), for messages.
    base : type
        The base class every implementation must subclass.
    packages : tuple of str
        Dotted names of packages whose modules hold the built-ins.
    """

    def __init__(self, kind: str, base: type | str, packages: tuple[str, ...] = ()):
        # ``base`` may be a dotted path, imported on first use: a registry declared upstream
        # (in sim.config) then does not import the module that defines the base class.
        self.kind, self._base, self.packages = kind, base, packages
        self._classes: dict[str, type] = {}
        self._discovered = False

    @property
    def base(self) -> type:
        if isinstance(self._base, str):
            self._base = import_object(f"{self.kind} registry", self._base)
        return self._base

    def add(self, cls: type) -> type:
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"a built-in {self.kind} needs a class attribute 'name', {cls.__name__} has none")
        other = self._classes.get(name)
        if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"two {self.kind} classes are named {name!r}: {other.__qualname__}, {cls.__qualname__}")
        self._classes[name] = cls
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for package in self.packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(getattr(pkg, "__path__", []), package + "."):
                importlib.import_module(info.name)

    @property
    def classes(self) -> dict[str, type]:
        """Name -> class of every built-in, in registration order."""
        self._discover()
        return dict(self._classes)

    def names(self) -> list[str]:
        return list(self.classes)

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def __iter__(self):
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, name: str) -> type:
        return self.classes[name]

    def resolve(self, spec: Mapping[str, Any], key: str, default: str | None = None) -> tuple[type, dict[str, Any]]:
        """The class a config mapping selects and the remaining keys (its parameters).

        ``spec`` holds ``name`` (a built-in) or ``_target_`` (``package.module.Class``)."""
        if not isinstance(spec, Mapping):
            raise ConfigError(key, spec, f"a mapping with the name of a {self.kind}, e.g. {{name: {self.names()[0]}}}")
        spec = dict(spec)
        target = spec.pop("_target_", None)
        name = spec.pop("name", None)
        if target is not None:
            if isinstance(target, str) and _stdlib_module(target.rpartition(".")[0]):
                raise ConfigError(f"{key}._target_", target,
                                  f"a subclass of {self.base.__module__}.{self.base.__qualname__} "
                                  "(a standard-library module holds none; it is not imported)")
            cls = import_object(f"{key}._target_", target)
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise ConfigError(f"{key}._target_", target,
                                  f"a subclass of {self.base.__module__}.{self.base.__qualname__}")
            return cls, spec
        if name is None:
            name = default
        if name not in self.classes:
            hint = closest_text(name, self.classes) if isinstance(name, str) else ""
            raise ConfigError(f"{key}.name", name, f"one of {', '.join(self.classes)}{hint}, "
                              f"or a _target_ with the import path of your {self.kind} class")
        return self.classes[name], spec


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass(frozen=True)
class Spec:
    """A selected implementation of an extension point with its validated hyperparameters.

    ``params`` is an instance of ``hyperparameters(cls)``; its fields read through the spec
    (``spec.rows`` is ``spec.params.rows``). :meth:`to_dict` gives the config mapping back
    (``name`` for a built-in, ``_target_`` for a user class, then every parameter)."""

    cls: type
    params: Any
    name: str | None = None       # the registry name; None for a class selected by _target_

    def __getattr__(self, attr: str) -> Any:
        # Only parameters read through; dunder/private lookups (pickle, copy) must fail normally.
        if attr.startswith("_") or attr in ("cls", "params", "name"):
            raise AttributeError(attr)
        return getattr(self.params, attr)

    def to_dict(self) -> dict[str, Any]:
        head = {"name": self.name} if self.name is not None else {"_target_": class_path(self.cls)}
        return {**head, **{f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}}


def resolve_spec(registry: "Registry", given: Any, key: str, default: str | None = None) -> Spec:
    """Validate a config mapping that selects an implementation from ``registry`` (by ``name``
    or ``_target_``) and gives its hyperparameters; missing ones take their declared defaults.
    Errors name ``key.<param>`` and what is allowed."""
    cls, rest = registry.resolve(given if given is not None else {}, key, default)
    params = from_mapping(hyperparameters(cls), rest, key)
    target = isinstance(given, Mapping) and given.get("_target_") is not None
    return Spec(cls, params, None if target else cls.__dict__.get("name"))


def import_object(key: str, path: Any) -> Any:
    """The object at dotted import path ``path``; a :class:`ConfigError` naming ``key`` if none."""
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(key, path, "a dotted import path such as my_package.MyClass")
    module, _, attr = path.rpartition(".")
    if not attr.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise ConfigError(key, path, "a dotted import path such as my_package.MyClass")
    if _stdlib_module(module):
        # Importing runs the module: a standard-library module holds no extension class, and
        # some print or start things when imported (``this``, ``antigravity``).
        raise ConfigError(key, path, "the import path of your class (a standard-library module "
                          "holds none; it is not imported)")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(key, path, f"an importable class ({err})") from None


def _stdlib_module(module: str) -> bool:
    import sys

    top = module.split(".")[0]
    return top in getattr(sys, "stdlib_module_names", ())


def hyperparameters(cls: type) -> type:
    """The dataclass that declares a component's hyperparameters (its :func:`param` fields).

    A component class either *is* such a dataclass (its init fields are its hyperparameters) or
    names one in a class attribute ``Params``. Config groups, ``--help`` and validation of every
    extension point (policies, rankers, response models, metrics, estimators) read this."""
    params = getattr(cls, "Params", None)
    if params is not None and dataclasses.is_dataclass(params):
        return params
    if dataclasses.is_dataclass(cls):
        return cls
    raise TypeError(f"{cls.__qualname__} declares no hyperparameters: make it a dataclass of "
                    "sim.schema.param fields or give it a Params dataclass")
