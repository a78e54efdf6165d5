#!/usr/bin/env python3
"""Interop check: the unmodified official Aliyun device SDK (aliyun-iot-linkkit) against Tether.

Connects with `LinkKit` over plain TCP (securemode=3), enables the thing model, posts one
property with `thing_post_property` and waits for `on_thing_prop_post` to report code 200.

Prints exactly one JSON line on stdout with what it observed, e.g.
    {"connected": true, "connect_rc": 0, "prop_post_code": 200, ...}
and exits 0 only if the property post reply carried code 200 within the timeout. Diagnostics
(SDK and paho logs) go to stderr.

Arguments (each defaults to an environment variable):
    --host           TETHER_MQTT_HOST   (default 127.0.0.1)
    --port           TETHER_MQTT_PORT   (default 1883)
    --product-key    TETHER_PRODUCT_KEY
    --device-name    TETHER_DEVICE_NAME
    --device-secret  TETHER_DEVICE_SECRET
    --timeout        seconds to wait for each step (default 20)
    --hold           after the reply, stay connected until stdin is closed or a line is read
                     (bounded by --timeout), so a caller can observe the device ONLINE.
"""

import argparse
import os
import threading

import common
from common import FAILED, OK, USAGE


def parse_args():
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=env("TETHER_MQTT_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("TETHER_MQTT_PORT", "1883")))
    parser.add_argument("--product-key", default=env("TETHER_PRODUCT_KEY"))
    parser.add_argument("--device-name", default=env("TETHER_DEVICE_NAME"))
    parser.add_argument("--device-secret", default=env("TETHER_DEVICE_SECRET"))
    parser.add_argument("--timeout", type=float, default=float(env("TETHER_INTEROP_TIMEOUT", "20")))
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    missing = [name for name in ("product_key", "device_name", "device_secret") if not getattr(args, name)]
    if missing:
        parser.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    return args


def main():
    args = parse_args()
    common.log_to_stderr()
    observed = {
        "sdk": None,
        "paho": None,
        "connected": False,
        "connect_rc": None,
        "thing_enabled": False,
        "prop_post_rc": None,
        "prop_post_request_id": None,
        "prop_post_code": None,
        "prop_post_reply": None,
        "disconnected": False,
        "error": None,
    }

    finish = common.finisher("linkkit_property_post", observed)
    # Whole-run bound: connect + post + hold + disconnect, with margin.
    common.start_watchdog(args.timeout * 4 + 10, finish)

    try:
        from importlib.metadata import version
        observed["sdk"] = version("aliyun-iot-linkkit")
        observed["paho"] = version("paho-mqtt")
    except Exception as e:  # noqa: BLE001
        finish(USAGE, "cannot import the SDK (run `make deps`): %r" % (e,))
    linkkit = common.import_linkkit(finish)

    connected = threading.Event()
    enabled = threading.Event()
    replied = threading.Event()
    disconnected = threading.Event()

    lk = common.new_linkkit(linkkit, args)

    def on_connect(session_flag, rc, userdata):
        observed["connect_rc"] = rc
        if rc == 0:
            observed["connected"] = True
            connected.set()

    def on_thing_enable(userdata):
        observed["thing_enabled"] = True
        enabled.set()

    def on_thing_prop_post(request_id, code, data, message, userdata):
        observed["prop_post_code"] = code
        observed["prop_post_reply"] = {"id": request_id, "code": code, "data": data, "message": message}
        replied.set()

    def on_disconnect(rc, userdata):
        observed["disconnected"] = True
        disconnected.set()

    lk.on_connect = on_connect
    lk.on_thing_enable = on_thing_enable
    lk.on_thing_prop_post = on_thing_prop_post
    lk.on_disconnect = on_disconnect

    # No TSL file: the thing model is enabled for property post without local validation.
    rc = lk.thing_setup()
    if rc != 0:
        finish(FAILED, "thing_setup() returned %r" % (rc,))

    lk.connect_async()
    if not connected.wait(args.timeout):
        finish(FAILED, "no successful on_connect within %ss (last rc: %r)" % (args.timeout, observed["connect_rc"]))
    # The SDK enables the thing model right after calling on_connect, on the same thread.
    if not enabled.wait(args.timeout):
        finish(FAILED, "on_thing_enable not called within %ss" % args.timeout)

    rc, request_id = lk.thing_post_property({"Power": 1})
    observed["prop_post_rc"] = rc
    observed["prop_post_request_id"] = request_id
    if rc != 0:
        finish(FAILED, "thing_post_property returned rc=%r" % (rc,))

    if not replied.wait(args.timeout):
        finish(FAILED, "on_thing_prop_post not called within %ss" % args.timeout)

    if args.hold:
        common.hold(args.timeout)

    closer = common.disconnect(lk, args.timeout)
    disconnected.wait(min(args.timeout, 5))
    if closer.is_alive():
        finish(FAILED, "disconnect() did not return within %ss" % args.timeout)

    if observed["prop_post_code"] != 200:
        finish(FAILED, "on_thing_prop_post got code %r, want 200" % (observed["prop_post_code"],))
    finish(OK)


if __name__ == "__main__":
    main()
