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

import json
import threading

import common
from common import FAILED, OK


def parse_args():
    parser = common.device_parser(__doc__)
    parser.add_argument("--tsl", required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("--event-params", required=True)
    parser.add_argument("--tags", required=True)
    return parser.parse_args()


def main():
    args = parse_args()
    common.log_to_stderr()
    observed = {"connected": False, "event_post_rc": None, "event_post": None,
                "tags_rc": None, "tags_reply": None, "error": None}

    finish = common.finisher("linkkit_thing", observed)

    common.start_watchdog(args.timeout * 4 + 10, finish)
    linkkit = common.import_linkkit(finish)

    connected = threading.Event()
    enabled = threading.Event()
    event_replied = threading.Event()
    tags_replied = threading.Event()

    lk = common.new_linkkit(linkkit, args)

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

    common.disconnect(lk, args.timeout)

    if observed["event_post"]["code"] != 200:
        finish(FAILED, "event post got code %r, want 200" % (observed["event_post"]["code"],))
    if observed["tags_reply"]["code"] != 200:
        finish(FAILED, "tags update got code %r, want 200" % (observed["tags_reply"]["code"],))
    finish(OK)


if __name__ == "__main__":
    main()
