"""Small pieces the evaluation harnesses (colocation_experiment.py, scale_run.py) share: a
timestamped progress line on stderr, and a free loopback port for a server they start."""

import socket
import sys
import time


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
