"""Task functions for the Pool tests (importable by workers through the client's sys.path)."""
import os
import sys
import signal
import time


def square(x):
    return x * x


def add(a, b):
    return a + b


def pid(_=None):
    return os.getpid()


def fail(x):
    raise ValueError(f"task failed on {x}")


def die(code):
    os._exit(code)


def nap_die(seconds, code):
    time.sleep(seconds)
    os._exit(code)


def kill_self(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


def nap(seconds):
    time.sleep(seconds)
    return seconds


def big(n):
    return b"x" * n


INIT = []


def init(value):
    INIT.append(value)


def init_seen(_=None):
    return list(INIT)


def fail_on(x):
    if x == 3:
        raise ValueError(f"task failed on {x}")
    return x


def slow_pid(_=None):
    time.sleep(0.05)
    return os.getpid()


def identity(x):
    return x


class Counted:
    pass


def unpicklable_result(_=None):
    return lambda: 42


class _BadUnpickle:
    def __reduce__(self):
        return fail, ("unpickling",)


def bad_unpickle(_=None):
    return _BadUnpickle()


def argv(_=None):
    return sys.argv


def bump(ns):
    ns.n += 1


def say(seconds, text):
    time.sleep(seconds)
    print(text, flush=True)
