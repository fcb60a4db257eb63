"""Ray Data's map actors get their constructor arguments by value (inlined in the actor's creation task).

Ray Data (the pinned 2.60) creates every map actor (``MapWorker(...)``) with two
arguments it has put in the object store: the ``DataContext`` and the
``MapTransformer`` (the UDF class and its constructor arguments), as
``ray.put`` references. Ray core logs one ``E ... core_worker.cc: Actor with class
name: 'MapWorker(...)' ... has constructor arguments in the object store and
max_restarts > 0`` per actor for that (ray-project/ray#57733, open), because such an
actor's restart fails if those objects are lost (ray-project/ray#53727: creation
arguments in the object store have no lineage). Our actors restart on purpose
(``executors.CRASH_RETRIES``: a video that kills its worker is retried, then recorded
``WorkerLost``).

Both objects are small (a few kB: a config, a model spec string, a class
reference). Passed by value, Ray inlines them in the actor's creation task spec
(below ``max_direct_call_object_size``, 100 kB by default, Ray's documented rule for
inlined arguments), which the GCS keeps for restarts: nothing in the object store
to lose, so restarts keep working (better than with the references), and the error
line is gone. :func:`install` wraps ``ActorPoolMapOperator._start_actor`` to do
that; an argument that pickles larger than the limit stays a reference (and Ray
logs its line, as before). If the private names it relies on are missing (another
Ray), it changes nothing.
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

_ARGS = ("_data_context_ref", "_map_transformer_ref")  # cached properties read by _start_actor
_SOURCES = {"_data_context_ref": "data_context", "_map_transformer_ref": "_map_transformer"}
_INLINE_OK = "_cliper_inline_ok"  # per operator: which of _ARGS are small enough to pass by value
_installed = False


def _limit() -> int:
    try:
        import ray

        return int(ray._config.max_direct_call_object_size())
    except Exception:  # noqa: BLE001 - Ray's documented default
        return 100 * 1024


def _small_enough(obj) -> bool:
    from ray import cloudpickle

    try:
        return len(cloudpickle.dumps(obj)) < _limit() * 0.9  # headroom for Ray's own framing
    except Exception:  # noqa: BLE001 - unpicklable here: leave it to Ray as before
        return False


def install() -> bool:
    """Make Ray Data pass its map actors' constructor arguments by value when small (idempotent).

    Returns whether the wrapper is in place.
    """
    global _installed
    if _installed:
        return True
    try:
        from ray.data._internal.execution.operators.actor_pool_map_operator import ActorPoolMapOperator
    except ImportError:
        return False
    _installed = wrap(ActorPoolMapOperator)
    return _installed


def wrap(operator_class: type) -> bool:
    """Wrap ``operator_class._start_actor`` so that, while it runs, the operator's ``_data_context_ref`` and
    ``_map_transformer_ref`` are the objects themselves (each only if it pickles small). False if the names are missing."""
    original = getattr(operator_class, "_start_actor", None)
    if original is None or not all(hasattr(operator_class, a) for a in _ARGS):
        return False

    @functools.wraps(original)
    def _start_actor(self, *args, **kwargs):
        inline = self.__dict__.get(_INLINE_OK)
        if inline is None:
            inline = tuple(a for a in _ARGS if _small_enough(getattr(self, _SOURCES[a], None)))
            self.__dict__[_INLINE_OK] = inline
        missing = object()
        saved = {a: self.__dict__.get(a, missing) for a in inline}
        for a in inline:  # a cached property reads the instance dict first: the value, not a reference
            self.__dict__[a] = getattr(self, _SOURCES[a])
        try:
            return original(self, *args, **kwargs)
        finally:
            for a, v in saved.items():
                if v is missing:
                    self.__dict__.pop(a, None)
                else:
                    self.__dict__[a] = v

    operator_class._start_actor = _start_actor
    return True


__all__ = ["install", "wrap"]
