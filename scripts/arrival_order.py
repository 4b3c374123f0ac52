#!/usr/bin/env python3
"""Measures how often a broker handles a PUBLISH before a SUBSCRIBE that was sent first.

The pattern many users' tests have: client A sends SUBSCRIBE and, without waiting for the
SUBACK, client B publishes on that topic. A broker that handles packets in arrival order
(Mosquitto, one thread) always delivers; one that lets B's packet overtake A's misses it.

    python3 scripts/arrival_order.py [--port 1883] [--rounds 1000] [--qos 0]

Needs paho-mqtt (pip install paho-mqtt). Loopback only.
"""
import argparse
import threading
import time

import paho.mqtt.client as mqtt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--qos", type=int, default=0)
    parser.add_argument("--wait", type=float, default=0.5, help="seconds to wait per round")
    args = parser.parse_args()

    got = {}
    arrived = threading.Condition()

    def on_message(_client, _userdata, message):
        with arrived:
            got[message.topic] = True
            arrived.notify_all()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="arrival-sub")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="arrival-pub")
    sub.on_message = on_message
    for client in (sub, pub):
        client.connect(args.host, args.port, keepalive=60)
        client.loop_start()
    time.sleep(0.5)

    missed = 0
    for i in range(args.rounds):
        topic = f"arrival/{i}"
        sub.subscribe(topic, qos=args.qos)  # no wait for SUBACK
        pub.publish(topic, b"x", qos=args.qos)
        deadline = time.monotonic() + args.wait
        with arrived:
            while topic not in got and time.monotonic() < deadline:
                arrived.wait(deadline - time.monotonic())
        if topic not in got:
            missed += 1
        sub.unsubscribe(topic)
    for client in (sub, pub):
        client.loop_stop()
        client.disconnect()
    print(f"{missed} of {args.rounds} publishes overtook the SUBSCRIBE sent before them "
          f"(QoS {args.qos}, {args.host}:{args.port})")


if __name__ == "__main__":
    main()
