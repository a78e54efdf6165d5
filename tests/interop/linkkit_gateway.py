#!/usr/bin/env python3
"""Interop check: the official Aliyun device SDK (aliyun-iot-linkkit) as a gateway.

Connects a gateway device over plain TCP, attaches one sub-device with the SDK's gateway API
(`gateway_add_subdev_topo`: `thing/topo/add`, signed with the sub-device's secret), brings it
online (`gateway_login_subdev`: `/ext/session/.../combine/batch_login`) and posts a property on
the sub-device's own topic through the gateway's connection (`publish_topic`; the reply arrives
through `on_topic_message`). With --hold it then stays connected until stdin closes, so a
caller can see the sub-device ONLINE; then it logs the sub-device out
(`gateway_logout_subdev`: `combine/batch_logout`) and disconnects.

Prints exactly one JSON line on stdout with what it observed and exits 0 only if the topo add,
the login, the sub-device's property post and the logout were all answered with code 200
within the timeout. Diagnostics (SDK and paho logs) go to stderr.

Arguments: --host, --port, --product-key, --device-name, --device-secret (the gateway),
--sub-product-key, --sub-device-name, --sub-device-secret, --timeout, --hold.
"""

import json
import threading

import common
from common import FAILED, OK


def parse_args():
    parser = common.device_parser(__doc__)
    parser.add_argument("--sub-product-key", required=True)
    parser.add_argument("--sub-device-name", required=True)
    parser.add_argument("--sub-device-secret", required=True)
    parser.add_argument("--hold", action="store_true")
    return parser.parse_args()


def main():
    args = parse_args()
    common.log_to_stderr()
    observed = {"connected": False, "topo_add": None, "login": None, "sub_post_reply": None,
                "logout": None, "error": None}

    finish = common.finisher("linkkit_gateway", observed)

    common.start_watchdog(args.timeout * 6 + 10, finish)
    linkkit = common.import_linkkit(finish)

    connected = threading.Event()
    topo_added = threading.Event()
    logged_in = threading.Event()
    posted = threading.Event()
    logged_out = threading.Event()
    sub = [args.sub_product_key, args.sub_device_name, args.sub_device_secret]
    sub_post = "/sys/%s/%s/thing/event/property/post" % (args.sub_product_key, args.sub_device_name)

    lk = common.new_linkkit(linkkit, args)

    def reply(request_id, code, data, message):
        return {"id": request_id, "code": code, "data": data, "message": message}

    def on_connect(session_flag, rc, userdata):
        if rc == 0:
            observed["connected"] = True
            connected.set()

    def on_topo_add(request_id, code, data, message, userdata):
        observed["topo_add"] = reply(request_id, code, data, message)
        topo_added.set()

    def on_login(request_id, code, data, message, userdata):
        observed["login"] = reply(request_id, code, data, message)
        logged_in.set()

    def on_logout(request_id, code, data, message, userdata):
        observed["logout"] = reply(request_id, code, data, message)
        logged_out.set()

    def on_topic_message(topic, payload, qos, userdata):
        if topic == sub_post + "_reply":
            observed["sub_post_reply"] = json.loads(payload)
            posted.set()

    lk.on_connect = on_connect
    lk.on_gateway_add_subdev_topo_reply = on_topo_add
    lk.on_gateway_login_subdev_reply = on_login
    lk.on_gateway_logout_subdev_reply = on_logout
    lk.on_topic_message = on_topic_message

    def step(name, call, event):
        rc, _request_id = call()
        if rc != 0:
            finish(FAILED, "%s returned rc=%r" % (name, rc))
        if not event.wait(args.timeout):
            finish(FAILED, "no reply to %s within %ss" % (name, args.timeout))
        answer = observed.get(name)
        if answer is not None and answer.get("code") != 200:
            finish(FAILED, "%s answered %r" % (name, answer))

    lk.connect_async()
    if not connected.wait(args.timeout):
        finish(FAILED, "no successful on_connect within %ss" % args.timeout)

    step("topo_add", lambda: lk.gateway_add_subdev_topo([sub]), topo_added)
    step("login", lambda: lk.gateway_login_subdev([sub]), logged_in)
    post = json.dumps({"id": "77", "version": "1.0", "params": {"Temp": 21}, "method": "thing.event.property.post"})
    step("sub_post_reply", lambda: (lk.publish_topic(sub_post, post, 1)[0], None), posted)

    if args.hold:
        common.hold(args.timeout)

    step("logout", lambda: lk.gateway_logout_subdev([sub[:2]]), logged_out)

    closer = common.disconnect(lk, args.timeout)
    if closer.is_alive():
        finish(FAILED, "disconnect() did not return within %ss" % args.timeout)
    finish(OK)


if __name__ == "__main__":
    main()
