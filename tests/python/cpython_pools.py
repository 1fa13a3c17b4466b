"""CPython's own tests of multiprocessing.Pool and ProcessPoolExecutor, run on forkserver.Pool
and forkserver.Executor (zygote and exec mode) and, as the control, on CPython's own pools.

The test classes come from the running Python's test package (Debian:
libpython3.11-testsuite); nothing of them is copied here. Only the pool constructor is
swapped. The tests that reach into CPython's internals (a pool's `_pool`, an executor's
`_processes`, ...) or that run a child interpreter importing the pool class by name from
multiprocessing or concurrent.futures are skipped, each with its reason; our own test of the
same behaviour is named in the reason. Run as `python3 -m unittest -v cpython_pools`: one
unittest run, so tests/tally.py counts each test; one skip when the test package is absent.
"""
from __future__ import annotations

import multiprocessing
import os
import unittest

try:
    from test import _test_multiprocessing as tm
    try:  # 3.11: one module; 3.12 and later: a package of modules
        from test import test_concurrent_futures as tcf
        tcf.ExecutorTest  # noqa: B018
        cf_mods = [tcf]
    except (ImportError, AttributeError):
        import importlib
        cf_mods = [importlib.import_module(f"test.test_concurrent_futures.{m}") for m in
                   ("util", "executor", "test_process_pool", "test_shutdown", "test_wait",
                    "test_as_completed", "test_init", "test_deadlock")]
except ImportError as e:
    raise unittest.SkipTest(f"CPython's test package is absent ({e}); "
                            "on Debian: apt-get install libpython3.11-testsuite")

import forkserver


def cf(name):
    for m in cf_mods:
        if hasattr(m, name):
            return getattr(m, name)
    raise AttributeError(name)


INTERNALS = "reads CPython's pool internals"
CHILD = ("runs a child interpreter (-I) that imports the pool class by name from "
         "concurrent.futures or multiprocessing")
# test name -> why it does not run on forkserver's pools
SKIPS = {
    # multiprocessing.Pool
    "test_make_pool": INTERNALS + " (_pool); processes < 1: test_forkserver "
                      "test_constructor_arguments_as_cpython",
    "test_resource_warning": INTERNALS + " (_state)",
    "test_pool_worker_lifetime": INTERNALS + " (_pool, _repopulate_pool); "
                                 "maxtasksperchild: test_maxtasksperchild_and_initializer",
    "test_worker_finalization_via_atexit_handler_of_multiprocessing": CHILD,
    "test_manager_initializer": "a Manager's own initializer, no pool in it",
    # ProcessPoolExecutor
    "test_killed_child": INTERNALS + " (_processes); test_forkserver "
                         "test_executor_broken_after_a_worker_dies",
    "test_processes_terminate": INTERNALS + " (_processes) and a multiprocessing "
                                "Semaphore, which is shared by inheritance only",
    "test_context_manager_shutdown": INTERNALS + " (_processes)",
    "test_del_shutdown": INTERNALS + " (_executor_manager_thread, _processes, _call_queue); "
                         "test_forkserver test_executor_threads_end_at_del",
    "test_shutdown_no_wait": INTERNALS + " (_executor_manager_thread, _processes)",
    "test_saturation": INTERNALS + " (_processes) and a multiprocessing Semaphore",
    "test_idle_process_reuse_one": INTERNALS + " (_processes)",
    "test_idle_process_reuse_multiple": INTERNALS + " (_processes)",
    "test_max_tasks_per_child": INTERNALS + " (_processes); "
                                "test_maxtasksperchild_and_initializer",
    "test_max_tasks_per_child_defaults_to_spawn_context": INTERNALS + " (_mp_context)",
    "test_shutdown_deadlock_pickle": INTERNALS + " (_executor_manager_thread); "
                                     "test_forkserver test_unpicklable_argument_does_not_stall",
    "test_interpreter_shutdown": CHILD + "; test_forkserver test_executor_at_interpreter_exit",
    "test_submit_after_interpreter_shutdown": CHILD + "; test_forkserver "
                                              "test_executor_at_interpreter_exit",
    "test_hang_gh83386": CHILD + " (CPython skips it for its process pool too)",
    # 3.12 and later
    "test_python_finalization_error": "makes CPython's second executor thread (its queue "
                                      "feeder) fail to start; ours has one thread",
}

