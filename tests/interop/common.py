"""Shared by the interop scripts: exit codes, the device arguments, the one JSON line a run
prints when it finishes, the watchdog that bounds a run, and connecting, holding and
disconnecting the SDK's `LinkKit`.

The scripts import it as `common`: Python puts a script's own folder first on `sys.path`, so
`python tests/interop/x.py` finds it from any working directory.
"""

import argparse
import json
import logging
import os
import sys
import threading

# Exit codes.
OK = 0
FAILED = 1
USAGE = 2
# A hard upper bound: whatever the SDK's threads do, the process ends.
WATCHDOG_EXIT = 3


def device_parser(doc):
    """An argument parser with the device's connection arguments and --timeout."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--product-key", required=True)
    parser.add_argument("--device-name", required=True)
    parser.add_argument("--device-secret", required=True)
    parser.add_argument("--timeout", type=float, default=20)
    return parser


def log_to_stderr():
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def finisher(name, observed):
    """`finish(code, error=None)`: prints `observed` as one JSON line and ends the process."""

    def finish(code, error=None):
        if error is not None:
            observed["error"] = error
            print(name + ": FAILED: " + error, file=sys.stderr, flush=True)
        sys.stdout.write(json.dumps(observed) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        # The SDK's worker threads are daemons, but do not let any of them delay the exit.
        os._exit(code)

    return finish


def start_watchdog(seconds, finish):
    """Ends the run with WATCHDOG_EXIT after `seconds`, whatever it is doing."""
    watchdog = threading.Timer(seconds, lambda: finish(WATCHDOG_EXIT, "watchdog: run exceeded its time bound"))
    watchdog.daemon = True
    watchdog.start()


def import_linkkit(finish):
    """The SDK's `linkkit` module; a missing SDK ends the run with USAGE."""
    try:
        from linkkit import linkkit
    except Exception as e:  # noqa: BLE001
        finish(USAGE, "cannot import the SDK (run `make deps`): %r" % (e,))
    return linkkit


def new_linkkit(linkkit, args):
    """A `LinkKit` for the device in `args`, logging to stderr, set up for plain TCP."""
    lk = linkkit.LinkKit(host_name=args.host, product_key=args.product_key,
                         device_name=args.device_name, device_secret=args.device_secret)
    lk.enable_logger(logging.DEBUG)
    # Plain TCP ("" = no TLS → the SDK signs in with securemode=3); `endpoint` overrides the
    # "{pk}.iot-as-mqtt.{region}.aliyuncs.com" host the SDK would otherwise derive.
    lk.config_mqtt(port=args.port, protocol="MQTTv311", transport="TCP", secure="",
                   keep_alive=60, endpoint=args.host)
    return lk


def hold(timeout):
    """Stays until the caller closes stdin (or writes a line), at most `timeout` seconds."""
    released = threading.Event()

    def wait_stdin():
        try:
            sys.stdin.readline()
        finally:
            released.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    released.wait(timeout)


def disconnect(lk, timeout):
    """Calls `lk.disconnect()`, which blocks until the SDK's loop thread ends, for at most
    `timeout` seconds; returns its thread (alive if it has not returned)."""
    closer = threading.Thread(target=lk.disconnect, daemon=True)
    closer.start()
    closer.join(timeout)
    return closer
