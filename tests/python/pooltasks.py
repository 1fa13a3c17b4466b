"""Task functions for the Pool tests (importable by workers through the client's sys.path)."""
import os
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