_daemons: dict = {}


def daemon(mode: str):
    from test_forkserver import Daemon  # not in workers: they have no $FORKSERVERD
    if mode not in _daemons:
        _daemons[mode] = Daemon("--python-preload", "json") if mode == "zygote" else Daemon()
    return _daemons[mode]


def pool_class(mode: str):
    class FSPool(forkserver.Pool):
        def __init__(self, processes=None, initializer=None, initargs=(),
                     maxtasksperchild=None, context=None):
            d = daemon(mode)
            super().__init__(processes, initializer, initargs, maxtasksperchild,
                             mode=mode, socket_path=d.sock, key_file=d.key)
    FSPool.__name__ = FSPool.__qualname__ = f"Pool_{mode}"
    return FSPool


def executor_class(mode: str):
    class FSExecutor(forkserver.Executor):
        def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(),
                     *, max_tasks_per_child=None):
            d = daemon(mode)
            super().__init__(max_workers, initializer, initargs,
                             max_tasks_per_child=max_tasks_per_child, mode=mode,
                             socket_path=d.sock, key_file=d.key)
    FSExecutor.__name__ = FSExecutor.__qualname__ = f"Executor_{mode}"
    return FSExecutor


def skipped(cls):
    for name in dir(cls):
        if name in SKIPS:
            setattr(cls, name, unittest.skip(SKIPS[name])(lambda self: None))
    return cls


def pool_cases(mode: str):
    """The multiprocessing.Pool classes; mode None: CPython's own Pool (the control)."""
    out = []
    bases = [(tm._TestPool, "TestPool"), (tm._TestPoolWorkerErrors, "TestPoolWorkerErrors"),
             (tm._TestPoolWorkerLifetime, "TestPoolWorkerLifetime"),
             (tm.TestInitializers, "TestInitializers")]
    P = pool_class(mode) if mode else multiprocessing.Pool
    for base, name in bases:
        mixins = (tm.ProcessesMixin, unittest.TestCase) if base is not tm.TestInitializers \
            else ()

        def setUp(self, base=base, P=P):
            # these tests call multiprocessing.Pool by that name
            self._saved_pool = multiprocessing.Pool
            multiprocessing.Pool = P
            self.addCleanup(setattr, multiprocessing, "Pool", self._saved_pool)
            base.setUp(self) if hasattr(base, "setUp") else None

        attrs = {"Pool": staticmethod(P), "setUp": setUp}
        cls = type(f"{name}_{mode or 'cpython'}", (base,) + mixins, attrs)
        out.append(skipped(cls) if mode else cls)
    return out


def executor_cases(mode: str):
    out = []
    for mixin in ("ProcessPoolExecutorTest", "ProcessPoolShutdownTest", "WaitTests",
                  "AsCompletedTests", "InitializerMixin", "FailingInitializerMixin",
                  "ExecutorDeadlockTest"):
        if mode:
            class FSMixin(cf("ExecutorMixin")):
                executor_type = executor_class(mode)

                def get_context(self):
                    return multiprocessing.get_context("spawn")
            exe = FSMixin
        else:
            exe = cf("ProcessPoolForkMixin")
        cls = type(f"{mixin}_{mode or 'cpython'}", (cf(mixin), exe, cf("BaseTestCase")), {})
        out.append(skipped(cls) if mode else cls)
    return out


MODES = [None, "zygote", "exec"] if os.environ.get("FS_PYZYGOTE", "1") == "1" \
    else [None, "exec"]
CASES = []
for _mode in MODES:
    for _cls in pool_cases(_mode) + executor_cases(_mode):
        _cls.__module__ = __name__  # workers find the classes' methods by this name
        globals()[_cls.__name__] = _cls
        CASES.append(_cls)


def load_tests(loader, tests, pattern):
    suite = unittest.TestSuite()
    for cls in CASES:  # control, zygote, exec: in that order
        suite.addTests(loader.loadTestsFromTestCase(cls))
    return suite


def setUpModule() -> None:
    multiprocessing.set_start_method("fork", force=True)  # the control, as 3.11's default


def tearDownModule() -> None:
    for d in _daemons.values():
        d.stop()
    _daemons.clear()
