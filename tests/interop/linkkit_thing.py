#!/usr/bin/env python3
"""Interop check: the official Aliyun device SDK (aliyun-iot-linkkit) uses the thing model.

Loads the product's TSL from --tsl (so the SDK knows its events), connects over plain TCP,
triggers one event with `thing_trigger_event` and updates tags with `thing_update_tags`, and
waits for `on_thing_event_post` and `on_thing_device_info_update` to report their codes.

Prints exactly one JSON line on stdout with what it observed and exits 0 only if both replies
carried code 200 within the timeout. Diagnostics (SDK and paho logs) go to stderr.

Arguments: --host, --port, --product-key, --device-name, --device-secret, --tsl FILE,
--event IDENTIFIER, --event-params JSON, --tags JSON (an object of tag key → value), --timeout.
"""

import argparse
import json
import logging
import os
import sys
import threading

OK = 0
FAILED = 1
USAGE = 2
WATCHDOG_EXIT = 3


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--product-key", required=True)
    parser.add_argument("--device-name", required=True)
    parser.add_argument("--device-secret", required=True)
    parser.add_argument("--tsl", required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("--event-params", required=True)
    parser.add_argument("--tags", required=True)
    parser.add_argument("--timeout", type=float, default=20)
    return parser.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    observed = {"connected": False, "event_post_rc": None, "event_post": None,
                "tags_rc": None, "tags_reply": None, "error": None}

    def finish(code, error=None):
        if error is not None:
            observed["error"] = error
            print("linkkit_thing: FAILED: " + error, file=sys.stderr, flush=True)
        sys.stdout.write(json.dumps(observed) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    watchdog = threading.Timer(args.timeout * 4 + 10, lambda: finish(WATCHDOG_EXIT, "watchdog: run exceeded its time bound"))
    watchdog.daemon = True
    watchdog.start()

    try:
        from linkkit import linkkit
    except Exception as e:  # noqa: BLE001
        finish(USAGE, "cannot import the SDK (run `make deps`): %r" % (e,))

    connected = threading.Event()
    enabled = threading.Event()
    event_replied = threading.Event()
    tags_replied = threading.Event()

    lk = linkkit.LinkKit(host_name=args.host, product_key=args.product_key,
                         device_name=args.device_name, device_secret=args.device_secret)
    lk.enable_logger(logging.DEBUG)
    lk.config_mqtt(port=args.port, protocol="MQTTv311", transport="TCP", secure="",
                   keep_alive=60, endpoint=args.host)

    def on_connect(session_flag, rc, userdata):
        if rc == 0:
            observed["connected"] = True
            connected.set()

    def on_thing_enable(userdata):
        enabled.set()

    def on_thing_event_post(event, request_id, code, data, message, userdata):
        observed["event_post"] = {"event": event, "id": request_id, "code": code, "data": data, "message": message}
        event_replied.set()

    def on_thing_device_info_update(request_id, code, data, message, userdata):
        observed["tags_reply"] = {"id": request_id, "code": code, "data": data, "message": message}
        tags_replied.set()

    lk.on_connect = on_connect
    lk.on_thing_enable = on_thing_enable
    lk.on_thing_event_post = on_thing_event_post
    lk.on_thing_device_info_update = on_thing_device_info_update

    rc = lk.thing_setup(args.tsl)
    if rc != 0:
        finish(FAILED, "thing_setup(%s) returned %r" % (args.tsl, rc))
    lk.connect_async()
    if not connected.wait(args.timeout):
        finish(FAILED, "no successful on_connect within %ss" % args.timeout)
    if not enabled.wait(args.timeout):
        finish(FAILED, "on_thing_enable not called within %ss" % args.timeout)

    rc, _ = lk.thing_trigger_event((args.event, json.loads(args.event_params)))
    observed["event_post_rc"] = rc
    if rc != 0:
        finish(FAILED, "thing_trigger_event returned rc=%r" % (rc,))
    if not event_replied.wait(args.timeout):
        finish(FAILED, "on_thing_event_post not called within %ss" % args.timeout)

    rc, _ = lk.thing_update_tags(json.loads(args.tags))
    observed["tags_rc"] = rc
    if rc != 0:
        finish(FAILED, "thing_update_tags returned rc=%r" % (rc,))
    if not tags_replied.wait(args.timeout):
        finish(FAILED, "on_thing_device_info_update not called within %ss" % args.timeout)

    closer = threading.Thread(target=lk.disconnect, daemon=True)
    closer.start()
    closer.join(args.timeout)

    if observed["event_post"]["code"] != 200:
        finish(FAILED, "event post got code %r, want 200" % (observed["event_post"]["code"],))
    if observed["tags_reply"]["code"] != 200:
        finish(FAILED, "tags update got code %r, want 200" % (observed["tags_reply"]["code"],))
    finish(OK)


if __name__ == "__main__":
    main()
